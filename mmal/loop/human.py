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

Box-level queries (``active_learning.box_level``): each task of the batch
carries its question (:func:`~mmal.loop.box_level.plan_query`: the regions
asked, the pseudo-labels to confirm, the ignore regions, recorded in
``batch.json``); a task sent back keeps the question it was asked. Ingest
reads the accepted answers against it
(:func:`mmal.annotation.box_answers.read_answers`), merges them into the
image's earlier entry, writes the cycle's cumulative ``box_labels.json``
(the next cycle trains on it, nothing is written into the dataset) and
records in the cycle's entry what the dataset oracle's cycle records:
``box_queries`` (what people did), ``selected_cost`` and ``box_labels``.
"""
import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..annotation.batch import label_space, read_batch, tasks_of_samples, write_batch
from ..annotation.box_answers import AnswerCounts, read_answers
from ..annotation.ingest import Decision, carry_received, ingest_and_write
from ..annotation.records import Box, Labels, Task
from ..annotation.settings import AnnotationSettings
from ..datasets import Pool
from ..datasets.box_labels import read_box_labels, write_box_labels
from ..utils import ConfigError
from ..utils.dist import on_rank0
from . import box_level
from .box_queries import QueryCost
from .cost import AnnotationCost
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
        self.box_level = box_level.BoxLevelSettings.from_config(settings.box_level)

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
        known = set(previous['labeled'])  # box-level: an image asked again is labeled already
        return previous['labeled'] + [i for i in self.accepted(previous) if i not in known]

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
            before = {p['id']: p['score']
                      for p in previous['selected'] + previous.get('revisited', [])}
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
            extra = dict(requeued=requeued)
            if self.box_level is not None:
                tasks = self._questions(tasks, predictions, previous)
                extra['box_level'] = dataclasses.asdict(self.box_level)
            write_batch(folder, tasks, self.space, self.annotation, strategy=self.strategy,
                        cycle=cycle, extra=extra)
            if requeued and previous is not None:
                carry_received(previous['annotation']['folder'], folder, requeued)
        on_rank0(write_files)  # the others wait for the files
        return dict(folder=str(folder), status='waiting', num_tasks=len(ids))

    def _questions(self, tasks: list[Task], predictions: list, previous: dict | None
                   ) -> list[Task]:
        """Box-level: each task with its question (asked regions, pseudo-labels as the
        prediction, ignore regions), from the model's predictions and what the image's
        earlier answers settled; a task sent back keeps the question it was asked."""
        known = read_box_labels(previous['box_labels']) if (previous or {}).get(
            'box_labels') else {}
        asked_before = {t.task_id: t for t in read_batch(
            previous['annotation']['folder'])[1]} if (previous or {}).get('annotation') else {}
        out = []
        for task, sample in zip(tasks, predictions):
            if task.task_id in asked_before and task.task_id in self.requeued(previous):
                before = asked_before[task.task_id]
                out.append(dataclasses.replace(task, prediction=before.prediction,
                                               asked=before.asked, ignored=before.ignored))
                continue
            out.append(box_question(self.box_level, task, sample, known.get(task.task_id),
                                    self.space.names))
        return out

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
    batch, tasks = read_batch(folder)
    fields = dict(annotation=record)
    if 'box_level' in batch:
        labels_file = folder.parent / box_level.LABELS_FILE
        before = labels_file.read_text() if labels_file.exists() else None
        fields.update(box_level_labels(state, c, batch, tasks, decision, folder.parent))
        changed = [labels_file] if labels_file.read_text() != before else []
    if any(entry.get(key) != value for key, value in fields.items()):
        entry.update(fields)
        state.save()
    return c, decision, changed


def box_question(settings: box_level.BoxLevelSettings, task: Task, sample, known: dict | None,
                 names) -> Task:
    """A box-level task with its question (:func:`~mmal.loop.box_level.plan_query`): the
    asked regions, the pseudo-labels as the prediction and the ignore regions, from the
    model's prediction ``sample`` (an mmdet data sample) and ``known``, what the image's
    earlier answers settled (its box-labels entry, or None). The experiment's batches and
    ``tools/al_query.py``'s ask alike."""
    instances = sample.pred_instances
    prediction = {key: _array(getattr(instances, key)) for key in ('bboxes', 'scores', 'labels')}
    found, split = box_level.plan_query(settings, prediction, known)

    def boxes(indices) -> tuple[Box, ...]:
        return tuple(Box(names[int(found.labels[i])], *(float(v) for v in found.boxes[i]),
                         score=float(found.confidences[i])) for i in indices)
    return dataclasses.replace(task, prediction=Labels(task.task_id, 'model',
                                                       boxes=boxes(split.pseudo)),
                               asked=boxes(split.asked), ignored=boxes(split.ignored))


def answered_entries(batch: dict, tasks: list[Task], decision: Decision, known: dict
                     ) -> tuple[dict[str, dict], AnswerCounts]:
    """Each accepted task's box-labels entry, and what people did.

    The answers are read against the task's question
    (:func:`~mmal.annotation.box_answers.read_answers`, the batch's
    ``box_level`` settings) and merged into ``known[task id]``, the image's
    entry when it was asked (:func:`~mmal.loop.box_level.merge_entry`).
    """
    settings = batch['box_level']
    names = batch['space']['names']
    entries, counts = {}, AnswerCounts()
    for task in tasks:
        if task.task_id not in decision.accepted:
            continue
        new, done = read_answers(decision.accepted[task.task_id].labels.boxes, task, names,
                                 oracle_iou=settings['oracle_iou'],
                                 duplicate_iou=settings['duplicate_iou'])
        old = known.get(task.task_id)
        entries[task.task_id] = new if old is None else box_level.merge_entry(
            old, new, settings['duplicate_iou'])
        counts += done
    return entries, counts


def box_level_labels(state: ExperimentState, c: int, batch: dict, tasks: list[Task],
                     decision: Decision, cycle_dir: Path) -> dict:
    """Cycle ``c``'s box-labels file from the accepted answers; what the cycle records.

    The file is the previous cycle's entries with each accepted image's answers
    merged in (:func:`~mmal.loop.box_level.merge_entry` where it was asked before),
    written whole from them at every ingest, so an ingest repeated, or one that takes
    an acceptance back, leaves the file as the decision says.
    """
    previous = state.cycle(c - 1) if c else None
    entries = read_box_labels(previous['box_labels']) if (previous or {}).get(
        'box_labels') else {}
    answered, counts = answered_entries(batch, tasks, decision, entries)
    entries.update(answered)
    path = cycle_dir / box_level.LABELS_FILE
    write_box_labels(path, entries)
    cost = AnnotationCost.from_config(state.data['settings'].get('cost', 'images'))
    images = len([t for t in tasks if t.task_id in decision.accepted])
    spent = box_level.query_cost_in_units(cost, QueryCost(boxes_drawn=counts.boxes_drawn,
                                                          verifications=counts.verifications))
    # query_cost_in_units prices one image; the overhead is per image answered.
    spent.update(images=float(images), seconds=spent['seconds'] + cost.per_image * (images - 1))
    return dict(box_queries=counts.record(), box_labels=str(path),
                selected_cost={unit: round(v, 3) for unit, v in spent.items()})


def _array(value) -> np.ndarray:
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    return np.asarray(value)
