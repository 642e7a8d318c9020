"""Current pose families under Learning Loss: RTMPose (SimCC), HRNet and ViTPose (heatmaps),
RTMO (bottom-up, refused).

Per family the per-sample target losses are checked against the model's own loss;
the SimCC measures on hand-made distributions with known answers; the heatmap
strategies refused on RTMPose before any training; two cycles of tools/al_train.py
per family (slow).
"""
import copy
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmpose.registry import DATASETS, MODELS

from mmal.loop.checks import check_model_outputs
from mmal.models import LearningLossPoseEstimator
from mmal.models.learning_loss import UnsupportedScoreOutputError
from mmal.models.plain_models import wrap_plain_model
from mmal.strategies import build_strategy
from mmal.utils import ConfigError

from .conftest import REPO, mpii_root_options, use_mpii_root

CONFIGS = {
    'rtmpose': 'configs/learning_loss/rtmpose-tiny_ll_synthetic-mpii.py',
    'hrnet': 'configs/learning_loss/hrnet-tiny_ll_synthetic-mpii.py',
    'vitpose': 'configs/learning_loss/vitpose-tiny_ll_synthetic-mpii.py',
}
AL_CONFIGS = {
    'rtmpose': 'configs/active_learning/ll_rtmpose-tiny_synthetic-mpii.py',
    'hrnet': 'configs/active_learning/ll_hrnet-tiny_synthetic-mpii.py',
    'vitpose': 'configs/active_learning/ll_vitpose-tiny_synthetic-mpii.py',
}


def family_cfg(name, mpii_root, config=None):
    return use_mpii_root(Config.fromfile(str(REPO / (config or CONFIGS[name]))), mpii_root)


def build(cfg, seed=0):
    init_default_scope('mmpose')
    torch.manual_seed(seed)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    return model


def train_batch(cfg, n, seed=0):
    init_default_scope('mmpose')
    torch.manual_seed(seed)
    np.random.seed(seed)
    ds = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
    return pseudo_collate([ds[i] for i in range(n)])


def per_sample_and_batch(cfg, n=6):
    model = build(cfg)
    model.eval()  # BN and dropout out of the way: the head's inputs are fixed below
    data = model.data_preprocessor(train_batch(cfg, n), True)
    feats, _ = model._extract(data['inputs'])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        losses, per_sample = model.task_loss(feats, data['data_samples'])
    assert not [w for w in caught if 'per-sample losses average' in str(w.message)]
    assert per_sample.shape == (n,) and not per_sample.requires_grad
    # each is mmpose's own loss of that sample alone: the head's loss on a batch of one
    head = model.task_model.head
    alone = torch.stack([
        head.loss(tuple(f[b:b + 1] for f in feats), [data['data_samples'][b]],
                  train_cfg=model.task_model.train_cfg)['loss_kpt']
        for b in range(n)])
    torch.testing.assert_close(per_sample, alone.detach(), rtol=1e-5, atol=1e-9)
    return model, data, feats, losses, per_sample


# ------------------------------------------------------------ per-sample targets
def test_rtmpose_per_sample_losses_are_its_simcc_kl_and_sum_to_mmposes_batch_loss(mpii_root):
    cfg = family_cfg('rtmpose', mpii_root)
    model, data, feats, losses, per_sample = per_sample_and_batch(cfg)
    head = model.task_model.head
    assert type(head).__name__ == 'RTMCCHead'
    assert type(head.loss_module).__name__ == 'KLDiscretLoss'
    assert head.loss_module.beta == 10 and head.loss_module.label_softmax
    # mmpose's batch loss, unchanged, is the sum over samples (KLDiscretLoss sums the
    # per-joint terms of every sample and divides by the joints only) ...
    own = model.task_model.loss(data['inputs'], data['data_samples'])
    assert losses['loss_kpt'].item() == pytest.approx(own['loss_kpt'].item(), rel=1e-5)
    assert per_sample.sum().item() == pytest.approx(losses['loss_kpt'].item(), rel=1e-5)
    assert per_sample.mean().item() != pytest.approx(losses['loss_kpt'].item(), rel=1e-2)
    # ... and each sample's term is the KL by hand: softmax(beta * logits) against the
    # label softmax(beta * target), averaged over the bins, weighted, averaged over joints
    pred_x, pred_y = head.forward(feats)
    w = torch.cat([s.gt_instance_labels.keypoint_weights for s in data['data_samples']])
    by_hand = 0
    for pred, key in ((pred_x, 'keypoint_x_labels'), (pred_y, 'keypoint_y_labels')):
        target = torch.cat([getattr(s.gt_instance_labels, key) for s in data['data_samples']])
        q = (10 * target).softmax(-1)
        kl = (q * (q.log() - (10 * pred).log_softmax(-1))).mean(-1)
        by_hand = by_hand + (kl * w).mean(-1)
    torch.testing.assert_close(per_sample, by_hand.detach(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('name', ['hrnet', 'vitpose'])
def test_heatmap_families_per_sample_losses_average_to_mmposes_batch_loss(name, mpii_root):
    cfg = family_cfg(name, mpii_root)
    model, data, feats, losses, per_sample = per_sample_and_batch(cfg)
    assert type(model.task_model.head).__name__ == 'HeatmapHead'
    own = model.task_model.loss(data['inputs'], data['data_samples'])
    assert losses['loss_kpt'].item() == pytest.approx(own['loss_kpt'].item(), rel=1e-5)
    assert per_sample.mean().item() == pytest.approx(losses['loss_kpt'].item(), rel=1e-5)


@pytest.mark.parametrize('name,taps,channels', [
    ('rtmpose', ['backbone.stage2', 'backbone.stage3', 'backbone.stage4'], [96, 192, 384]),
    ('hrnet', ['backbone.layer1', 'backbone.stage2', 'backbone.stage3', 'backbone.stage4'],
     [64, 8, 16, 8, 16, 32, 8]),
    ('vitpose', ['backbone'], [64, 64]),
])
def test_taps_are_the_families_stages_and_their_channels_are_the_configs(
        name, taps, channels, mpii_root):
    cfg = family_cfg(name, mpii_root)
    assert list(cfg.model.taps) == taps
    model = build(cfg)
    model.eval()
    _, maps = model._extract(torch.zeros(2, 3, 64, 64))
    assert [m.shape[1] for m in maps] == channels == list(cfg.model.loss_prediction.in_channels)


# ------------------------------------------------------------ RTMPose's scoring outputs
def test_rtmpose_gives_simcc_distributions_at_the_losss_temperature_and_no_heatmaps(
        mpii_root):
    cfg = family_cfg('rtmpose', mpii_root)
    model = build(cfg)
    model.eval()
    data = train_batch(cfg, 3)
    out = model.score_step(data, ('pred_loss', 'simcc_x', 'simcc_y'))
    assert out['simcc_x'].shape == (3, 16, 128) and out['simcc_y'].shape == (3, 16, 128)
    inputs = model.data_preprocessor(copy.deepcopy(data), False)['inputs']
    pred_x, pred_y = model.task_model.head.forward(model.task_model.extract_feat(inputs))
    torch.testing.assert_close(out['simcc_x'], (10 * pred_x).softmax(-1))
    torch.testing.assert_close(out['simcc_y'], (10 * pred_y).softmax(-1))
    torch.testing.assert_close(out['simcc_x'].sum(-1), torch.ones(3, 16))
    with pytest.raises(UnsupportedScoreOutputError, match='RTMCCHead predicts each joint'):
        model.score_step(data, ('heatmaps',))
    # every SimCC strategy scores these outputs
    outputs = {k: v.numpy() for k, v in out.items()} | {'num_samples': 3}
    for strategy in ('EntropyStrategy', 'LeastConfidenceStrategy',
                     'MultiPeakEntropyStrategy'):
        s = build_strategy(dict(type=strategy, pose_output='simcc'), 'pose')
        assert s.outputs == ('simcc_x', 'simcc_y')
        scores = s.scores(outputs, {})
        assert scores.shape == (3,) and np.all(np.isfinite(scores))
        assert np.all((scores >= 0) & (scores <= 1))


def test_a_heatmap_family_refuses_simcc_and_gives_heatmaps(mpii_root):
    cfg = family_cfg('hrnet', mpii_root)
    model = build(cfg)
    model.eval()
    out = model.score_step(train_batch(cfg, 2), ('heatmaps',))
    assert out['heatmaps'].shape == (2, 16, 16, 16)
    with pytest.raises(UnsupportedScoreOutputError, match='HeatmapHead outputs heatmaps'):
        model.score_step(train_batch(cfg, 2), ('simcc_x', 'simcc_y'))


# ------------------------------------------------------------ refusals before training
def al_cfg(name, mpii_root, strategy):
    cfg = family_cfg(name, mpii_root, AL_CONFIGS[name])
    cfg.active_learning.strategy = strategy
    return cfg


@pytest.mark.parametrize('strategy,match', [
    (dict(type='EntropyStrategy'), "heatmaps: RTMCCHead predicts each joint's x and y"),
    (dict(type='LeastConfidenceStrategy'), "pose_output='simcc'"),
    (dict(type='MultiPeakEntropyStrategy'), 'not heatmaps'),
    (dict(type='QueryByCommitteeStrategy', committee='dropout'), 'SimCC'),
    (dict(type='DensityWeightedStrategy'), 'RTMCCHead'),
    (dict(type='ExpectedGradientLengthStrategy'), 'grad_embedding: .*no heatmap conv'),
    (dict(type='BadgeStrategy'), 'SimCC classifiers under a KL loss'),
])
def test_heatmap_strategies_are_refused_on_rtmpose_before_training(strategy, match, mpii_root):
    cfg = al_cfg('rtmpose', mpii_root, strategy)
    built = build_strategy(strategy, 'pose')
    with pytest.raises(ConfigError, match=match):
        check_model_outputs(cfg, built)


@pytest.mark.parametrize('strategy', [
    dict(type='EntropyStrategy', pose_output='simcc'),
    dict(type='LeastConfidenceStrategy', pose_output='simcc'),
    dict(type='MultiPeakEntropyStrategy', pose_output='simcc'),
    dict(type='DensityWeightedStrategy',
         uncertainty=dict(type='EntropyStrategy', pose_output='simcc')),
    dict(type='LearningLossStrategy'), dict(type='CoreSetStrategy'),
])
def test_simcc_and_feature_strategies_apply_to_rtmpose(strategy, mpii_root):
    check_model_outputs(al_cfg('rtmpose', mpii_root, strategy), build_strategy(strategy, 'pose'))


def test_simcc_strategies_are_refused_on_a_heatmap_family(mpii_root):
    strategy = dict(type='EntropyStrategy', pose_output='simcc')
    with pytest.raises(ConfigError, match="HeatmapHead outputs heatmaps.*drop pose_output"):
        check_model_outputs(al_cfg('hrnet', mpii_root, strategy),
                            build_strategy(strategy, 'pose'))
    for strategy in (dict(type='EntropyStrategy'), dict(type='MultiPeakEntropyStrategy'),
                     dict(type='BadgeStrategy')):
        check_model_outputs(al_cfg('hrnet', mpii_root, strategy),
                            build_strategy(strategy, 'pose'))


def test_margin_stays_refused_for_pose_naming_simcc():
    with pytest.raises(ValueError, match='neighbours on one peak'):
        build_strategy(dict(type='MarginStrategy', pose_output='simcc'), 'pose')


def test_pose_output_is_checked():
    with pytest.raises(ValueError, match=r"pose_output=.simc. must be one of"):
        build_strategy(dict(type='EntropyStrategy', pose_output='simc'), 'pose')
    with pytest.raises(ValueError, match="pose_output=.simcc. is for pose estimators"):
        build_strategy(dict(type='EntropyStrategy', pose_output='simcc'), 'detection')


# ------------------------------------------------------------ RTMO (bottom-up)
def test_rtmo_is_refused_naming_why():
    import mmpose
    rtmo = Config.fromfile(str(Path(mmpose.__file__).parent / '.mim' / 'configs' / (
        'body_2d_keypoint/rtmo/coco/rtmo-s_8xb32-600e_coco-640x640.py')))
    init_default_scope('mmpose')
    with pytest.raises(TypeError, match='bottom-up one .RTMO.*whole image of several people'):
        LearningLossPoseEstimator(estimator=rtmo.model)
    with pytest.raises(ConfigError, match=r"model.type='BottomupPoseEstimator' is not a "
                                          'top-down.*count persons'):
        wrap_plain_model(rtmo.model)


# ------------------------------------------------------------ SimCC measures, known answers
def simcc(*rows):
    """(N, 1, W) distributions from rows of bin masses (normalised)."""
    t = torch.tensor(rows, dtype=torch.float64)[:, None, :]
    return (t / t.sum(-1, keepdim=True)).numpy()


W = 64
ONE_PEAK = [math.exp(-(i - 20) ** 2 / 8) for i in range(W)]
TWO_PEAKS = [math.exp(-(i - 20) ** 2 / 8) + math.exp(-(i - 44) ** 2 / 8) for i in range(W)]
UNIFORM = [1.0] * W
ONE_HOT = [1.0 if i == 20 else 0.0 for i in range(W)]


def score(strategy, xs, ys):
    s = build_strategy(dict(type=strategy, pose_output='simcc'), 'pose')
    return s.scores(dict(simcc_x=simcc(*xs), simcc_y=simcc(*ys), num_samples=len(xs)), {})


def test_simcc_entropy_known_answers():
    # rows: one-hot, one peak, two peaks, uniform (y one-hot except the uniform row)
    got = score('EntropyStrategy', [ONE_HOT, ONE_PEAK, TWO_PEAKS, UNIFORM],
                [ONE_HOT, ONE_HOT, ONE_HOT, UNIFORM])
    assert got[0] == pytest.approx(0.0, abs=1e-12)
    assert got[3] == pytest.approx(1.0)           # the maximum, log(Wx * Wy)
    assert got[0] < got[1] < got[2] < got[3]       # two peaks above one, uniform above all
    # two equal, well-separated peaks add log 2 to the x entropy
    assert (got[2] - got[1]) * math.log(W * W) == pytest.approx(math.log(2), rel=1e-4)


def test_simcc_least_confidence_known_answers():
    got = score('LeastConfidenceStrategy', [ONE_HOT, ONE_PEAK, UNIFORM],
                [ONE_HOT, ONE_HOT, UNIFORM])
    peak = max(ONE_PEAK) / sum(ONE_PEAK)
    np.testing.assert_allclose(got, [0.0, 1 - peak, 1 - 1 / W ** 2], rtol=1e-6)


def test_simcc_multi_peak_entropy_known_answers():
    got = score('MultiPeakEntropyStrategy', [ONE_PEAK, TWO_PEAKS, UNIFORM],
                [ONE_PEAK, ONE_PEAK, ONE_PEAK])
    # one peak on each axis: 0; two equal peaks in x: log 2 / log 5 on x, 0 on y, averaged
    assert got[0] == pytest.approx(0.0, abs=1e-12)
    assert got[1] == pytest.approx(math.log(2) / math.log(5) / 2, rel=1e-6)
    # a flat x: num_peaks equal peaks (one per min_distance window), x at its maximum 1
    assert got[2] == pytest.approx(0.5)
    assert got[0] < got[1] < got[2]


# ------------------------------------------------------------ two cycles through the tool
def al_train(config, work_dir, options):
    env = dict(os.environ, PYTHONPATH=str(REPO))  # threads: conftest's share
    return subprocess.run([sys.executable, 'tools/al_train.py', str(config), '--work-dir',
                           str(work_dir), '--cfg-options', *options], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)


SHRUNK = ['active_learning.initial_size=16', 'active_learning.budget_per_cycle=16',
          'active_learning.num_cycles=2', 'active_learning.candidate_pool=32',
          'active_learning.score_num_workers=0', 'active_learning.score_batch_size=16',
          'active_learning.ranking_eval_size=8', 'active_learning.stopping.stop_set_size=8',
          'train_cfg.max_epochs=2',
          'train_dataloader.batch_size=8']


@pytest.mark.slow
@pytest.mark.parametrize('name,strategy', [
    ('rtmpose', 'LearningLossStrategy'), ('rtmpose', 'EntropyStrategy'),
    ('hrnet', 'LearningLossStrategy'), ('hrnet', 'EntropyStrategy'),
    ('vitpose', 'LearningLossStrategy'), ('vitpose', 'LeastConfidenceStrategy'),
])
def test_two_cycles_through_the_tool(name, strategy, mpii_root, tmp_path):
    options = [*SHRUNK, *mpii_root_options(mpii_root),
               f'active_learning.strategy.type={strategy}']
    if name == 'rtmpose':
        options.append('custom_hooks.1.switch_epoch=1')  # mmpose's pipeline switch runs
        if strategy != 'LearningLossStrategy':
            options.append('active_learning.strategy.pose_output=simcc')
    result = al_train(REPO / AL_CONFIGS[name], tmp_path / 'work', options)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / 'work' / 'al_state.json').read_text())
    assert data['status'] == 'finished'
    c0, c1 = data['cycles']
    picked = [p['id'] for p in c0['selected']]
    assert len(set(picked)) == 16 and not set(picked) & set(c0['labeled'])
    assert c1['labeled_added'] == picked
    assert all(math.isfinite(p['score']) for p in c0['selected'])
    assert math.isfinite(c0['ranking_accuracy']['strategy'])
    for cycle in (c0, c1):
        assert 0.0 <= cycle['metrics']['PCK'] <= 100.0
    log = '\n'.join(p.read_text() for p in (tmp_path / 'work').glob('cycle_00/**/*.log'))
    assert 'loss_rank' in log
    if name == 'rtmpose':
        assert 'Switch pipeline now!' in log


@pytest.mark.slow
def test_entropy_on_rtmpose_is_refused_by_the_tool_before_any_training(mpii_root, tmp_path):
    options = [*SHRUNK, *mpii_root_options(mpii_root),
               'active_learning.strategy.type=EntropyStrategy']
    result = al_train(REPO / AL_CONFIGS['rtmpose'], tmp_path / 'work', options)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "RTMCCHead predicts each joint's x and y" in result.stderr
    assert "pose_output='simcc'" in result.stderr
    assert not (tmp_path / 'work' / 'cycle_00').exists()


def test_default_ranking_references_are_refused_on_rtmpose_before_any_work(mpii_root, tmp_path):
    """The default references (LL and heatmap entropy) would fail after cycle 0 trained."""
    from mmal.loop import ActiveLearningExperiment
    cfg = al_cfg('rtmpose', mpii_root, dict(type='LearningLossStrategy'))
    cfg.active_learning.pop('ranking_references')
    with pytest.raises(ConfigError, match=r'ranking_references: EntropyStrategy cannot score '
                                          r'this model: .*heatmaps'):
        ActiveLearningExperiment(cfg, str(tmp_path / 'run'))
    assert not (tmp_path / 'run' / 'al_state.json').exists()
