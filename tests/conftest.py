import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# Under pytest-xdist each worker takes one core: the machine's cores are
# shared out, not oversubscribed.
os.environ.setdefault('OMP_NUM_THREADS', '1' if os.environ.get('PYTEST_XDIST_WORKER') else '2')


@pytest.fixture(scope='session')
def voc_root(tmp_path_factory) -> Path:
    """A small generated VOC-format dataset (VOCdevkit folder)."""
    from mmal.datasets import VOCSceneConfig, generate_voc_dataset
    root = tmp_path_factory.mktemp('voc') / 'VOCdevkit'
    generate_voc_dataset(root, VOCSceneConfig(num_trainval=48, num_test=16, seed=1))
    return root


def voc_config(config: str, voc_root: Path):
    """A detection config of ours pointed at generated VOC data, no workers."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(REPO / config))
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(voc_root) + '/'
        cfg[name].num_workers = 0
        cfg[name].persistent_workers = False
    return cfg


@pytest.fixture
def tiny_cfg(voc_root):
    """The small LL SSD config pointed at the generated data."""
    return voc_config('configs/learning_loss/ssd-tiny_ll_synthetic-voc.py', voc_root)


# ------------------------------------------------------------------ pose (MPII)
POSE_TINY_CONFIG = 'configs/learning_loss/hourglass-tiny_ll_synthetic-mpii.py'


@pytest.fixture(scope='session')
def mpii_root(tmp_path_factory) -> Path:
    """A small generated MPII-format dataset (mmpose's data/mpii layout)."""
    from mmal.datasets import MPIISceneConfig, generate_mpii_dataset
    root = tmp_path_factory.mktemp('mpii') / 'mpii'
    generate_mpii_dataset(root, MPIISceneConfig(num_train=40, num_val=12, seed=1))
    return root


def use_mpii_root(cfg, root: Path):
    """Point a pose config's dataloaders (and headbox file) at ``root``, no workers."""
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(root) + '/'
        if cfg[name].dataset.get('headbox_file'):
            cfg[name].dataset.headbox_file = str(root / 'annotations' / 'mpii_gt_val.mat')
        cfg[name].num_workers = 0
        cfg[name].persistent_workers = False
    return cfg


def mpii_root_options(root: Path) -> list[str]:
    """The same as ``--cfg-options`` for the command-line tools."""
    opts = []
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{name}.dataset.data_root={root}/', f'{name}.num_workers=0',
                 f'{name}.persistent_workers=False']
    headbox = root / 'annotations' / 'mpii_gt_val.mat'
    return opts + [f'val_dataloader.dataset.headbox_file={headbox}',
                   f'test_dataloader.dataset.headbox_file={headbox}']


@pytest.fixture
def pose_cfg(mpii_root):
    """The small LL hourglass config pointed at the generated MPII data."""
    from mmengine.config import Config
    return use_mpii_root(Config.fromfile(str(REPO / POSE_TINY_CONFIG)), mpii_root)
