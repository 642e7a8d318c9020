"""Which images to label next, outside an experiment: ``tools/al_query.py``.

The candidates are the unlabeled samples of the config's training dataset
(a :mod:`mmal.datasets.partial` dataset), or the images a user names: a
folder or list for detection, an MPII-style JSON of persons (joints
optional) for pose. The labeled set, for strategies that compare with it
(core-set), is what the training dataset has labeled. Scoring and
selection are the experiment's own (a :class:`~mmal.scoring.Scorer` on a
Runner loading the checkpoint, :class:`~mmal.loop.selection.CycleSelection`),
and the batch is written as the experiment writes it for people.
"""
import copy
import json
import logging
import os.path as osp
from pathlib import Path

import numpy as np
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader
from mmpose.datasets import MpiiDataset
from mmpose.registry import DATASETS as POSE_DATASETS

from ..annotation.batch import label_space, tasks_of_samples, write_batch
from ..annotation.records import Task
from ..annotation.settings import AnnotationSettings
from ..datasets import build_pool
from ..datasets.mpii_format import MPII_JOINTS
from ..loop.runner import CycleRunner, phase_config
from ..loop.selection import CycleSelection
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
        if section.get('box_level') is not None:
            print_log('active_learning.box_level is ignored here: al_query and the serving '
                      'queue order whole images; box-level queries run in tools/al_train.py',
                      logger='current', level=logging.WARNING)
        self.task = task_of(cfg)
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
        self.candidates = np.array(list(range(first, len(self.pool))) if images else [
            p for p in range(len(self.pool)) if not self.pool.has_labels[p]], dtype=int)
        self.annotation = AnnotationSettings.from_dict(section.get('annotation'))
        self.space = label_space(cfg, self.task)
        self.scorer = Scorer(cfg, self.pool, ScoringSettings.from_config(cfg, section),
                             self._runner, self.out_dir)
        self.selection = CycleSelection(self.scorer, self.strategy, print, self.out_dir)

    def rank(self, k: int | None = None) -> tuple[list[str], list[float]]:
        """The strategy's ``k`` picks of the candidates (all by default), best first, and scores."""
        k = len(self.candidates) if k is None else k
        if len(self.candidates) < k:
            raise ConfigError(f'--budget {k}: only {len(self.candidates)} unlabeled candidates')
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
        return tasks_of_samples(self.cfg.train_dataloader.dataset, ids, scores, predictions,
                                self.space, self.annotation)

    def write(self, folder: str | Path, tasks: list[Task], cycle: int | None = None) -> None:
        write_batch(folder, tasks, self.space, self.annotation,
                    strategy=self.strategy_cfg['type'], cycle=cycle,
                    extra=dict(checkpoint=self.checkpoint,
                               candidates_dataset=_plain(self.candidates_cfg)))

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


def _plain(cfg: dict | None) -> dict | None:
    """A dataset config as JSON can hold it (ingest rebuilds the candidates from it)."""
    return None if cfg is None else json.loads(json.dumps(cfg, default=list))
