import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault('OMP_NUM_THREADS', '2')


@pytest.fixture(scope='session')
def voc_root(tmp_path_factory) -> Path:
    """A small generated VOC-format dataset (VOCdevkit folder)."""
    from mmal.datasets import VOCSceneConfig, generate_voc_dataset
    root = tmp_path_factory.mktemp('voc') / 'VOCdevkit'
    generate_voc_dataset(root, VOCSceneConfig(num_trainval=48, num_test=16, seed=1))
    return root


@pytest.fixture
def tiny_cfg(voc_root):
    """The small LL SSD config pointed at the generated data."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(REPO / 'configs/learning_loss/ssd-tiny_ll_synthetic-voc.py'))
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(voc_root) + '/'
        cfg[name].num_workers = 0
        cfg[name].persistent_workers = False
    return cfg
