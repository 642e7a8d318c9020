"""A serving queue's retraining job: train on what is labeled now, order the pool again.

    python -m mmal.service.retrain SERVE_CONFIG FOLDER

Run in the background by :class:`~mmal.service.serve.AnnotationServer`.
Trains the config's model on the training samples labeled on disk (a fresh
Runner, resumable from its checkpoints in FOLDER), scores the unlabeled
ones with the config's strategy, and writes ``FOLDER/order.json`` last
(atomically): its presence means the job finished.
"""
import json
import sys
from pathlib import Path

from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import find_latest_checkpoint

from ..datasets import build_pool, subset_config
from ..loop.runner import CycleRunner, phase_config
from ..loop.semi_supervised import SemiSupervisedSettings
from ..utils.atomic import atomic_write_text
from .query import CheckpointScorer
from .serve import ORDER_FILE


def train_on_labeled(cfg: Config, folder: Path) -> str:
    """Train on the samples labeled on disk (with ``active_learning.semi_supervised``, and
    the unlabeled rest of the pool); the last checkpoint."""
    pool = build_pool(cfg.train_dataloader.dataset)
    labeled = [p for p, has in enumerate(pool.has_labels) if has]
    dataset = subset_config(cfg.train_dataloader.dataset, pool, labeled)
    sampler = None
    semi = SemiSupervisedSettings.from_config(
        (cfg.get('active_learning') or {}).get('semi_supervised'))
    if semi is not None:
        dataset, sampler = semi.train_data(dataset, cfg.train_dataloader.dataset, pool, labeled,
                                           cfg.train_dataloader.batch_size)
    run = phase_config(
        cfg, 'train', folder, train_dataset=dataset, train_sampler=sampler,
        num_train=len(labeled), resume=find_latest_checkpoint(str(folder)) is not None,
        load_from=cfg.get('load_from'),  # the config's starting weights, if it names any
        seed=(cfg.get('active_learning') or {}).get('seed', 0))
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
