"""Box-level queries in the experiment: settings, one query run on a real pool with
hand-made predictions, and two cycles end to end."""
import json

import numpy as np
import pytest

from mmal.datasets.box_labels import read_box_labels
from mmal.loop.box_level import BoxLevelSettings, binary_entropy, run_queries
from mmal.loop.cost import AnnotationCost
from mmal.loop.settings import ActiveLearningSettings
from mmal.utils import ConfigError

from .cycles import one_epoch_two_cycles


@pytest.mark.parametrize('section, match', [
    (dict(max_asked=3), r"unknown keys \['max_asked'\]"),
    (dict(max_asked_per_image=0), 'max_asked_per_image=0 must be an integer >= 1'),
    (dict(pseudo_label_threshold=1.5), r'pseudo_label_threshold=1.5 must be a number in'),
    (dict(min_score=0.9, pseudo_label_threshold=0.5), 'lower min_score'),
    ([3], 'must be a dict'),
])
def test_bad_box_level_settings_name_the_key(section, match):
    with pytest.raises(ConfigError, match=match):
        BoxLevelSettings.from_config(section)


def test_box_level_with_people_budgets_in_images():
    """People answer box-level batches (tests/test_box_level_people.py); what a query
    costs is known only once they answer, so the budget stays in images."""
    settings = ActiveLearningSettings.from_config(dict(budget_per_cycle=5, num_cycles=2,
                                                       oracle='human', box_level={}))
    assert settings.box_level == {}
    with pytest.raises(ConfigError, match="cost='boxes'.*known only once people"):
        ActiveLearningSettings.from_config(dict(budget_per_cycle=5, num_cycles=2,
                                                oracle='human', box_level={}, cost='boxes'))


def test_uncertainty_is_highest_where_the_model_cannot_tell():
    h = binary_entropy([0.5, 0.1, 0.9, 0.99])
    assert h[0] == pytest.approx(np.log(2)) and h[1] == pytest.approx(h[2]) and h[3] < h[2]


def _gt(dataset, sample_id):
    """The image's objects as mmdet loads them (difficult ones left out)."""
    from mmal.datasets.pool import sample_infos
    kept = [i for i in sample_infos(dataset, [sample_id])[sample_id][1]['instances']
            if not i['ignore_flag']]
    return (np.array([i['bbox'] for i in kept]).reshape(-1, 4),
            np.array([i['bbox_label'] for i in kept]))


def test_queries_on_a_real_pool_answer_only_what_was_asked(tiny_cfg, tmp_path):
    """Hand-made predictions on generated VOC images: per image one uncertain box on an
    object (asked: answered with the object's exact box), one confident box on another
    object (a pseudo-label), one uncertain box on nothing (asked: "nothing here"); the
    image's other objects stay unlabeled. Seconds are spent image by image."""
    from mmengine.registry import init_default_scope

    from mmal.datasets import build_pool
    init_default_scope('mmdet')
    dataset = tiny_cfg.train_dataloader.dataset
    pool = build_pool(dataset)
    ids = [i for i in pool.ids if len(_gt(dataset, i)[0]) >= 3][:3]
    picked, predictions, truth = [], [], {}
    for sample_id in ids:
        boxes, labels = _gt(dataset, sample_id)
        truth[sample_id] = (boxes, labels)
        nothing = [0.0, 0.0, 3.0, 3.0]   # a corner where the generator draws no object
        predictions.append(dict(bboxes=[(boxes[0] + 2).tolist(), boxes[1].tolist(), nothing],
                                scores=[0.5, 0.95, 0.45],
                                labels=[int(labels[0]), int(labels[1]), 0]))
        picked.append(dict(id=sample_id, score=1.0))
    settings = BoxLevelSettings(max_asked_per_image=2, pseudo_label_threshold=0.9,
                                min_score=0.05)
    cost = AnnotationCost.from_config('seconds')
    one_image = cost.per_image + cost.per_box + cost.per_verification
    queried, record = run_queries(settings, cost, 1.5 * one_image, picked, predictions,
                                  dataset, None, tmp_path)
    assert [p['id'] for p in queried] == ids[:2]        # the second image crosses the budget
    q = record['box_queries']
    assert (q['boxes_drawn'], q['verifications'], q['pseudo_labels']) == (2, 2, 2)
    assert q['correct'] == 2 and q['false'] == 0
    assert q['unlabeled_objects'] == sum(len(truth[i][0]) - 2 for i in ids[:2])
    assert record['selected_cost'] == dict(images=2.0, boxes=2.0,
                                           seconds=pytest.approx(2 * one_image))
    entries = read_box_labels(record['box_labels'])
    assert sorted(entries) == sorted(ids[:2])
    for sample_id in ids[:2]:
        boxes, labels = truth[sample_id]
        objects = entries[sample_id]['objects']
        answered = [o for o in objects if o['source'] == 'answered']
        assert [o['bbox'] for o in answered] == [pytest.approx(boxes[0].tolist())]  # exact
        assert len(objects) == 2 and len(entries[sample_id]['empty']) == 1
        # an object nobody asked about is in no label of the image
        for box in boxes[2:]:
            assert all(o['bbox'] != pytest.approx(box.tolist()) for o in objects)
    # the next cycle's file keeps these and adds its own
    _, more = run_queries(settings, cost, one_image, [dict(id=ids[2], score=1.0)],
                          predictions[2:], dataset, record['box_labels'], tmp_path / 'next')
    assert sorted(read_box_labels(more['box_labels'])) == sorted(ids)


def test_box_level_cycles_end_to_end(tiny_cfg, tmp_path):
    """Three cycles: the queried images train on their box-level labels with the ignore
    assigner, stay candidates for more questions, and the labeled cost is the initial
    set's plus what the queries cost."""
    import csv

    from mmal.loop import ActiveLearningExperiment
    from mmal.loop.state import ExperimentState
    cfg = one_epoch_two_cycles(tiny_cfg)
    cfg.active_learning.update(box_level=dict(max_asked_per_image=2, min_score=0.01,
                                              pseudo_label_threshold=0.5),
                               strategy=dict(type='RandomStrategy'), ranking_eval_size=0,
                               num_cycles=3, candidate_pool='all')
    ActiveLearningExperiment(cfg, str(tmp_path)).run()
    c0, c1, c2 = ExperimentState.load(tmp_path).data['cycles']
    # the images queried in cycle 0 are candidates again in cycle 1
    with open(tmp_path / 'cycle_01' / 'al_scores.csv') as f:
        scored = {row['id'] for row in csv.DictReader(f)}
    assert {p['id'] for p in c0['selected']} <= scored
    assert not {p['id'] for p in c1['selected']} & set(c1['labeled'])
    assert {p['id'] for p in c1['revisited']} <= set(c1['labeled'])
    assert len(c1['selected']) + len(c1['revisited']) == 8
    later = read_box_labels(c1['box_labels'])
    for pick in c1['revisited']:  # what the first query settled is kept
        first = read_box_labels(c0['box_labels'])[pick['id']]
        assert all(o in later[pick['id']]['objects'] for o in first['objects']
                   if o['source'] == 'answered')
        assert all(b in later[pick['id']]['empty'] for b in first['empty'])
    q = c0['box_queries']
    entries = read_box_labels(c0['box_labels'])
    assert sorted(entries) == sorted(p['id'] for p in c0['selected']) and len(entries) == 8
    answered = sum(o['source'] == 'answered' for e in entries.values() for o in e['objects'])
    assert answered == q['boxes_drawn'] <= 16
    assert q['boxes_drawn'] + q['verifications'] > 0, q   # regions were asked
    assert sum(len(e['empty']) for e in entries.values()) == q['verifications']
    assert c0['selected_cost']['images'] == 8 and c0['selected_cost']['boxes'] == answered
    assert c1['cost'] == {u: pytest.approx(c0['cost'][u] + c0['selected_cost'][u])
                          for u in ('images', 'boxes', 'seconds')}
    # cycle 1's training read the labels file, with the assigners ignoring regions
    dumped = '\n'.join(p.read_text() for p in (tmp_path / 'cycle_01').rglob('*.py'))
    assert 'LoadBoxLevelLabels' in dumped and c0['box_labels'] in dumped
    assert 'IgnoreRegionsMaxIoUAssigner' in dumped
    log = (tmp_path / 'al_train.log').read_text()
    assert 'box-level queries on 8 of the 8 picks' in log
    json.loads((tmp_path / 'al_state.json').read_text())  # the record stays plain JSON


def test_asking_again_skips_what_is_settled_and_never_answers_an_object_twice():
    from mmal.loop.box_level import query_image
    gt_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=float)
    gt_labels = np.array([0, 1, 2])
    settings = BoxLevelSettings(max_asked_per_image=2, pseudo_label_threshold=0.9)
    prediction = dict(bboxes=gt_boxes.tolist() + [[60, 60, 70, 70]],
                      scores=[0.5, 0.5, 0.3, 0.95], labels=[0, 1, 2, 0])
    first, cost, _ = query_image(settings, prediction, gt_boxes, gt_labels)
    assert [o['bbox'] for o in first['objects'] if o['source'] == 'answered'] == [
        [0, 0, 10, 10], [20, 20, 30, 30]]
    assert cost.boxes_drawn == 2 and cost.pseudo_labels == 1   # the 0.95 box on nothing
    # asked again with the same detections: only the third object is left to ask
    again, cost, audit = query_image(settings, prediction, gt_boxes, gt_labels, known=first)
    assert cost.boxes_drawn == 1 and cost.verifications == 0 and cost.pseudo_labels == 0
    answered = [o['bbox'] for o in again['objects'] if o['source'] == 'answered']
    assert answered == [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]
    assert audit.unlabeled_objects == 0 and audit.false == 1    # the kept pseudo-label
    # a detection shifted onto an answered object is not answered again
    shifted = dict(bboxes=[[1, 1, 11, 11]], scores=[0.5], labels=[0])
    same, cost, _ = query_image(settings, shifted, gt_boxes, gt_labels, known=first)
    assert cost.boxes_drawn == 0 and same['objects'] == first['objects']


def test_box_level_refuses_a_model_that_cannot_ignore(voc_root, tmp_path):
    from mmal.loop import ActiveLearningExperiment

    from .conftest import voc_config
    cfg = voc_config('configs/learning_loss/rtmdet-tiny_ll_synthetic-voc.py', voc_root)
    cfg = one_epoch_two_cycles(cfg)
    cfg.active_learning.update(box_level={}, strategy=dict(type='RandomStrategy'))
    with pytest.raises(ConfigError, match='DynamicSoftLabelAssigner'):
        ActiveLearningExperiment(cfg, str(tmp_path))
    assert not (tmp_path / 'al_state.json').exists()
