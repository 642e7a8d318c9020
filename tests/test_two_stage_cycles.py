"""Every strategy that applies to a two-stage detector runs a real cycle on the small Faster R-CNN.

The uncertainty family reads the RoI head's softmax posteriors; the view
and committee strategies match its refined boxes; tightness (in
test_view_strategies.py) compares them with their proposals; the
gradient strategies read the box head's class-layer gradient over the same
RoIs.
"""
import copy
import math

import pytest

from .conftest import voc_config
from .cycles import one_epoch_two_cycles, run_and_check_selection

CONFIG = 'configs/learning_loss/faster-rcnn-tiny_ll_synthetic-voc.py'
STRATEGIES = [
    dict(type='LearningLossStrategy'),
    dict(type='LeastConfidenceStrategy'),
    dict(type='MarginStrategy', aggregation='sum'),
    dict(type='EntropyStrategy', aggregation='mean'),
    dict(type='CoreSetStrategy'),
    dict(type='DensityWeightedStrategy'),
    dict(type='LearningLossDiversityStrategy'),
    dict(type='QueryByCommitteeStrategy', members=3),
    dict(type='LocalizationStabilityStrategy', stds=(0.3,)),
    dict(type='CALDStrategy'),
    dict(type='VAALStrategy', image_size=32, latent_dim=8, channels=8, batch_size=8, epochs=2),
    dict(type='ExpectedGradientLengthStrategy'),
    dict(type='BadgeStrategy'),
]


@pytest.fixture
def two_stage_cfg(voc_root):
    return one_epoch_two_cycles(voc_config(CONFIG, voc_root))


@pytest.mark.slow
@pytest.mark.parametrize('strategy', STRATEGIES, ids=lambda s: s['type'])
def test_strategy_runs_a_real_two_stage_cycle(two_stage_cfg, tmp_path, strategy):
    cfg = copy.deepcopy(two_stage_cfg)
    cfg.active_learning.strategy = strategy
    c0, c1, picked = run_and_check_selection(cfg, tmp_path)
    assert c1['labeled'] == c0['labeled'] + picked
    assert all(math.isfinite(p['score']) for p in c0['selected'])
    assert 'pascal_voc/mAP' in c1['metrics']
    if strategy['type'] in ('ExpectedGradientLengthStrategy', 'BadgeStrategy'):
        # gradient norms: never negative, and zero only for an image without scored RoIs
        assert all(p['score'] >= 0 for p in c0['selected'])
        assert max(p['score'] for p in c0['selected']) > 0
    if strategy['type'] == 'BadgeStrategy':
        # the seeding's first pick is the largest gradient norm among the candidates
        assert c0['selected'][0]['score'] == max(p['score'] for p in c0['selected'])
