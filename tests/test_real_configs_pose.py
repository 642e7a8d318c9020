"""The LSP Extended pose configs: they build, tap what they name, and run a cycle.

The data is a few LSPET-format images (random pixels, joints inside each
image) put through the real converter; the configs are shrunk to seconds.
"""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from scipy.io import savemat

from mmal.datasets.converters.lspet import convert_lspet

REPO = Path(__file__).resolve().parents[1]
MODEL_CONFIG = REPO / 'configs/real/lspet_heatmap-lite0_ll_128x128.py'
AL_CONFIG = REPO / 'configs/real/lspet_al_heatmap-lite0_128x128.py'
VAL_CONFIG = REPO / 'configs/real/lspet_al_heatmap-lite0_128x128_val.py'


@pytest.fixture(scope='module')
def lspet_root(tmp_path_factory) -> Path:
    import cv2
    src = tmp_path_factory.mktemp('lspet_src')
    (src / 'images').mkdir()
    rng = np.random.default_rng(0)
    n = 28
    joints = np.zeros((14, 3, n))
    for i in range(n):
        w, h = int(rng.integers(80, 140)), int(rng.integers(90, 160))
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        assert cv2.imwrite(str(src / 'images' / f'im{i + 1:05d}.jpg'), img)
        joints[:, 0, i] = rng.uniform(10, w - 10, 14)
        joints[:, 1, i] = rng.uniform(10, h - 10, 14)
        joints[:, 2, i] = rng.random(14) > 0.1
    savemat(str(src / 'joints.mat'), {'joints': joints})
    out = tmp_path_factory.mktemp('data') / 'lspet'
    convert_lspet(src, out, test_size=4, val_size=4, seed=0)
    return out


def _point_at(cfg, root: Path):
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(root) + '/'
    # no ImageNet weights in tests (the backbone's own tests load them)
    cfg.model.estimator.backbone.pretrained = False
    return cfg


def test_configs_load_with_the_torso_metric_first_and_the_val_split():
    cfg = Config.fromfile(str(MODEL_CONFIG))
    assert cfg.model.estimator.backbone.type == 'EfficientNetLite'
    assert cfg.model.estimator.backbone.pretrained is True
    assert cfg.codec.heatmap_size == (32, 32) and cfg.codec.input_size == (128, 128)
    assert [m['type'] for m in cfg.test_evaluator] == ['TorsoPCKAccuracy', 'PCKAccuracy']
    assert cfg.test_evaluator[0].thr == 0.2
    assert cfg.test_dataloader.dataset.ann_file == 'annotations/lspet_test.json'
    al = Config.fromfile(str(AL_CONFIG))
    assert al.active_learning.strategy.type == 'LearningLossStrategy'
    val = Config.fromfile(str(VAL_CONFIG))
    assert val.test_dataloader.dataset.ann_file == 'annotations/lspet_val.json'
    assert val.val_dataloader.dataset.ann_file == 'annotations/lspet_val.json'
    assert val.train_dataloader.dataset.ann_file == 'annotations/lspet_train.json'


def test_model_builds_taps_the_backbone_stages_and_scores(lspet_root):
    from mmpose.registry import DATASETS, MODELS
    cfg = _point_at(Config.fromfile(str(MODEL_CONFIG)), lspet_root)
    init_default_scope('mmpose')
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    ds = DATASETS.build(ds_cfg)
    assert len(ds) == 20 and ds.metainfo['num_keypoints'] == 14
    batch = pseudo_collate([ds[i] for i in range(4)])
    assert batch['inputs'][0].shape == (3, 128, 128)
    model.train()
    losses = model.train_step(batch, _optim(model))
    assert {'loss_kpt', 'loss_rank'} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())
    model.eval()
    test_batch = pseudo_collate([ds[i] for i in range(4)])
    out = model.score_step(test_batch, ('pred_loss', 'heatmaps'))
    assert out['pred_loss'].shape == (4,)
    assert tuple(out['heatmaps'].shape[-3:]) == (14, 32, 32)


def _optim(model):
    from mmengine.optim import OptimWrapper
    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-4))


@pytest.mark.slow
def test_one_shrunk_active_learning_cycle(lspet_root, tmp_path):
    from mmal.loop import ActiveLearningExperiment
    from mmal.loop.state import ExperimentState
    cfg = _point_at(Config.fromfile(str(AL_CONFIG)), lspet_root)
    cfg.train_dataloader.batch_size = 4
    cfg.test_dataloader.batch_size = 4
    cfg.train_cfg.max_epochs = 1
    cfg.train_cfg.val_interval = 100
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.custom_hooks = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, max_keep_ckpts=1)
    cfg.active_learning.update(initial_size=8, budget_per_cycle=4, num_cycles=2,
                               candidate_pool=8, score_batch_size=4, ranking_eval_size=4)
    ActiveLearningExperiment(cfg, str(tmp_path)).run()
    data = ExperimentState.load(tmp_path).data
    assert data['status'] == 'finished'
    c0, c1 = data['cycles']
    assert len(c0['labeled']) == 8 and len(c1['labeled']) == 12
    picked = [p['id'] for p in c0['selected']]
    assert len(set(picked)) == 4 and not set(picked) & set(c0['labeled'])
    for cycle in (c0, c1):
        metrics = cycle['metrics']
        assert 0 <= metrics['torso/PCK'] <= 1 and 0 <= metrics['bbox/PCK'] <= 1
        assert 'torso/PCK_head_top' in metrics
