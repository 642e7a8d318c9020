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
import os
import subprocess
import sys
from pathlib import Path

from ..annotation.batch import append_to_batch
from ..annotation.ingest import ingest_and_write
from ..annotation.records import ExportError
from ..utils import ConfigError
from ..utils.atomic import atomic_write_text
from .query import CheckpointScorer
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
        reopen_after_s (float, optional): Images handed out longer than this
            without labels go back into the queue (skipped or abandoned).
    """

    def __init__(self, cfg, work_dir: str | Path, project, checkpoint: str | None = None, *,
                 push_size: int = 10, low_water: int = 5, retrain_every: int = 50,
                 reopen_after_s: float | None = None) -> None:
        refuse_box_level(cfg)
        self.cfg, self.work_dir, self.project = cfg, Path(work_dir), project
        self.push_size, self.low_water, self.retrain_every = push_size, low_water, retrain_every
        self.reopen_after_s = reopen_after_s
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
        if self.reopen_after_s is not None:
            report['reopened'] = self.queue.overdue(self.reopen_after_s)
            self.queue.release(report['reopened'])
        report['pushed'] = self.push() if len(self.queue.handed_out) < self.low_water else []
        if self.queue.data['labels_since_training'] >= self.retrain_every and not self.training:
            self.start_retraining()
        report['training'] = self.training
        return report

    def ingest(self) -> int:
        """Read the project's exports into the batches and settle the queue; new labels.

        The queue's batch and each stream batch read the same exports (the
        project holds them all). An export that is not one (a half-copied
        file in the inbox) is reported and left out, not fatal.
        """
        exports = self.project.exports(self.work_dir)
        batches = [b for b in [self.batch_dir, *sorted(self.work_dir.glob('stream/*'))]
                   if (b / 'batch.json').exists()]
        accepted, back = [], []
        seen = self.queue.data.setdefault('unsettled_annotators', {})
        for batch in batches:
            while exports:
                try:
                    decision, _ = ingest_and_write(self.cfg, batch, exports, on_error='skip',
                                                   other_batches=True)
                    break
                except ExportError as err:
                    print(f'left out: {err}')
                    exports = [e for e in exports if str(e) != err.path]
            else:
                return 0
            for error in decision.errors:
                print(f'skipped: {error}')
            accepted += decision.accepted
            # A tie goes back for one more annotator, once per annotator who joined it.
            grown = [i for i, c in decision.unsettled.items()
                     if i in self.queue.handed_out and c.num_annotators > seen.get(i, 0)]
            seen.update({i: decision.unsettled[i].num_annotators for i in grown})
            back += grown
        return self.queue.settle(sorted(accepted), back)

    def push(self) -> list[str]:
        ids = self.queue.take(self.push_size)
        if ids:
            try:
                scorer = self._scorer(self.queue.data['model'])
                tasks = scorer.tasks(ids, [self.queue.score(i) for i in ids])
                append_to_batch(self.batch_dir, tasks, scorer.space,
                                scorer.strategy_cfg['type'])
                self.project.push(tasks, scorer.space, scorer.annotation)
            except BaseException:
                self.queue.release(ids)  # not handed to anyone: pushed again next time
                raise
        return ids

    # ------------------------------------------------------------ retraining
    @property
    def training(self) -> bool:
        """A retraining job runs (started by this server, or by one before a restart)."""
        if self.job is not None:
            return self.job.poll() is None
        pid_file = self.generation_dir(self.queue.data['generation'] + 1) / 'job.pid'
        return pid_file.exists() and _alive(int(pid_file.read_text()))

    def generation_dir(self, generation: int) -> Path:
        return self.work_dir / 'models' / f'gen_{generation:02d}'

    def start_retraining(self) -> None:
        folder = self.generation_dir(self.queue.data['generation'] + 1)
        folder.mkdir(parents=True, exist_ok=True)
        self.queue.data['training_on'] = len(self.queue.data['labeled'])
        self.queue.save()
        log = open(folder / 'job.log', 'a')  # noqa: SIM115  (the job's, closed at its end)
        self.job = subprocess.Popen(
            [sys.executable, '-m', 'mmal.service.retrain',
             str(self.work_dir / SERVE_CONFIG), str(folder)], stdout=log, stderr=log)
        atomic_write_text(folder / 'job.pid', str(self.job.pid))

    def wait_for_retraining(self, timeout: float | None = None) -> int | None:
        return None if self.job is None else self.job.wait(timeout)

    def adopt_retrained(self) -> bool:
        """Take the order of a finished retraining job, if one finished."""
        folder = self.generation_dir(self.queue.data['generation'] + 1)
        order_file = folder / ORDER_FILE
        if self.training:
            return False
        if not order_file.exists():
            if self.job is not None and self.job.returncode:
                # Tried again after another retrain_every labels, not at every poll.
                print(f'retraining failed (exit {self.job.returncode}): see {folder}/job.log')
                self.queue.data['labels_since_training'] = 0
                self.queue.save()
            self.job = None
            return False
        done = json.loads(order_file.read_text())
        self.queue.rescore(done['ids'], dict(zip(done['ids'], done['scores'])),
                           done['checkpoint'],
                           trained_on=self.queue.data.get('training_on', 0))
        self.job = None
        return True

    # ---------------------------------------------------------------- stream
    def stream(self, images: list[str], rate: float) -> list[str]:
        """Push the arriving ``images`` whose score passes the pool-calibrated threshold.

        Each call is a batch of its own in ``stream/NNNNN/`` (``stream.json``
        records every score and the threshold), ingested with the queue's.

        The threshold is the ``1 - rate`` quantile of the current model's
        scores of the unlabeled pool (:class:`StreamThreshold`), so a
        share ``rate`` of arrivals like the pool is sent to people. Needs a
        strategy that scores each image on its own (Learning Loss,
        uncertainty), not a set-wise one (core-set, BADGE).
        """
        threshold = StreamThreshold(list(self.queue.data['scores'].values()), rate)
        numbers = [int(p.name) for p in self.work_dir.glob('stream/[0-9]*')]
        out_dir = self.work_dir / 'stream' / f'{max(numbers, default=-1) + 1:05d}'
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
        return CheckpointScorer(self.cfg, checkpoint, out_dir or self.work_dir / 'scoring',
                                images=images)


def refuse_box_level(cfg) -> None:
    """The queue hands out whole images: ``active_learning.box_level`` is refused.

    A box-level question (asked regions, pseudo-labels) is the asking model's view
    of the image and its answers are merged into what the image's earlier answers
    settled; the queue orders the pool once per model, hands images out over hours
    across retrainings and ingests as labels arrive, so its questions would go
    stale and its answers cross.

    Raises:
        ConfigError: Naming the key and the fix.
    """
    if (cfg.get('active_learning') or {}).get('box_level') is not None:
        raise ConfigError(
            'active_learning.box_level: the serving queue hands out whole images (its order '
            'outlives the model that made it, and box-level questions are the asking '
            "model's, merged batch by batch). Ask for boxes with tools/al_query.py and "
            'tools/al_ingest.py --batch, or serve whole images: --cfg-options '
            'active_learning.box_level=None')


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
