"""Each strategy runs one real cycle (train, evaluate, score, select) on the small configs.

Two cycles, so that the selection of cycle 0 is trained on in cycle 1.
"""
import copy
import csv
import math
from pathlib import Path

import pytest
from mmengine.config import Config

from mmal.loop import ActiveLearningExperiment

from .cycles import one_epoch_two_cycles, run_and_check_selection

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

DETECTION_STRATEGIES = [
    dict(type='LeastConfidenceStrategy'),
    dict(type='MarginStrategy', aggregation='sum'),
    dict(type='EntropyStrategy', aggregation='mean'),
    dict(type='CoreSetStrategy'),
    dict(type='DensityWeightedStrategy', uncertainty=dict(type='EntropyStrategy'), beta=1.0),
    dict(type='LearningLossDiversityStrategy', m=2),
]


@pytest.fixture
def cycle_cfg(tiny_cfg):
    cfg = copy.deepcopy(tiny_cfg)
    return one_epoch_two_cycles(cfg)


@pytest.mark.parametrize('strategy', DETECTION_STRATEGIES, ids=lambda s: s['type'])
def test_detection_strategy_runs_a_real_cycle(cycle_cfg, tmp_path, strategy):
    cfg = copy.deepcopy(cycle_cfg)
    cfg.active_learning.strategy = strategy
    c0, c1, picked = run_and_check_selection(cfg, tmp_path)
    assert c1['labeled'] == c0['labeled'] + picked and c0['num_candidates'] == 24
    assert all(math.isfinite(p['score']) for p in c0['selected'])
    with open(tmp_path / 'cycle_00' / 'al_scores.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and set(picked) <= {r['id'] for r in rows}
    scores = {r['id']: float(r['score']) for r in rows}
    assert all(scores[p['id']] == p['score'] for p in c0['selected'])
    if strategy['type'] in ('LeastConfidenceStrategy', 'MarginStrategy', 'EntropyStrategy',
                            'DensityWeightedStrategy'):
        # top-K strategies: the picks are the highest scores
        assert min(p['score'] for p in c0['selected']) >= sorted(scores.values())[-8]
    assert 'pascal_voc/mAP' in c1['metrics']


# ------------------------------------------------------------------------ pose
POSE_CONFIG = REPO / 'configs/learning_loss/hourglass-tiny_ll_synthetic-mpii.py'
POSE_STRATEGIES = [
    dict(type='LeastConfidenceStrategy', aggregation='mean'),
    dict(type='EntropyStrategy'),
    dict(type='CoreSetStrategy'),
    dict(type='DensityWeightedStrategy', uncertainty=dict(type='LeastConfidenceStrategy')),
    dict(type='LearningLossDiversityStrategy', m=2),
]


@pytest.fixture(scope='module')
def mpii_root(tmp_path_factory):
    datasets = pytest.importorskip('mmal.datasets')
    if not POSE_CONFIG.exists() or not hasattr(datasets, 'generate_mpii_dataset'):
        pytest.skip('the small pose config or the MPII-format generator is not there')
    root = tmp_path_factory.mktemp('mpii') / 'mpii'
    return datasets.generate_mpii_dataset(
        root, datasets.MPIISceneConfig(num_train=40, num_val=12, seed=1))


@pytest.fixture
def pose_cfg(mpii_root):
    cfg = Config.fromfile(str(POSE_CONFIG))
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(mpii_root) + '/'
        cfg[name].num_workers = 0
        cfg[name].persistent_workers = False
        if cfg[name].dataset.get('headbox_file'):
            cfg[name].dataset.headbox_file = str(mpii_root / 'annotations/mpii_gt_val.mat')
    return one_epoch_two_cycles(cfg)


@pytest.mark.parametrize('strategy', POSE_STRATEGIES, ids=lambda s: s['type'])
def test_pose_strategy_runs_a_real_cycle(pose_cfg, tmp_path, strategy):
    cfg = copy.deepcopy(pose_cfg)
    cfg.active_learning.strategy = strategy
    c0, c1, picked = run_and_check_selection(cfg, tmp_path)
    assert c1['labeled'] == c0['labeled'] + picked
    assert all(math.isfinite(p['score']) for p in c0['selected'])
    assert 'PCK' in c1['metrics']


def test_margin_refuses_a_pose_experiment_by_name(pose_cfg, tmp_path):
    cfg = copy.deepcopy(pose_cfg)
    cfg.active_learning.strategy = dict(type='MarginStrategy')
    with pytest.raises(ValueError, match='MarginStrategy does not apply to pose.*heatmap'):
        ActiveLearningExperiment(cfg, str(tmp_path))
