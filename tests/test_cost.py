"""Annotation cost: units, the seconds model, budgets spent in boxes or seconds, curves
against cost."""
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from mmal.compare.report import Run, compare, to_csv, to_markdown
from mmal.loop.cost import AnnotationCost, picks_to_request, spend
from mmal.loop.settings import ActiveLearningSettings
from mmal.utils import ConfigError

from .cycles import one_epoch_two_cycles


def test_every_unit_on_hand_made_samples():
    cost = AnnotationCost.from_config(dict(unit='seconds', per_image=2.0, per_box=7.0,
                                           per_verification=1.5))
    assert cost.of(3) == dict(images=1.0, boxes=3.0, seconds=2.0 + 21.0)
    assert cost.of(2, verifications=4)['seconds'] == pytest.approx(2.0 + 14.0 + 6.0)
    # an empty image costs nothing in boxes, its overhead in seconds
    assert cost.total([0, 3, 1]) == dict(images=3.0, boxes=4.0, seconds=6.0 + 28.0)
    assert cost.in_unit([0, 3]).tolist() == [2.0, 23.0]
    assert AnnotationCost.from_config('boxes').in_unit([0, 3]).tolist() == [0.0, 3.0]
    assert AnnotationCost.from_config('images').in_unit([0, 3]).tolist() == [1.0, 1.0]


def test_the_seconds_model_defaults_by_task():
    detection = AnnotationCost.from_config('seconds', 'detection')
    pose = AnnotationCost.from_config('seconds', 'pose')
    assert detection.per_box == 7.0 and pose.per_box == 1.75   # a box vs one joint's click
    assert AnnotationCost.from_config(dict(unit='seconds', per_box=34.5), 'pose').per_box == 34.5


@pytest.mark.parametrize('value, match', [
    ('clicks', r"unit='clicks' must be one of \('images', 'boxes', 'seconds'\)"),
    (dict(unit='seconds', per_bx=3), r"unknown keys \['per_bx'\]"),
    (dict(unit='seconds', per_box=-1), r'per_box=-1 must be a number of seconds'),
    (7, 'must be one of'),
])
def test_bad_cost_settings_name_the_key(value, match):
    with pytest.raises(ConfigError, match=match):
        AnnotationCost.from_config(value)


def test_a_budget_is_spent_best_first_and_the_crossing_pick_is_finished():
    assert spend([3, 4, 2, 5], budget=7) == 2          # 3 + 4 reaches it exactly
    assert spend([3, 4, 2, 5], budget=8) == 3          # the third crosses it: finished
    assert spend([0, 0, 5], budget=1) == 3             # empty images cost no boxes
    assert spend([1, 1], budget=10) == 2               # the picks ran out
    # asked for twice what the labeled set's mean suggests, never more than the candidates
    assert picks_to_request(100, np.array([4.0, 6.0]), 1000) == 40
    assert picks_to_request(100, np.array([4.0, 6.0]), 30) == 30
    assert picks_to_request(100, np.array([0.0, 0.0]), 300) == 300


def test_settings_take_a_budget_in_the_cost_unit():
    base = dict(initial_size=10, num_cycles=3)
    s = ActiveLearningSettings.from_config(dict(base, budget_per_cycle=150.5, cost='seconds'))
    assert s.budget_unit == 'seconds'
    s.check_plan(pool_size=12)  # a budget in seconds does not count images
    with pytest.raises(ConfigError, match=r'budget_per_cycle=150.5 must be an integer'):
        ActiveLearningSettings.from_config(dict(base, budget_per_cycle=150.5))
    with pytest.raises(ConfigError, match="oracle='human'.*Budget in images"):
        ActiveLearningSettings.from_config(dict(budget_per_cycle=50, num_cycles=2,
                                                oracle='human', cost='boxes'))
    with pytest.raises(ConfigError, match='budget_per_cycle=0 must be a number of boxes'):
        ActiveLearningSettings.from_config(dict(base, budget_per_cycle=0, cost='boxes'))


def test_the_pool_counts_every_box_of_an_image(tiny_cfg, voc_root):
    from mmengine.registry import init_default_scope

    from mmal.datasets import build_pool
    init_default_scope('mmdet')
    pool = build_pool(tiny_cfg.train_dataloader.dataset)
    assert len(pool.marks) == len(pool)
    for sample_id, marks in list(zip(pool.ids, pool.marks))[:10]:
        xml = voc_root / sample_id.replace('JPEGImages', 'Annotations')
        objects = ET.parse(f'{xml}.xml').getroot().findall('object')
        assert marks == len(objects)       # difficult ones too: someone drew them
    assert sum(pool.marks) > len(pool)     # the generated scenes hold several objects


def _run(name, seed, values, labeled, boxes):
    cycles = [dict(cycle=i, num_labeled=n, cost=dict(images=n, boxes=b, seconds=n + 7 * b),
                   metrics={'pascal_voc/mAP': v})
              for i, (n, b, v) in enumerate(zip(labeled, boxes, values))]
    return Run(name, seed, None, True, cycles, budget_unit='boxes')


def test_compare_in_boxes_on_hand_made_curves():
    runs = [
        _run('RandomStrategy', 0, [0.2, 0.4], labeled=(10, 20), boxes=(30, 60)),
        _run('RandomStrategy', 1, [0.2, 0.4], labeled=(10, 22), boxes=(30, 60)),
        # fewer images cost the same boxes: it picks crowded images
        _run('Crowded', 0, [0.2, 0.5], labeled=(10, 14), boxes=(30, 62)),
        _run('Crowded', 1, [0.2, 0.5], labeled=(10, 16), boxes=(30, 62)),
    ]
    result = compare(runs)
    assert result['cost_unit'] == 'boxes'          # the unit the baseline spent
    crowded = result['strategies']['Crowded']
    assert [p['cost'] for p in crowded['curve']] == [30, 62]
    assert [p['num_labeled'] for p in crowded['curve']] == [10, 15]   # mean images
    # random's final mean 0.4 at 60 boxes (21 images): Crowded's mean curve crosses
    # it 2/3 of the way from 30 to 62 boxes, from 10 to 15 images
    assert crowded['cost_to_reach_baseline'] == pytest.approx(30 + 32 * 2 / 3)
    assert crowded['cost_saved'] == pytest.approx(60 - (30 + 32 * 2 / 3))
    assert crowded['labels_to_reach_baseline'] == pytest.approx(10 + 5 * 2 / 3)
    assert crowded['labels_saved'] == pytest.approx(21 - (10 + 5 * 2 / 3))
    # AUC over boxes: (0.2 + 0.5) / 2
    assert crowded['auc']['per_seed'][0] == pytest.approx(0.35)
    md = to_markdown(result)
    assert 'boxes to reach' in md and 'labels to reach' in md and '@ 62 (15 img)' in md
    assert 'Crowded,1,15,pascal_voc/mAP,0.5,0.0,2,62' in to_csv(result).replace(' ', '')
    # the same runs read in seconds and in images
    seconds = compare(runs, unit='seconds')['strategies']['Crowded']
    assert [p['cost'] for p in seconds['curve']] == [220, 449]
    images = compare(runs, unit='images')
    assert images['strategies']['Crowded']['curve'][1]['cost'] == 15


def test_compare_refuses_a_unit_the_records_do_not_count():
    old = Run('RandomStrategy', 0, None, True,
              [dict(cycle=0, num_labeled=10, metrics={'pascal_voc/mAP': 0.2})])
    with pytest.raises(ValueError, match='counts no boxes.*--cost images'):
        compare([old], unit='boxes')
    assert compare([old])['cost_unit'] == 'images'


def test_a_budget_in_boxes_runs_end_to_end(tiny_cfg, tmp_path):
    """Two cycles with 12 boxes per cycle: the picks are labeled best first until the
    boxes are spent, and every cycle records its cost in every unit."""
    from mmal.datasets import build_pool
    from mmal.loop import ActiveLearningExperiment
    from mmal.loop.state import ExperimentState
    cfg = one_epoch_two_cycles(tiny_cfg)
    cfg.active_learning.update(cost='boxes', budget_per_cycle=12,
                               strategy=dict(type='RandomStrategy'), ranking_eval_size=0)
    ActiveLearningExperiment(cfg, str(tmp_path)).run()
    state = ExperimentState.load(tmp_path).data
    pool = build_pool(cfg.train_dataloader.dataset)
    marks = dict(zip(pool.ids, pool.marks))
    c0, c1 = state['cycles']
    picked = [marks[p['id']] for p in c0['selected']]
    assert sum(picked) >= 12 > sum(picked[:-1])     # stopped at the pick that spent it
    assert c0['selected_cost']['boxes'] == sum(picked)
    assert c0['cost']['boxes'] == sum(marks[i] for i in c0['labeled'])
    assert c1['cost']['boxes'] == c0['cost']['boxes'] + sum(picked)
    assert c1['num_labeled'] == 8 + len(picked)
    seconds = AnnotationCost.from_config('seconds')
    assert c1['cost']['seconds'] == pytest.approx(seconds.total(
        [marks[i] for i in c1['labeled']])['seconds'])
    header = (tmp_path / 'al_metrics.csv').read_text().splitlines()[0].split(',')
    assert 'labeled_boxes' in header and 'labeled_seconds' in header
    log = (tmp_path / 'al_train.log').read_text()
    assert f'the budget of 12 boxes labels {len(picked)} of the' in log


def test_the_cost_saved_per_seed_and_its_interval():
    runs = [
        _run('RandomStrategy', 0, [0.2, 0.4], labeled=(10, 20), boxes=(30, 60)),
        _run('RandomStrategy', 1, [0.2, 0.4], labeled=(10, 20), boxes=(30, 60)),
        _run('Crowded', 0, [0.2, 0.5], labeled=(10, 14), boxes=(30, 62)),
        _run('Crowded', 1, [0.2, 0.6], labeled=(10, 16), boxes=(30, 62)),
        _run('Late', 0, [0.2, 0.5], labeled=(10, 20), boxes=(30, 60)),
        _run('Late', 1, [0.2, 0.3], labeled=(10, 20), boxes=(30, 60)),
    ]
    result = compare(runs)
    saved = result['strategies']['Crowded']['cost_saved_per_seed']
    # random's final 0.4 at 60 boxes: seed 0 reaches it at 30 + 32 * 2/3, seed 1 at 30 + 16
    assert saved['per_seed'] == {0: pytest.approx(60 - (30 + 32 * 2 / 3)), 1: pytest.approx(14)}
    assert saved['mean'] == pytest.approx((60 - (30 + 32 * 2 / 3) + 14) / 2)
    assert saved['t_ci'][0] < saved['mean'] < saved['t_ci'][1]
    late = result['strategies']['Late']['cost_saved_per_seed']
    assert late['reached'] == 1 and late['mean'] is None    # no interval over survivors
    md = to_markdown(result)
    assert '1/2 seeds reach it' in md
