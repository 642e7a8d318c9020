"""Learning Loss under mixed precision (bf16 autocast on CPU, as AmpOptimWrapper does on GPUs).

mmengine's ``AmpOptimWrapper`` runs ``train_step`` inside ``autocast``;
it refuses CPUs, so these tests put the same autocast around the same
``train_step``. The per-sample target losses must stay those of full
precision (their order is what the ranking loss learns), and the
loss-prediction module and the ranking loss run in float32.
"""
import contextlib
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper
from scipy.stats import spearmanr

from .conftest import POSE_TINY_CONFIG, REPO, use_mpii_root
from .test_learning_loss_detector import batch, build


class CpuBf16OptimWrapper(OptimWrapper):
    """``AmpOptimWrapper``'s autocast (bf16 needs no loss scaling) on a CPU."""

    @contextlib.contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=torch.bfloat16):
            yield


def pose_model_and_batch(mpii_root):
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmpose.registry import DATASETS, MODELS
    cfg = use_mpii_root(Config.fromfile(str(REPO / POSE_TINY_CONFIG)), mpii_root)
    init_default_scope('mmpose')
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    return model, pseudo_collate([dataset[i] for i in range(8)])


@pytest.fixture(params=['detection', 'pose'])
def model_and_batch(request, tiny_cfg, mpii_root):
    if request.param == 'pose':
        return pose_model_and_batch(mpii_root)
    return build(tiny_cfg), batch(tiny_cfg, 8)


def test_per_sample_targets_keep_their_order_and_the_ranking_loss_is_float32(model_and_batch):
    model, data_batch = model_and_batch
    model.train()
    data = model.data_preprocessor(data_batch, True)
    feats, _ = model._extract(data['inputs'])
    _, full = model.task_loss(feats, data['data_samples'])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        feats, maps = model._extract(data['inputs'])
        _, mixed = model.task_loss(feats, data['data_samples'])
        assert maps[0].dtype == torch.bfloat16  # autocast is on
        assert model.loss_prediction(maps).dtype == torch.float32  # the module is not
        losses = model.loss(**data)
    assert spearmanr(full.detach(), mixed.detach())[0] > 0.95
    torch.testing.assert_close(mixed.float(), full, rtol=0.05, atol=1e-3)
    assert losses['loss_rank'].dtype == torch.float32
    assert all(torch.isfinite(v).all() for v in losses.values() if torch.is_tensor(v))


def test_training_steps_under_bf16_autocast_stay_finite_and_learn(model_and_batch):
    model, data_batch = model_and_batch
    model.train()
    wrapper = CpuBf16OptimWrapper(torch.optim.Adam(model.parameters(), lr=1e-3))
    logs = [model.train_step(copy.deepcopy(data_batch), wrapper) for _ in range(6)]
    for log in logs:
        assert all(torch.isfinite(torch.as_tensor(v)) for v in log.values()), log
    assert logs[-1]['loss'] < logs[0]['loss']
