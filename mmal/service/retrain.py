"""Training on what is labeled now, outside an experiment.

:func:`train_on_labeled` trains the config's model on the training samples
labeled on disk (a fresh Runner, resumable from its checkpoints in its
folder), as an experiment's cycle would: with ``active_learning.box_level``
the ignore regions of box-level answers are ignored, with
``active_learning.semi_supervised`` the unlabeled rest trains the student.
``tools/al_train_labeled.py`` runs it between ``al_query`` and ``al_ingest``
rounds, in a folder per labeled set (:func:`labeled_set_folder`).

It is also the serving queue's retraining job:

    python -m mmal.service.retrain SERVE_CONFIG FOLDER

run in the background by :class:`~mmal.service.serve.AnnotationServer`:
it trains, scores the unlabeled samples with the config's strategy, and
writes ``FOLDER/order.json`` last (atomically): its presence means the job
finished.
"""
import copy
import json
import sys
from pathlib import Path

from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import find_latest_checkpoint

from ..datasets import Pool, build_pool, subset_config
from ..loop.box_level import BoxLevelSettings, check_box_level_pool
from ..loop.runner import CycleRunner, phase_config
from ..loop.semi_supervised import SemiSupervisedSettings
from ..loop.state import digest_ids
from ..models.ignore_regions import with_ignore_regions
from ..utils import ConfigError
from ..utils.atomic import atomic_write_text
from .query import CheckpointScorer
from .serve import ORDER_FILE


def labeled_samples(cfg: Config) -> tuple[Pool, list[int]]:
    """The training dataset's pool and the positions of its labeled samples.

    Raises:
        ConfigError: When none is labeled (there is nothing to train on).
    """
    pool = build_pool(cfg.train_dataloader.dataset)
    labeled = [p for p, has in enumerate(pool.has_labels) if has]
    if not labeled:
        raise ConfigError(
            f'train_dataloader.dataset: none of its {len(pool)} samples is labeled, so there '
            'is nothing to train on: label some first (tools/al_query.py, then '
            'tools/al_ingest.py --batch), or point data_root / ann_file at labeled data')
    return pool, labeled


def labeled_set_folder(work_dir: str | Path, pool: Pool, labeled: list[int]) -> Path:
    """Where the training on this labeled set goes: ``labeled_<N>_<digest>`` under
    ``work_dir``. Run again on the same set, it resumes; after new labels, it is another
    folder, so a finished training is never mistaken for the new one."""
    ids = [pool.ids[p] for p in labeled]
    return Path(work_dir) / f'labeled_{len(ids)}_{digest_ids(ids)[:8]}'


def train_on_labeled(cfg: Config, folder: Path, launcher: str = 'none',
                     samples: tuple[Pool, list[int]] | None = None) -> str:
    """Train on the samples labeled on disk (with ``active_learning.semi_supervised``, and
    the unlabeled rest of the pool); the last checkpoint.

    Args:
        samples: :func:`labeled_samples` of ``cfg``, if read already.
    """
    pool, labeled = samples or labeled_samples(cfg)
    section = cfg.get('active_learning') or {}
    box_level = BoxLevelSettings.from_config(section.get('box_level'))
    check_box_level_pool(box_level, pool.box_level)
    if box_level is not None:  # as an experiment does: ignore regions train as ignored
        cfg = copy.deepcopy(cfg)
        cfg.model = with_ignore_regions(cfg.model, box_level.ignore_iof_thr)
    dataset = subset_config(cfg.train_dataloader.dataset, pool, labeled)
    sampler = None
    semi = SemiSupervisedSettings.from_config(section.get('semi_supervised'))
    if semi is not None:
        dataset, sampler = semi.train_data(dataset, cfg.train_dataloader.dataset, pool, labeled,
                                           cfg.train_dataloader.batch_size)
    run = phase_config(
        cfg, 'train', folder, train_dataset=dataset, train_sampler=sampler,
        num_train=len(labeled), launcher=launcher,
        resume=find_latest_checkpoint(str(folder)) is not None,
        load_from=cfg.get('load_from'),  # the config's starting weights, if it names any
        seed=section.get('seed', 0))
    if semi is not None:
        semi.schedule(run, len(labeled))
    CycleRunner.from_cfg(run).train()
    return find_latest_checkpoint(str(folder))


def main(config: str, folder: str) -> int:
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    folder = Path(folder)
    checkpoint = train_on_labeled(cfg, folder)
    ids, scores = CheckpointScorer(cfg, checkpoint, folder / 'scoring').rank()
    atomic_write_text(folder / ORDER_FILE, json.dumps(
        dict(checkpoint=checkpoint, ids=ids, scores=scores)) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main(*sys.argv[1:]))
