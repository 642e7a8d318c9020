"""Which images to label next, outside an experiment: ``tools/al_query.py``.

The candidates are the unlabeled samples of the config's training dataset
(a :mod:`mmal.datasets.partial` dataset), or the images a user names: a
folder or list for detection, an MPII-style JSON of persons (joints
optional) for pose. The labeled set, for strategies that compare with it
(core-set), is what the training dataset has labeled. Scoring and
selection are the experiment's own (:class:`~mmal.loop.selection.CycleSelection`
on a Runner loading the checkpoint), and the batch is written as the
experiment writes it for people.
"""
import copy
import json
import os.path as osp
from pathlib import Path

import numpy as np
from mmengine.config import Config
from mmengine.dist import get_rank
from mmengine.registry import DefaultScope

from ..datasets import build_pool
from ..datasets.mpii_format import MPII_JOINTS
from ..datasets.pool import sample_infos
from ..loop.experiment import task_of
from ..loop.human import prediction_pass
from ..loop.runner import CycleRunner
from ..loop.selection import CycleSelection
from ..loop.settings import ActiveLearningSettings
from ..registry import STRATEGIES
from ..utils import ConfigError
from ..utils.dist import broadcast_from_rank0
from .batch import label_space, make_tasks, prediction_labels, sample_info, write_batch
from .settings import AnnotationSettings


def candidate_dataset(cfg: Config, images: str, out_dir: Path) -> dict:
    """The dataset config of ``--images`` for the config's task."""
    train = cfg.train_dataloader.dataset
    if task_of(cfg) == 'detection':
        classes = (train.get('metainfo') or {}).get('classes')
        return dict(type='UnlabeledImageDataset', ann_file=osp.abspath(images), pipeline=[],
                    **(dict(metainfo=dict(classes=classes)) if classes else {}))
    if not images.endswith('.json'):
        raise ConfigError(f'--images {images}: pose needs the persons to label, as an '
                          'MPII-style JSON list of {"image", "center", "scale"} (joints '
                          'optional), like MPII\'s test annotations')
    records = json.loads(Path(images).read_text())
    for r in records:  # persons without joints are unlabeled, as mmpose reads them
        r.setdefault('joints', [[-1.0, -1.0]] * len(MPII_JOINTS))
        r.setdefault('joints_vis', [0] * len(MPII_JOINTS))
    persons = out_dir / 'persons.json'
    out_dir.mkdir(parents=True, exist_ok=True)
    persons.write_text(json.dumps(records))
    leaf = copy.deepcopy(train)
    leaf.update(ann_file=str(persons.resolve()), data_root='', pipeline=[],
                data_prefix=dict(img=osp.dirname(osp.abspath(images)) + '/'))
    leaf.pop('indices', None)
    return leaf


def query(cfg: Config, checkpoint: str, budget: int, out_dir: str | Path, *,
          images: str | None = None, strategy: dict | None = None, cycle: int | None = None,
          launcher: str = 'none') -> list:
    """Score the candidates, write the top ``budget`` as a batch, return its tasks (rank 0)."""
    out_dir = Path(out_dir)
    cfg = copy.deepcopy(cfg)
    section = dict(cfg.get('active_learning') or {})
    section.update(budget_per_cycle=budget, num_cycles=1, oracle='human')
    section.pop('initial_size', None)
    if strategy is not None:
        section['strategy'] = strategy
    settings = ActiveLearningSettings.from_config(section)
    task = task_of(cfg)
    with DefaultScope.overwrite_default_scope('mmal'):
        built = STRATEGIES.build(copy.deepcopy(settings.strategy), default_args=dict(task=task))
    if built.needs_labels:
        raise ConfigError(f"{settings.strategy['type']} reads the candidates' labels; "
                          'choose a strategy that scores unlabeled images')
    train = cfg.train_dataloader.dataset
    candidates_cfg = None
    if images is not None:
        candidates_cfg = candidate_dataset(cfg, images, out_dir)
        cfg.train_dataloader.dataset = dict(type='ConcatDataset', datasets=[
            train, candidates_cfg])
    pool = build_pool(cfg.train_dataloader.dataset)
    first_image = len(pool) - pool.leaf_sizes[-1] if images else len(pool)
    labeled = [p for p in range(first_image) if pool.has_labels[p]]
    candidates = np.array(list(range(first_image, len(pool))) if images else
                          [p for p in range(len(pool)) if not pool.has_labels[p]], dtype=int)
    if len(candidates) < budget:
        raise ConfigError(f'--budget {budget}: only {len(candidates)} unlabeled candidates')

    def make_runner(phase: str, test_dataloader: dict, test_cfg: dict) -> CycleRunner:
        run_cfg = copy.deepcopy(cfg)
        run_cfg.train_dataloader.dataset = train
        run_cfg.test_dataloader, run_cfg.test_cfg = test_dataloader, test_cfg
        run_cfg.update(work_dir=str(out_dir / 'runner'), load_from=checkpoint, resume=False,
                       launcher=launcher, experiment_name=f'query_{phase}')
        run_cfg.val_dataloader = run_cfg.val_cfg = run_cfg.val_evaluator = None
        run_cfg.pop('active_learning', None)
        return CycleRunner.from_cfg(run_cfg)

    selection = CycleSelection(cfg, settings, pool, built, task, make_runner, print, out_dir)
    order, scores = selection.select(candidates, labeled, np.random.default_rng(settings.seed))
    picked = None if order is None else [int(candidates[i]) for i in order]
    picked_scores = None if order is None else [float(scores[i]) for i in order]
    picked = broadcast_from_rank0(picked)
    outputs = selection.score(sorted(picked), prediction_pass(), phase='predict')
    if get_rank() != 0:
        return []
    by_position = dict(zip(sorted(picked), outputs['predictions']))
    ids = [pool.ids[p] for p in picked]
    annotation = AnnotationSettings.from_dict(settings.annotation)
    space = label_space(cfg, task)
    infos = sample_infos(cfg.train_dataloader.dataset, ids)
    tasks = make_tasks(ids, [sample_info(infos[i][1]) for i in ids], picked_scores,
                       [prediction_labels(i, by_position[p], space,
                                          annotation.prediction_score_thr)
                        for i, p in zip(ids, picked)], annotation.image_root)
    write_batch(out_dir, tasks, space, annotation, strategy=settings.strategy['type'],
                cycle=cycle, extra=dict(checkpoint=str(checkpoint),
                                        candidates_dataset=_plain(candidates_cfg)))
    return tasks


def _plain(cfg: dict | None) -> dict | None:
    """A dataset config as JSON can hold it (ingest rebuilds the candidates from it)."""
    return None if cfg is None else json.loads(json.dumps(cfg, default=list))


def batch_samples(cfg: Config, batch_dir: Path, record: dict, ids: list[str]) -> dict:
    """``{id: (leaf config, data info)}`` of a query batch's samples, for writing labels.

    Samples of the training dataset are its own. Images named with
    ``--images`` get their labels in the batch folder: VOC XML in
    ``labels/Annotations/`` (detection), the batch's ``persons.json`` (pose).
    """
    source = record.get('candidates_dataset')
    if source is None:
        return sample_infos(cfg.train_dataloader.dataset, ids)
    samples = sample_infos(source, ids)
    if source['type'] == 'UnlabeledImageDataset':
        for _, info in samples.values():
            info['xml_path'] = str(batch_dir / 'labels' / 'Annotations' /
                                   (Path(info['img_path']).stem + '.xml'))
    return samples
