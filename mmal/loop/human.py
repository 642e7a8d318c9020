"""People as the oracle of an experiment (``active_learning.oracle='human'``).

After a selection, the batch (the selected samples, plus those a previous
batch could not settle) is written for labeling tools with the model's
predictions, and the run stops. ``tools/al_ingest.py`` reads the tools'
exports, writes the accepted labels into the dataset and records in the
cycle's entry which samples were accepted and which go back; ``al_train.py
--resume`` then trains the next cycle on the labeled set grown by the
accepted ones.

A cycle's ``annotation`` entry: ``folder`` (the batch), ``status``
(``'waiting'`` until an ingest, then ``'ingested'``), and after an ingest
``accepted`` (ids), ``requeued`` (``{id: reason}``), ``agreement``.
"""
from collections.abc import Callable
from pathlib import Path

from ..annotation.batch import label_space, tasks_of_samples, write_batch
from ..annotation.ingest import Decision, carry_received, ingest_and_write
from ..annotation.settings import AnnotationSettings
from ..datasets import Pool
from ..utils import ConfigError
from ..utils.dist import on_rank0
from .settings import ActiveLearningSettings
from .state import ExperimentState

BATCH_FOLDER = 'annotation'


class HumanOracle:
    """Writes a cycle's batch for people and reads back what they settled.

    Answers the experiment as :class:`~mmal.loop.oracle.DatasetOracle` does
    (see :mod:`mmal.loop.oracle`).

    Args:
        cfg (Config): The experiment's config.
        settings (ActiveLearningSettings): The experiment's settings
            (the plan, the strategy's name, ``annotation``).
        pool (Pool): The pool (a dataset with unlabeled samples).
        task (str): ``'detection'`` or ``'pose'``.
    """

    #: People have not labeled the candidates: no ranking evaluation.
    knows_labels = False

    def __init__(self, cfg, settings: ActiveLearningSettings, pool: Pool, task: str) -> None:
        self.cfg = cfg
        self.plan = settings
        self.pool = pool
        self.annotation = AnnotationSettings.from_dict(settings.annotation)
        self.space = label_space(cfg, task)
        self.strategy = settings.strategy['type']

    @staticmethod
    def check_config(strategy) -> None:
        if getattr(strategy, 'needs_labels', False):
            raise ConfigError(f"{type(strategy).__name__} reads the candidates' labels, which "
                              "people have not given yet: it runs only with oracle='dataset'")

    @property
    def initial_description(self) -> str:
        return f'{sum(self.pool.has_labels)} labeled on disk'

    def check_plan(self, recorded: ExperimentState | None) -> None:
        """Refuse a plan the pool cannot hold, counting from cycle 0's labels.

        Labels on disk grow with every ingest: a resumed run (``recorded``)
        counts what cycle 0 started with, as the first run did.
        """
        start = recorded.cycle(0) if recorded is not None else None
        self.plan.check_plan(len(self.pool), labeled_on_disk=(
            start['num_labeled'] if start else sum(self.pool.has_labels)))

    def labeled_ids(self, c: int, state: ExperimentState) -> list[str]:
        """Cycle ``c``'s labeled set: what is labeled on disk, then grown by what people
        accepted."""
        if c == 0:
            return self.initial_labeled()
        previous = state.cycle(c - 1)
        return previous['labeled'] + self.accepted(previous)

    def initial_labeled(self) -> list[str]:
        """Cycle 0's labeled set: the samples labeled on disk."""
        return [i for i, labeled in zip(self.pool.ids, self.pool.has_labels) if labeled]

    @staticmethod
    def accepted(entry: dict) -> list[str]:
        return list(entry.get('annotation', {}).get('accepted', []))

    @staticmethod
    def requeued(entry: dict | None) -> list[str]:
        """What people could not settle in ``entry``'s batch: the next batch's first tasks."""
        return list((entry or {}).get('annotation', {}).get('requeued', {}))

    @staticmethod
    def waiting(entry: dict) -> bool:
        return entry.get('annotation', {}).get('status') == 'waiting'

    def ask(self, c: int, picked: list[dict], previous: dict | None, cycle_dir: Path,
            predict: Callable[[list[str]], list | None]) -> tuple[list[dict], dict]:
        """Write the batch of the requeued samples and ``picked``; what the cycle records.

        The requeued samples (see :meth:`requeued`) go first, with the score
        they were picked with. Call it on every rank: ``predict(ids)`` (the
        model's predictions on rank 0) is a scoring pass on every rank, the
        files are written on rank 0.

        Returns:
            The picks to record (requeued ones flagged) and the cycle's
            ``annotation`` field.
        """
        requeued = self.requeued(previous)
        if requeued:
            before = {p['id']: p['score'] for p in previous['selected']}
            picked = [dict(id=i, score=before[i], requeued=True) for i in requeued] + picked
        annotation = self.write(picked, cycle_dir, c, predict, previous=previous)
        return picked, dict(annotation=annotation)

    def write(self, picked: list[dict], cycle_dir: Path, cycle: int,
              predict: Callable[[list[str]], list | None],
              previous: dict | None = None) -> dict:
        """Write the batch of ``picked`` (``{id, score}``) and return the cycle's entry.

        ``predict(ids)`` gives the model's predictions of those samples on
        rank 0 (a scoring pass on every rank; None elsewhere). Requeued
        samples keep what ``previous`` (the last cycle's entry) received.
        """
        ids = [p['id'] for p in picked]
        predictions = predict(ids)
        folder = cycle_dir / BATCH_FOLDER
        requeued = [p['id'] for p in picked if p.get('requeued')]

        def write_files() -> None:
            tasks = tasks_of_samples(self.cfg.train_dataloader.dataset, ids,
                                     [p['score'] for p in picked], predictions, self.space,
                                     self.annotation)
            write_batch(folder, tasks, self.space, self.annotation, strategy=self.strategy,
                        cycle=cycle, extra=dict(requeued=requeued))
            if requeued and previous is not None:
                carry_received(previous['annotation']['folder'], folder, requeued)
        on_rank0(write_files)  # the others wait for the files
        return dict(folder=str(folder), status='waiting', num_tasks=len(ids))

    def waiting_message(self, c: int, entry: dict, work_dir: Path, config: str) -> str:
        folder = entry['annotation']['folder']
        return (f'cycle {c}: {entry["annotation"]["num_tasks"]} samples wait for labels in '
                f'{folder} ({", ".join(self.annotation.formats)} files, batch.csv). Label them, '
                f'then run `python tools/al_ingest.py {config} EXPORT... --work-dir {work_dir}` '
                f'and `python tools/al_train.py {config} --work-dir {work_dir} --oracle human '
                '--resume`')


def ingest_into_experiment(cfg, work_dir: str | Path, exports: list, *, fmt: str = 'auto',
                           on_error: str = 'skip') -> tuple[int, Decision, list[Path]]:
    """Ingest exports into the batch the experiment in ``work_dir`` waits for.

    Writes the accepted labels into the training dataset's files and
    records the decision in the cycle's entry of ``al_state.json``.

    Returns:
        The cycle, the decision, and the dataset files that changed.

    Raises:
        ConfigError: When no batch waits (naming the work dir and why).
    """
    state = ExperimentState.load(work_dir)
    if state is None:
        raise ConfigError(f'{work_dir} holds no experiment (no al_state.json): give the '
                          '--work-dir of an `al_train.py --oracle human` run')
    waiting = [e for e in state.cycles if 'annotation' in e]
    if not waiting:
        raise ConfigError(f'no batch for people in {state.path}: the experiment has not '
                          'selected one yet (run al_train.py --oracle human first)')
    entry = waiting[-1]
    c = entry['cycle']
    if state.cycle(c + 1) is not None:
        raise ConfigError(f"cycle {c}'s batch was already used: cycle {c + 1} started with its "
                          'labels. Ingest the next batch once al_train.py has written it')
    folder = Path(entry['annotation']['folder'])
    # Decide as the experiment was configured, whatever the config given now says.
    decision, changed = ingest_and_write(cfg, folder, exports, fmt=fmt, on_error=on_error,
                                         annotation=state.data['settings'].get('annotation'))
    record = dict(entry['annotation'], status='ingested', accepted=sorted(decision.accepted),
                  requeued=decision.requeued)
    if record != entry['annotation']:
        entry['annotation'] = record
        state.save()
    return c, decision, changed
