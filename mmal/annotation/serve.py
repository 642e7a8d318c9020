"""Keep people labeling the most informative images while the model catches up.

:class:`AnnotationServer` is one loop, a :meth:`~AnnotationServer.step` at a
time: ingest what people finished (written into the dataset, settled in
the queue), adopt a retrained model's order of the pool when its
background job is done, push the next images when fewer than
``low_water`` are open, and start a retraining job in the background once
``retrain_every`` new labels arrived. All state is in the work dir
(``queue.json``, the growing ``batch/``, ``models/gen_NN/``), so a
restarted server goes on. :meth:`~AnnotationServer.stream` is
stream-based selective sampling on top of the same model.
"""
import json
import subprocess
import sys
from pathlib import Path

from ..utils import ConfigError
from ..utils.atomic import atomic_write_text
from .batch import append_to_batch
from .queue import InformativenessQueue, StreamThreshold

ORDER_FILE = 'order.json'
SERVE_CONFIG = 'serve_config.py'


class AnnotationServer:
    """The queue, a labeling project, and retraining in the background.

    Args:
        cfg (Config): The experiment config (its training dataset holds the
            unlabeled pool: :mod:`mmal.datasets.partial`).
        work_dir (Path): The server's folder.
        project: A :mod:`.projects` project.
        checkpoint (str): The model that orders the pool at the start.
        push_size (int): Images pushed at a time.
        low_water (int): Push when fewer images than this are open.
        retrain_every (int): New labels that start a retraining.
    """

    def __init__(self, cfg, work_dir: str | Path, project, checkpoint: str | None = None, *,
                 push_size: int = 10, low_water: int = 5, retrain_every: int = 50) -> None:
        self.cfg, self.work_dir, self.project = cfg, Path(work_dir), project
        self.push_size, self.low_water, self.retrain_every = push_size, low_water, retrain_every
        self.job: subprocess.Popen | None = None
        self.queue = InformativenessQueue.load(self.work_dir)
        if self.queue is None:
            if checkpoint is None:
                raise ConfigError(f'{self.work_dir} has no queue yet: give --checkpoint, the '
                                  'model that orders the pool at the start')
            self.work_dir.mkdir(parents=True, exist_ok=True)
            cfg.dump(str(self.work_dir / SERVE_CONFIG))
            ids, scores = self._scorer(checkpoint).rank()
            self.queue = InformativenessQueue.create(self.work_dir, ids, dict(zip(ids, scores)),
                                                     str(checkpoint))

    @property
    def batch_dir(self) -> Path:
        return self.work_dir / 'batch'

    def step(self) -> dict:
        """One round; what happened (``settled``, ``rescored``, ``pushed``, ``training``)."""
        report = dict(settled=self.ingest(), rescored=self.adopt_retrained())
        report['pushed'] = self.push() if len(self.queue.handed_out) < self.low_water else []
        if self.queue.data['labels_since_training'] >= self.retrain_every and not self.training:
            self.start_retraining()
        report['training'] = self.training
        return report

    def ingest(self) -> int:
        """Read the project's exports into the batch and settle the queue; new labels."""
        exports = self.project.exports(self.work_dir)
        if not exports or not (self.batch_dir / 'batch.json').exists():
            return 0
        from ..loop.human import ingest_and_write
        decision, _ = ingest_and_write(self.cfg, self.batch_dir, exports, on_error='skip')
        for error in decision.errors:
            print(f'skipped: {error}')
        # A tie goes back for one more annotator, once per annotator who joined it.
        seen = self.queue.data.setdefault('unsettled_annotators', {})
        back = [i for i, c in decision.unsettled.items()
                if i in self.queue.handed_out and c.num_annotators > seen.get(i, 0)]
        seen.update({i: decision.unsettled[i].num_annotators for i in back})
        return self.queue.settle(sorted(decision.accepted), back)

    def push(self) -> list[str]:
        ids = self.queue.take(self.push_size)
        if ids:
            scorer = self._scorer(self.queue.data['model'])
            tasks = scorer.tasks(ids, [self.queue.score(i) for i in ids])
            append_to_batch(self.batch_dir, tasks, scorer.space, scorer.settings.strategy['type'])
            self.project.push(tasks, scorer.space, scorer.annotation)
        return ids

    # ------------------------------------------------------------ retraining
    @property
    def training(self) -> bool:
        return self.job is not None and self.job.poll() is None

    def generation_dir(self, generation: int) -> Path:
        return self.work_dir / 'models' / f'gen_{generation:02d}'

    def start_retraining(self) -> None:
        folder = self.generation_dir(self.queue.data['generation'] + 1)
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / 'job.log', 'a')  # noqa: SIM115  (the job's, closed at its end)
        self.job = subprocess.Popen(
            [sys.executable, '-m', 'mmal.annotation.retrain',
             str(self.work_dir / SERVE_CONFIG), str(folder)], stdout=log, stderr=log)

    def wait_for_retraining(self, timeout: float | None = None) -> int | None:
        return None if self.job is None else self.job.wait(timeout)

    def adopt_retrained(self) -> bool:
        """Take the order of a finished retraining job, if one finished."""
        folder = self.generation_dir(self.queue.data['generation'] + 1)
        order_file = folder / ORDER_FILE
        if self.training or not order_file.exists():
            return False
        done = json.loads(order_file.read_text())
        self.queue.rescore(done['ids'], dict(zip(done['ids'], done['scores'])),
                           done['checkpoint'])
        self.job = None
        return True

    # ---------------------------------------------------------------- stream
    def stream(self, images: list[str], rate: float, out_dir: str | Path) -> list[str]:
        """Push the arriving ``images`` whose score passes the pool-calibrated threshold.

        The threshold is the ``1 - rate`` quantile of the current model's
        scores of the unlabeled pool (:class:`StreamThreshold`), so a
        share ``rate`` of arrivals like the pool is sent to people. Needs a
        strategy that scores each image on its own (Learning Loss,
        uncertainty), not a set-wise one (core-set, BADGE).
        """
        threshold = StreamThreshold(list(self.queue.data['scores'].values()), rate)
        out_dir = Path(out_dir)
        list_file = out_dir / 'arrivals.txt'
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(list_file, '\n'.join(map(str, images)) + '\n')
        scorer = self._scorer(self.queue.data['model'], images=str(list_file), out_dir=out_dir)
        ids, scores = scorer.rank()
        wanted = [(i, s) for i, s in zip(ids, scores) if threshold.wants(s)]
        if wanted:
            tasks = scorer.tasks([i for i, _ in wanted], [s for _, s in wanted])
            scorer.write(out_dir, tasks)
            self.project.push(tasks, scorer.space, scorer.annotation)
        record = dict(threshold=threshold.threshold, rate=rate,
                      scores=dict(zip(ids, scores)), labeled=[i for i, _ in wanted])
        atomic_write_text(out_dir / 'stream.json', json.dumps(record, indent=1) + '\n')
        return [i for i, _ in wanted]

    def _scorer(self, checkpoint: str, images: str | None = None,
                out_dir: Path | None = None):
        from .query import CheckpointScorer
        return CheckpointScorer(self.cfg, checkpoint, out_dir or self.work_dir / 'scoring',
                                images=images)
