"""Which images to label next, outside an experiment: ``tools/al_query.py``.

The candidates are the unlabeled samples of the config's training dataset
(a :mod:`mmal.datasets.partial` dataset), or the images a user names: a
folder or list for detection, an MPII-style JSON of persons (joints
optional) for pose. The labeled set, for strategies that compare with it
(core-set), is what the training dataset has labeled. Scoring and
selection are the experiment's own (a :class:`~mmal.scoring.Scorer` on a
Runner loading the checkpoint, :class:`~mmal.loop.selection.CycleSelection`),
and the batch is written as the experiment writes it for people.

Box-level queries (``active_learning.box_level``, detection) ask regions of
the picked images, as the experiment's box-level batches do
(:func:`mmal.loop.human.box_question`). Their answers live in the pool's
box-labels file, the training dataset's ``box_labels_file``
(:mod:`mmal.datasets.box_labels`): an image it lists is labeled (the next
training trains it on those labels) and, with ``box_level.revisit``, still a
candidate, asked only about what its entry did not settle.
:func:`ingest_query_batch` merges people's answers into that file.
"""
import copy
import dataclasses
import json
import logging
import os.path as osp
from pathlib import Path

import numpy as np
from mmdet.registry import DATASETS
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader
from mmpose.datasets import MpiiDataset
from mmpose.registry import DATASETS as POSE_DATASETS

from ..annotation.batch import label_space, read_batch, tasks_of_samples, write_batch
from ..annotation.ingest import Decision, ingest_and_write
from ..annotation.records import Task
from ..annotation.settings import AnnotationSettings
from ..datasets import build_pool
from ..datasets.box_labels import (
    DATASET_KEY,
    check_entry,
    leaf_labels_file,
    read_box_labels,
    write_box_labels,
)
from ..datasets.dataset_configs import is_leaf_dataset, walk_dataset_configs
from ..datasets.mpii_format import MPII_JOINTS
from ..datasets.pool import sample_infos
from ..loop.box_level import BoxLevelSettings
from ..loop.human import answered_entries, box_question
from ..loop.runner import CycleRunner, phase_config
from ..loop.selection import CycleSelection
from ..models.ignore_regions import ignore_region_settings
from ..models.plain_models import is_wrapped, wrap_plain_model
from ..scoring import Scorer, ScoringSettings
from ..strategies import build_strategy
from ..utils import ConfigError
from ..utils.atomic import atomic_write_text
from ..utils.config import task_of
from ..utils.dist import broadcast_from_rank0, on_rank0


def candidate_dataset(cfg: Config, images: str, out_dir: Path) -> dict:
    """The dataset config of ``--images`` for the config's task."""
    train = cfg.train_dataloader.dataset
    if task_of(cfg) == 'detection':
        classes = (train.get('metainfo') or {}).get('classes')
        return dict(type='UnlabeledImageDataset', ann_file=osp.abspath(images), pipeline=[],
                    **(dict(metainfo=dict(classes=classes)) if classes else {}))
    if not images.endswith('.json'):
        raise ConfigError(f'--images {images}: pose needs the persons to label, as a JSON file: '
                          'a COCO keypoints file (images + person annotations with a bbox; '
                          'keypoints optional) for a COCO pool, else an MPII-style list of '
                          '{"image", "center", "scale"} (joints optional), like MPII\'s test '
                          'annotations')
    records = json.loads(Path(images).read_text())
    leaf = copy.deepcopy(train)
    leaf.pop('indices', None)
    # Image paths in the file are relative to its folder, as a user keeps them.
    leaf.update(data_root='', pipeline=[],
                data_prefix=dict(img=osp.dirname(osp.abspath(images)) + '/'))
    if _reads_mpii(leaf):
        if not isinstance(records, list):
            raise ConfigError(f'--images {images}: the training data is MPII-style, so the '
                              'persons are too: a JSON list of {"image", "center", "scale"}')
        for r in records:  # persons without joints are unlabeled, as mmpose reads them
            r.setdefault('joints', [[-1.0, -1.0]] * len(MPII_JOINTS))
            r.setdefault('joints_vis', [0] * len(MPII_JOINTS))
        persons = out_dir / 'persons.json'
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(persons, json.dumps(records))  # each rank writes the same, whole
        leaf.update(ann_file=str(persons.resolve()))
        return leaf
    if not (isinstance(records, dict) and 'images' in records and 'annotations' in records):
        raise ConfigError(f'--images {images}: the training data is COCO keypoints, so the '
                          'persons are too: a COCO file with "images", "annotations" (a bbox '
                          'per person; keypoints optional) and "categories"')
    leaf.update(ann_file=osp.abspath(images))
    return leaf


def _reads_mpii(leaf: dict) -> bool:
    """Whether a pose dataset config reads MPII-style records (else COCO keypoints)."""
    kind = leaf.get('type')
    cls = kind if isinstance(kind, type) else POSE_DATASETS.get(kind)
    return cls is not None and issubclass(cls, MpiiDataset)


class CheckpointScorer:
    """The experiment's scoring and selection for one checkpoint, outside an experiment.

    Args:
        cfg (Config): The model / experiment config.
        checkpoint (str): The model's weights.
        out_dir (Path): Where the Runners log, and ``--images`` pose persons go.
        images (str, optional): The candidates instead of the training
            dataset's unlabeled samples (see :func:`candidate_dataset`).
        strategy (dict, optional): Instead of ``active_learning.strategy``.
    """

    def __init__(self, cfg: Config, checkpoint: str, out_dir: str | Path, *,
                 images: str | None = None, strategy: dict | None = None,
                 launcher: str = 'none') -> None:
        self.checkpoint, self.out_dir, self.launcher = str(checkpoint), Path(out_dir), launcher
        cfg = copy.deepcopy(cfg)
        section = dict(cfg.get('active_learning') or {})
        self.strategy_cfg = dict(strategy or section.get('strategy') or
                                 dict(type='LearningLossStrategy'))
        self.seed = section.get('seed', 0)
        self.task = task_of(cfg)
        self.box_level = BoxLevelSettings.from_config(section.get('box_level'))
        self.labels_files: list[str] = []
        self.known: dict[str, dict] = {}
        if self.box_level is not None:
            self.labels_files = box_labels_files(cfg, self.task, images)
            # Refused now if the model cannot train ignore regions; said how if its config
            # does not yet (the next training is the user's, on this config).
            settings = ignore_region_settings(cfg.model, self.box_level.ignore_iof_thr)
            if settings:
                print_log('active_learning.box_level: the answers hold ignore regions; train '
                          'on them with these settings in the config, or they train as '
                          'background: ' + '; '.join(settings), logger='current',
                          level=logging.WARNING)
        self.strategy = build_strategy(self.strategy_cfg, self.task)
        if self.strategy.needs_labels:
            raise ConfigError(f"{self.strategy_cfg['type']} reads the candidates' labels; "
                              'choose a strategy that scores unlabeled images')
        self.plain_model = not is_wrapped(cfg.model)
        cfg.model = wrap_plain_model(cfg.model)
        check_checkpoint(self.strategy, self.strategy_cfg['type'], self.checkpoint)
        self.train = cfg.train_dataloader.dataset
        self.candidates_cfg = None
        if images is not None:
            self.candidates_cfg = candidate_dataset(cfg, images, self.out_dir)
            cfg.train_dataloader.dataset = dict(type='ConcatDataset', datasets=[
                self.train, self.candidates_cfg])
        self.cfg = cfg
        self.pool = build_pool(cfg.train_dataloader.dataset)
        first = len(self.pool) - self.pool.leaf_sizes[-1] if images else len(self.pool)
        self.labeled = [p for p in range(first) if self.pool.has_labels[p]]
        # Box-level: an image labeled in part may be asked again, as in the experiment.
        revisit = self.box_level is not None and self.box_level.revisit
        self.candidates = np.array(list(range(first, len(self.pool))) if images else [
            p for p in range(len(self.pool)) if not self.pool.has_labels[p]
            or (revisit and self.pool.box_level[p])], dtype=int)
        self.annotation = AnnotationSettings.from_dict(section.get('annotation'))
        self.space = label_space(cfg, self.task)
        self.scorer = Scorer(cfg, self.pool, ScoringSettings.from_config(cfg, section),
                             self._runner, self.out_dir)
        self.selection = CycleSelection(self.scorer, self.strategy, print, self.out_dir)

    def rank(self, k: int | None = None) -> tuple[list[str], list[float]]:
        """The strategy's ``k`` picks of the candidates (all by default), best first, and scores."""
        k = len(self.candidates) if k is None else k
        if len(self.candidates) < k:
            raise ConfigError(f'--budget {k}: only {len(self.candidates)} candidates')
        order, scores = self.selection.select(self.candidates, self.labeled, k,
                                              np.random.default_rng(self.seed))
        ranked = None if order is None else (
            [self.pool.ids[self.candidates[i]] for i in order], [float(scores[i]) for i in order])
        return broadcast_from_rank0(ranked)

    def tasks(self, ids: list[str], scores: list[float]) -> list[Task]:
        """Tasks of ``ids`` with the model's predictions (on rank 0; [] on the others).

        A scoring pass on every rank: call it on every rank.
        """
        predictions = self.scorer.predictions(ids)
        if predictions is None:
            return []
        tasks = tasks_of_samples(self.cfg.train_dataloader.dataset, ids, scores, predictions,
                                 self.space, self.annotation)
        if self.box_level is None:
            return tasks
        # Each task with its question, from what the image's earlier answers settled.
        known = read_pool_box_labels(self.labels_files)
        self.known = {i: known[i] for i in ids if i in known}
        return [box_question(self.box_level, task, sample, self.known.get(task.task_id),
                             self.space.names) for task, sample in zip(tasks, predictions)]

    def write(self, folder: str | Path, tasks: list[Task], cycle: int | None = None) -> None:
        extra = dict(checkpoint=self.checkpoint, candidates_dataset=_plain(self.candidates_cfg))
        if self.box_level is not None:
            # The entries the questions were asked against: what ingest merges the answers
            # into, so an ingest repeated or taken back rewrites them from the same start.
            extra.update(box_level=dataclasses.asdict(self.box_level),
                         box_labels_files=self.labels_files, box_labels_known=self.known)
        write_batch(folder, tasks, self.space, self.annotation,
                    strategy=self.strategy_cfg['type'], cycle=cycle, extra=extra)

    def _runner(self, phase: str, test_dataloader: dict, test_cfg: dict) -> CycleRunner:
        # The training dataset as configured, without the --images candidates.
        return CycleRunner.from_cfg(phase_config(
            self.cfg, phase, self.out_dir / 'runner', train_dataset=self.train,
            test=(test_dataloader, test_cfg), launcher=self.launcher,
            load_from=self.checkpoint, name=f'query_{phase}'))


#: Strategies that read the loss-prediction module's output.
_MODULE_OUTPUT = 'pred_loss'


def check_checkpoint(strategy, name: str, checkpoint: str) -> None:
    """Refuse a strategy that reads weights the checkpoint does not hold.

    A plain mmdet / mmpose checkpoint loads into the wrapper (its keys go
    under ``task_model``) but leaves the loss-prediction module as
    initialised: ranked by it, the order would be noise, with nothing but a
    "missing keys" warning to say so.

    Raises:
        ConfigError: Naming the strategy, the checkpoint and what to do instead.
    """
    passes = [*strategy.candidate_passes().values(), *strategy.labeled_passes().values()]
    if not any(_MODULE_OUTPUT in p.outputs for p in passes):
        return
    state = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    state = state.get('state_dict', state)
    if not any(k.split('.', 1)[0] == 'loss_prediction' for k in state):
        raise ConfigError(
            f'{name} ranks by the loss-prediction module, and {checkpoint} holds no '
            'loss_prediction.* weights (a plain mmdet / mmpose checkpoint?): the module would '
            'be untrained and its ranking noise. Choose a strategy that reads the model '
            'alone (--strategy EntropyStrategy, MarginStrategy, LeastConfidenceStrategy, '
            'CoreSetStrategy, ...), or train the module first: tools/al_train.py with '
            'load_from= this checkpoint')


def query(cfg: Config, checkpoint: str, budget: int, out_dir: str | Path, *,
          images: str | None = None, strategy: dict | None = None, cycle: int | None = None,
          launcher: str = 'none') -> list[Task]:
    """Score the candidates, write the top ``budget`` as a batch, return its tasks (rank 0)."""
    scorer = CheckpointScorer(cfg, checkpoint, out_dir, images=images, strategy=strategy,
                              launcher=launcher)
    ids, scores = scorer.rank(budget)
    tasks = scorer.tasks(ids, scores)
    # Rank 0 writes; a write that fails (disk full, a bad record) stops every rank.
    on_rank0(lambda: scorer.write(out_dir, tasks, cycle))
    return tasks


def box_labels_files(cfg: Config, task: str, images: str | None) -> list[str]:
    """Box-level queries outside an experiment: the pool's box-labels files (one per leaf
    dataset of the training data), where their answers go.

    Raises:
        ConfigError: For pose, ``--images`` candidates, and a training dataset that
            names no ``box_labels_file`` or cannot read one; naming the key and the fix.
    """
    key = 'active_learning.box_level'
    if task != 'detection':
        raise ConfigError(f'{key} applies to detection (regions of an image); this is a {task} '
                          f'config. Remove {key} to query whole samples')
    if images is not None:
        raise ConfigError(f'{key} with --images: box-level answers go into the training '
                          f"dataset's {DATASET_KEY}, and these images are not in it. Add them "
                          f'to the pool (the training dataset), or query whole images: '
                          f'--cfg-options {key}=None')
    files = []
    for where, leaf in walk_dataset_configs(cfg.train_dataloader.dataset,
                                            'train_dataloader.dataset'):
        if not is_leaf_dataset(leaf):
            continue
        kind = leaf.get('type')
        cls = kind if isinstance(kind, type) else DATASETS.get(kind)
        if not getattr(cls, 'reads_box_labels', False):
            raise ConfigError(
                f"{key}: {where}.type={getattr(kind, '__name__', kind)!r} cannot hold "
                'box-level labels; use PartiallyLabeledVOCDataset or PartiallyLabeledCocoDataset '
                f"with {DATASET_KEY}='box_labels.json' (under data_root): al_ingest writes the "
                'answers there, and training and al_query read them')
        path = leaf_labels_file(leaf)
        if path is None:
            raise ConfigError(
                f"{key}: {where}.{DATASET_KEY} is not set, so people's answers would have no "
                f"home. Set {where}.{DATASET_KEY}='box_labels.json' (a file under data_root, "
                'written by tools/al_ingest.py; the dataset reads it, so the next training '
                'and al_query do)')
        files.append(path)
    return files


def read_pool_box_labels(files: list[str]) -> dict[str, dict]:
    """``{sample id: entry}`` of the pool's box-labels files that exist."""
    entries = {}
    for path in files:
        if Path(path).exists():
            entries.update(read_box_labels(path))
    return entries


#: In a box-level batch's folder: every entry its ingests wrote per image, so that an ingest
#: can tell its own earlier answers from another batch's (:func:`ingest_query_batch`).
WRITTEN_FILE = 'box_labels_written.json'


def ingest_query_batch(cfg: Config, batch_dir: str | Path, exports: list, *, fmt: str = 'auto',
                       on_error: str = 'skip') -> tuple[Decision, list[Path]]:
    """Ingest exports into an ``al_query.py`` batch: the decision and the files written.

    An image-level batch's labels go into the dataset (or the ``--images``
    batch's folder), :func:`~mmal.annotation.ingest.ingest_and_write`. A
    box-level batch's accepted answers, read as the experiment reads them
    (:func:`mmal.loop.human.answered_entries`) and merged into the entry each
    image had when it was asked, go into the pool's box-labels files (the
    training dataset's ``box_labels_file``), written whole and atomically; a
    task no longer accepted gets its entry from before the query back. Nothing
    is written into the dataset's annotation files, which would read as the
    image labeled whole.

    Raises:
        ConfigError: When the config's dataset names other box-labels files than
            the batch was asked against, or none; when another batch's ingest
            changed an image's entry since this batch asked about it (its answers
            would be overwritten).
    """
    batch_dir = Path(batch_dir)
    record, tasks = read_batch(batch_dir)
    if 'box_level' not in record:
        return ingest_and_write(cfg, batch_dir, exports, fmt=fmt, on_error=on_error)
    files = box_labels_files(cfg, task_of(cfg), None)
    if sorted(map(osp.abspath, files)) != sorted(map(osp.abspath, record['box_labels_files'])):
        raise ConfigError(
            f'{batch_dir} was asked against the box-labels files {record["box_labels_files"]}, '
            f'and the config names {files} ({DATASET_KEY}): ingest with the config the batch '
            'was queried with')
    known = record.get('box_labels_known', {})
    ids = [t.task_id for t in tasks]
    written_path = batch_dir / WRITTEN_FILE
    written = json.loads(written_path.read_text()) if written_path.exists() else {}
    check_unchanged_since_asked(batch_dir, ids, known, written, read_pool_box_labels(files))
    decision, _ = ingest_and_write(cfg, batch_dir, exports, fmt=fmt, on_error=on_error)
    answered, _ = answered_entries(record, tasks, decision, known)
    file_of = {i: leaf_labels_file(leaf)
               for i, (leaf, _) in sample_infos(cfg.train_dataloader.dataset, ids).items()}
    changed = []
    for path in files:
        entries = read_box_labels(path) if Path(path).exists() else {}
        before = copy.deepcopy(entries)
        for i in (i for i in ids if file_of[i] == path):
            if i in answered:
                entries[i] = answered[i]
            elif i in known:  # not (or no longer) accepted: as it was when asked
                entries[i] = known[i]
            else:
                entries.pop(i, None)
        if entries == before:
            continue
        # recorded before the file is written: a run killed in between leaves what it may
        # have written listed as this batch's own
        for i in (i for i in ids if file_of[i] == path and i in entries):
            entry = json.loads(json.dumps(check_entry(i, entries[i], path)))  # as read back
            if entry not in written.setdefault(i, []):
                written[i].append(entry)
        atomic_write_text(written_path, json.dumps(written) + '\n')
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_box_labels(path, entries)
        changed.append(Path(path))
    return decision, changed


def check_unchanged_since_asked(batch_dir: Path, ids: list[str], known: dict, written: dict,
                                current: dict) -> None:
    """Refuse ingesting a box-level batch over images whose entries another batch's ingest
    changed since this batch asked about them: ingesting would replace those answers
    with this batch's, merged into the older entry the question was asked against.

    ``known``: the entries the batch was asked against; ``written``: every entry this
    batch's own ingests wrote; ``current``: the box-labels files' entries now.
    """
    moved = [i for i in ids
             if current.get(i) != known.get(i) and current.get(i) not in written.get(i, [])]
    if moved:
        raise ConfigError(
            f'{batch_dir}: {len(moved)} of its images were labeled by another batch\'s ingest '
            f'after this batch asked about them, e.g. {moved[:3]}; ingesting it would '
            'overwrite those answers. Ingest a batch before querying the next one about the '
            'same images: query these images again (tools/al_query.py asks around what is '
            'known now) and label that batch instead')


def _plain(cfg: dict | None) -> dict | None:
    """A dataset config as JSON can hold it (ingest rebuilds the candidates from it)."""
    return None if cfg is None else json.loads(json.dumps(cfg, default=list))
