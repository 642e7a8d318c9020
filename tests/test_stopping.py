"""The stopping signal: agreement of successive models on a fixed stop set."""
import copy
import csv
import json

import numpy as np
import pytest

from mmal.loop import ActiveLearningExperiment
from mmal.loop.state import ExperimentState
from mmal.loop.stopping import (
    PREDICTIONS_FILE,
    StoppingSettings,
    agreement,
    box_agreement,
    joint_agreement,
    stop_here,
    stop_set,
)
from mmal.utils import ConfigError

from .cycles import one_epoch_two_cycles

SETTINGS = StoppingSettings()


def _boxes(boxes, labels=None, scores=None):
    n = len(boxes)
    return dict(bboxes=boxes, labels=labels or [0] * n, scores=scores or [0.9] * n)


def test_box_agreement_on_hand_made_predictions():
    a = _boxes([[0, 0, 10, 10], [20, 20, 40, 40]], labels=[0, 1])
    assert box_agreement(a, a, 0.3, 0.5) == 1.0
    assert box_agreement(_boxes([]), _boxes([]), 0.3, 0.5) == 1.0  # both: nothing here
    assert box_agreement(a, _boxes([]), 0.3, 0.5) == 0.0
    # One of two boxes found again (the other moved away): F1 = 2 * 1 / (2 + 2).
    b = _boxes([[0, 0, 10, 11], [60, 60, 80, 80]], labels=[0, 1])
    assert box_agreement(a, b, 0.3, 0.5) == pytest.approx(0.5)
    # The same place under another class is no agreement.
    assert box_agreement(a, _boxes([[0, 0, 10, 10]], labels=[1]), 0.3, 0.5) == 0.0
    # Boxes under the score threshold are not compared.
    low = _boxes([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], labels=[0, 1, 0],
                 scores=[0.9, 0.9, 0.1])
    assert box_agreement(a, low, 0.3, 0.5) == 1.0
    # Each box matches once: two copies of one box against one.
    assert box_agreement(_boxes([[0, 0, 10, 10]] * 2), _boxes([[0, 0, 10, 10]]),
                         0.3, 0.5) == pytest.approx(2 / 3)


def test_identical_predictions_agree_fully_and_unrelated_ones_at_chance():
    rng = np.random.default_rng(0)

    def random_image():
        xy = rng.uniform(0, 90, size=(3, 2))
        wh = rng.uniform(5, 10, size=(3, 2))
        return _boxes(np.concatenate([xy, xy + wh], 1).tolist(), labels=[0, 0, 0])

    first = [random_image() for _ in range(50)]
    second = [random_image() for _ in range(50)]
    assert agreement(first, copy.deepcopy(first), 'detection', SETTINGS) == 1.0
    assert agreement(first, second, 'detection', SETTINGS) < 0.05

    person = dict(keypoints=rng.uniform(0, 100, size=(16, 2)).tolist(), bbox=[0, 0, 100, 100])
    other = dict(person, keypoints=rng.uniform(0, 100, size=(16, 2)).tolist())
    assert joint_agreement(person, person, 0.05) == 1.0
    assert joint_agreement(person, other, 0.05) < 0.2
    nudged = dict(person, keypoints=(np.asarray(person['keypoints']) + 2.0).tolist())
    assert joint_agreement(person, nudged, 0.05) == 1.0  # 2.8 px < 0.05 x 141 px
    assert agreement([person], [other], 'pose', SETTINGS) == joint_agreement(person, other,
                                                                            0.05)


def test_stop_here_needs_patience_cycles_at_the_threshold():
    settings = StoppingSettings(threshold=0.9, patience=2)
    assert not stop_here([0.95], settings)
    assert not stop_here([0.5, 0.95], settings)
    assert not stop_here([None, 0.95], settings)
    assert stop_here([0.5, 0.92, 0.95], settings)


def test_the_stop_set_is_a_seeded_draw_of_the_unlabeled():
    unlabeled = list(range(10, 60))
    drawn = stop_set(unlabeled, 20, seed=3)
    assert drawn == stop_set(unlabeled, 20, seed=3) and drawn != stop_set(unlabeled, 20, 4)
    assert len(set(drawn)) == 20 and set(drawn) <= set(unlabeled)
    assert stop_set(unlabeled[:5], 20, seed=3) == unlabeled[:5]


@pytest.mark.parametrize('section, match', [
    (dict(stop_set_size=-1), 'stop_set_size'), (dict(threshold=2), 'threshold'),
    (dict(patience=0), 'patience'), (dict(treshold=0.9), 'unknown keys')])
def test_bad_stopping_settings_name_the_key(section, match):
    with pytest.raises(ConfigError, match=match):
        StoppingSettings.from_dict(section)


def test_each_cycle_reports_its_agreement_with_the_last(tiny_cfg, tmp_path):
    cfg = one_epoch_two_cycles(tiny_cfg)
    cfg.active_learning.update(num_cycles=3, ranking_eval_size=0,
                               stopping=dict(stop_set_size=12, threshold=0.0, patience=1))
    ActiveLearningExperiment(copy.deepcopy(cfg), str(tmp_path)).run()
    cycles = ExperimentState.load(tmp_path).data['cycles']
    assert cycles[0]['stop_agreement'] is None and not cycles[0]['stop_here']
    assert 0.0 <= cycles[1]['stop_agreement'] <= 1.0 and cycles[1]['stop_here']  # threshold 0
    kept = [json.loads((tmp_path / f'cycle_{c:02d}' / PREDICTIONS_FILE).read_text())
            for c in (0, 1)]
    assert kept[0]['ids'] == kept[1]['ids'] and len(kept[0]['ids']) == 12
    assert not set(kept[0]['ids']) & set(cycles[0]['labeled'])
    # Recomputed from the kept files, the recorded value is the agreement of the two models.
    assert cycles[1]['stop_agreement'] == pytest.approx(agreement(
        kept[0]['predictions'], kept[1]['predictions'], 'detection',
        StoppingSettings(stop_set_size=12, threshold=0.0, patience=1)))
    rows = list(csv.DictReader((tmp_path / 'al_metrics.csv').open()))
    assert rows[0]['stop_agreement'] == '' and float(rows[1]['stop_agreement']) == \
        pytest.approx(cycles[1]['stop_agreement'])
    assert rows[1]['stop_here'] == '1'
    # The predicted-loss trend over the same stop set: a mean per cycle, the change after
    # the first, equal to the mean of what LL's scores on those samples would give.
    losses = [c['stop_pred_loss'] for c in cycles[:2]]
    assert all(v > 0 for v in losses) and cycles[0]['stop_pred_loss_change'] is None
    assert cycles[1]['stop_pred_loss_change'] == pytest.approx((losses[1] - losses[0])
                                                               / losses[0])
    assert float(rows[1]['stop_pred_loss']) == pytest.approx(losses[1])


def test_the_predicted_loss_trend_on_hand_made_losses():
    from mmal.loop.stopping import pred_loss_trend
    assert pred_loss_trend(None, 1.0) == {}
    assert pred_loss_trend([1.0, 3.0], None) == dict(stop_pred_loss=2.0,
                                                     stop_pred_loss_change=None)
    trend = pred_loss_trend([1.0, 2.0], 2.0)
    assert trend['stop_pred_loss'] == 1.5 and trend['stop_pred_loss_change'] == -0.25
