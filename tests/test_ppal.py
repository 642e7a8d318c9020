"""PPAL (Yang et al., CVPR 2024): its difficulty calibration, CCMS, k-medoids, the box
features it reads, and a real cycle on the small SSD and Faster R-CNN."""
import copy
import csv
import math

import numpy as np
import pytest
import torch
from mmdet.structures.bbox import get_box_tensor

from mmal.scoring import NUM_SAMPLES, POSTERIOR_KIND
from mmal.strategies import build_strategy
from mmal.strategies.ppal import (
    ccms_similarity,
    class_difficulty,
    detections,
    difficulty_weights,
    farthest_point_start,
    k_medoids,
)

from .conftest import voc_config
from .cycles import one_epoch_two_cycles, run_and_check_selection

C = 3  # classes in the hand-made outputs


def softmax_rows(rows):
    """Posterior rows ``(n, C+1)`` from foreground probabilities, background the rest."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, C)
    return np.concatenate([rows, 1.0 - rows.sum(axis=1, keepdims=True)], axis=1)


def strategy(**options):
    return build_strategy(dict(type='PPALStrategy', **options), 'detection')


# ------------------------------------------------------------------ difficulty
def labeled_set():
    """Class 0 predicted exactly and surely; class 1 boxes nobody predicts; class 2 absent.

    Image 0: a class-0 box found by a candidate on it with p = 1. Image 1: a
    class-1 box, the only candidates elsewhere or below IoU 0.5.
    """
    gt_boxes = [np.array([[10., 10., 50., 50.]]), np.array([[60., 60., 100., 100.]])]
    gt_labels = [np.array([0]), np.array([1])]
    boxes = [np.array([[10., 10., 50., 50.]]),
             # IoU with the class-1 box: 0 and (20 * 40) / (40 * 40 + 40 * 40 - 800) = 1/3
             np.array([[0., 0., 20., 20.], [40., 60., 80., 100.]])]
    posteriors = [softmax_rows([[1.0, 0.0, 0.0]]),
                  softmax_rows([[0.0, 0.9, 0.0], [0.0, 0.9, 0.0]])]
    return dict(posteriors=posteriors, boxes=boxes, gt_boxes=gt_boxes, gt_labels=gt_labels,
                **{NUM_SAMPLES: 2})


def test_a_mastered_class_has_difficulty_zero_a_missed_or_unseen_one_difficulty_one():
    out = labeled_set()
    difficulty = class_difficulty(out['posteriors'], out['boxes'], out['gt_boxes'],
                                  out['gt_labels'], C)
    np.testing.assert_allclose(difficulty, [0.0, 1.0, 1.0], atol=1e-12)


def test_quality_is_p_to_the_xi_times_iou_to_the_rest_averaged_over_a_boxs_matches():
    gt = np.array([[0., 0., 10., 10.]])
    # IoUs with the box: 1, 0.8 (10 x 8) and 0.4 (below match_iou: not a positive)
    boxes = np.array([[0., 0., 10., 10.], [0., 0., 10., 8.], [0., 0., 10., 4.]])
    probs = softmax_rows([[0.5, 0.1, 0.0], [0.2, 0.6, 0.0], [0.9, 0.0, 0.0]])
    # a second class-0 box without any candidate: quality 0
    difficulty = class_difficulty([probs, softmax_rows(np.zeros((0, C)))],
                                  [boxes, np.zeros((0, 4))],
                                  [gt, np.array([[5., 5., 9., 9.]])],
                                  [np.array([0]), np.array([0])], C, quality_xi=0.6)
    first = np.mean([0.5 ** 0.6 * 1.0 ** 0.4, 0.2 ** 0.6 * 0.8 ** 0.4])
    assert difficulty[0] == pytest.approx(1.0 - (first + 0.0) / 2)


def test_weights_run_from_one_for_no_difficulty_to_one_plus_the_bound():
    weights = difficulty_weights(np.array([0.0, 0.25, 0.5, 1.0]), upper=0.2, alpha=0.3)
    assert weights[0] == pytest.approx(1.0) and weights[-1] == pytest.approx(1.2)
    assert np.all(np.diff(weights) > 0)
    # the paper's curve: 1 + alpha * u * log((e^(1/alpha) - 1) d + 1)
    assert weights[1] == pytest.approx(1 + 0.3 * 0.2 * math.log((math.exp(1 / 0.3) - 1) * 0.25
                                                                + 1))


def candidates_easy_vs_hard():
    """Image 0: one class-0 detection at 0.5 (the most uncertain score); image 1: one
    class-1 detection at 0.3 (less uncertain)."""
    return {'posteriors': [softmax_rows([[0.5, 0.0, 0.0]]), softmax_rows([[0.0, 0.3, 0.0]])],
            'boxes': [np.array([[0., 0., 10., 10.]])] * 2,
            'box_features': [np.ones((1, 4))] * 2,
            NUM_SAMPLES: 2, POSTERIOR_KIND: 'softmax'}


def binary_entropy(p):
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_calibration_puts_a_hard_class_ahead_of_a_more_uncertain_easy_one():
    ppal = strategy()
    candidates = candidates_easy_vs_hard()
    uniform = ppal.uncertainty_scores(candidates, ppal.class_weights({NUM_SAMPLES: 0}, C))
    assert uniform[0] > uniform[1]  # without calibration the 0.5 box wins
    calibrated = ppal.uncertainty_scores(candidates, ppal.class_weights(labeled_set(), C))
    # class 0 mastered (weight 1), class 1 missed (weight 1.2)
    assert calibrated[0] == pytest.approx(binary_entropy(0.5))
    assert calibrated[1] == pytest.approx(1.2 * binary_entropy(0.3))
    assert calibrated[1] > calibrated[0]


def test_an_image_sums_its_detections_after_nms_and_the_score_threshold():
    ppal = strategy()
    probs = softmax_rows([[0.6, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.4, 0.0], [0.01, 0.0, 0.0]])
    # row 1 overlaps row 0 (same class, IoU 0.9 > 0.6): suppressed; row 2 is another class
    # on the same place: kept; row 3 is below score_thr
    boxes = np.array([[0., 0., 10., 10.], [0., 0., 10., 9.], [0., 0., 10., 10.],
                      [50., 50., 60., 60.]])
    rows, labels, scores = detections(probs, boxes, 0.05, 0.6, 200)
    assert rows.tolist() == [0, 2] and labels.tolist() == [0, 1]
    out = {'posteriors': [probs], 'boxes': [boxes], NUM_SAMPLES: 1}
    weights = np.array([1.0, 2.0, 1.0])
    assert ppal.uncertainty_scores(out, weights)[0] == pytest.approx(
        binary_entropy(0.6) + 2.0 * binary_entropy(0.4))


# ------------------------------------------------------------------ CCMS
def test_ccms_is_one_for_identical_images_minus_one_for_disjoint_classes_and_symmetric():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(3, 8))
    labels = [np.array([0, 1, 1]), np.array([0, 1, 1]), np.array([2]), np.array([0, 2])]
    scores = [np.array([0.9, 0.5, 0.2]), np.array([0.9, 0.5, 0.2]), np.array([0.7]),
              np.array([0.8, 0.3])]
    features = [feats, feats.copy(), rng.normal(size=(1, 8)), rng.normal(size=(2, 8))]
    sim = ccms_similarity(labels, scores, features)
    assert sim[0, 1] == pytest.approx(1.0)
    assert sim[0, 2] == pytest.approx(-1.0) and sim[1, 2] == pytest.approx(-1.0)
    np.testing.assert_allclose(sim, sim.T)
    np.testing.assert_allclose(np.diag(sim), 1.0)
    assert np.all(sim >= -1 - 1e-12) and np.all(sim <= 1 + 1e-12)


def test_ccms_matches_the_papers_formula_on_a_hand_computed_pair():
    # image 0: class 0 (score 0.9, feature e1) and class 1 (score 0.1, e2);
    # image 1: class 0 (score 0.5, feature (e1 + e2) / sqrt 2)
    labels = [np.array([0, 1]), np.array([0])]
    scores = [np.array([0.9, 0.1]), np.array([0.5])]
    features = [np.array([[2., 0.], [0., 3.]]), np.array([[1., 1.]])]
    cos45 = 1 / math.sqrt(2)
    one_to_two = (0.9 * cos45 + 0.1 * -1.0) / (0.9 + 0.1)
    two_to_one = 0.5 * cos45 / 0.5
    sim = ccms_similarity(labels, scores, features)
    assert sim[0, 1] == pytest.approx(0.5 * (one_to_two + two_to_one))


def test_images_without_detections_match_each_other_not_the_rest():
    labels = [np.zeros(0, np.int64), np.zeros(0, np.int64), np.array([1])]
    scores = [np.zeros(0), np.zeros(0), np.array([0.5])]
    features = [np.zeros((0, 4)), np.zeros((0, 4)), np.ones((1, 4))]
    sim = ccms_similarity(labels, scores, features)
    assert sim[0, 1] == 1.0 and sim[0, 2] == -1.0 and sim[2, 1] == -1.0


# ------------------------------------------------------------------ k-medoids
def line_distances(positions):
    positions = np.asarray(positions, dtype=np.float64)
    return np.abs(positions[:, None] - positions[None, :])


def test_farthest_point_start_takes_the_farthest_point_after_the_random_first():
    distance = line_distances([0, 1, 2, 100])
    for seed in range(10):
        first, second = farthest_point_start(distance, 2, np.random.default_rng(seed))
        assert second == (0 if first == 3 else 3)


def test_k_medoids_finds_the_middle_of_each_group_from_any_start():
    # two groups on a line; the farthest-point start lands on the groups' outer ends
    distance = line_distances([0, 1, 2, 3, 4, 50, 51, 52])
    for seed in range(10):
        medoids, assignment = k_medoids(distance, 2, np.random.default_rng(seed))
        assert sorted(medoids.tolist()) == [2, 6]
        assert assignment[:5].tolist() == [assignment[0]] * 5
        assert assignment[5:].tolist() == [assignment[5]] * 3 != [assignment[0]] * 3


def test_k_medoids_keeps_duplicates_apart():
    distance = line_distances([0, 0, 0, 9])
    medoids, assignment = k_medoids(distance, 3, np.random.default_rng(0))
    assert len(set(medoids.tolist())) == 3
    assert sorted(np.bincount(assignment).tolist()) == [1, 1, 2]


def test_the_picks_are_medoids_of_the_uncertainty_pool():
    # 8 images, two kinds by feature; all equally uncertain but image 7 (no detection)
    feats = {0: np.array([[1., 0.]]), 1: np.array([[0., 1.]])}
    kinds = [0, 0, 0, 1, 1, 1, 0, 1]
    candidates = {
        'posteriors': [softmax_rows([[0.5, 0.0, 0.0]]) for _ in range(7)]
        + [softmax_rows(np.zeros((0, C)))],
        'boxes': [np.array([[0., 0., 10., 10.]])] * 7 + [np.zeros((0, 4))],
        'box_features': [feats[kind] for kind in kinds[:7]] + [np.zeros((0, 2))],
        NUM_SAMPLES: 8, POSTERIOR_KIND: 'softmax'}
    ppal = strategy(pool_ratio=3.5)
    order, scores = ppal.select(candidates, {NUM_SAMPLES: 0}, 2, np.random.default_rng(0))
    assert scores[7] == 0 and np.all(scores[:7] == scores[0]) and scores[0] > 0
    # the pool is the 7 images with a detection; one pick of each kind, the larger first
    assert sorted(kinds[p] for p in order) == [0, 1] and kinds[order[0]] == 0


def test_pose_and_the_initial_set_are_refused_naming_why():
    with pytest.raises(ValueError, match='PPALStrategy does not apply to pose.*classes'):
        build_strategy(dict(type='PPALStrategy'), 'pose')
    assert 'labeled set' in strategy().initial_set_refusal()
    with pytest.raises(ValueError, match='pool_ratio=0.5'):
        strategy(pool_ratio=0.5)


# ------------------------------------------------------------------ the model's outputs
DETECTORS = {'ssd': 'configs/learning_loss/ssd-tiny_ll_synthetic-voc.py',
             'retinanet': 'tests/data/retinanet-tiny_ll_synthetic-voc.py',
             'fcos': 'tests/data/fcos-tiny_ll_synthetic-voc.py',
             'faster-rcnn': 'configs/learning_loss/faster-rcnn-tiny_ll_synthetic-voc.py'}


@pytest.fixture(params=sorted(DETECTORS))
def tiny_detector(request, voc_root):
    from .test_learning_loss_detector import batch, build
    cfg = voc_config(DETECTORS[request.param], voc_root)
    model = build(cfg)
    model.score_cfg = dict(num_boxes=40, score_thr=0.0)  # untrained: keep unsure boxes too
    model.eval()
    data = batch(cfg, 2)
    return request.param, model, data


def test_box_features_are_the_finest_map_averaged_over_each_box(tiny_detector):
    """On a level-0 map linear in x and y, a box's mean is the map at the box's centre
    (in the map's pixel-centre coordinates), wherever the interpolation stays inside."""
    name, model, data = tiny_detector
    data = model.data_preprocessor(data, False)
    inputs, samples = data['inputs'], data['data_samples']
    with torch.no_grad():
        feats = list(model.task_model.extract_feat(inputs))
        stride = inputs.shape[-1] / feats[0].shape[-1]
        height, width = feats[0].shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                                torch.arange(width, dtype=torch.float32), indexing='ij')
        slopes = torch.linspace(-1.0, 1.0, feats[0].shape[1])
        # small values: the head's boxes stay near their priors, many inside the map
        feats[0] = (0.05 * (slopes[:, None, None] * xs + (1 - slopes[:, None, None]) * ys)
                    + 0.1).expand_as(feats[0]).contiguous()
        out = model.task_outputs(inputs, tuple(feats), samples,
                                 frozenset({'posteriors', 'boxes', 'box_features'}))
    checked = 0
    for posteriors, boxes, features in zip(out['posteriors'], out['boxes'],
                                           out['box_features']):
        assert features.shape == (len(posteriors), feats[0].shape[1])
        assert len(boxes) == len(posteriors) > 0
        grid = boxes / stride - 0.5  # the map's coordinates, pixel centres at integers
        inside = ((grid[:, 0] >= 0) & (grid[:, 1] >= 0) & (grid[:, 2] <= width - 1)
                  & (grid[:, 3] <= height - 1) & (boxes[:, 2] > boxes[:, 0])
                  & (boxes[:, 3] > boxes[:, 1]))
        cx = (grid[inside, 0] + grid[inside, 2]) / 2
        cy = (grid[inside, 1] + grid[inside, 3]) / 2
        expected = 0.05 * (slopes[None, :] * cx[:, None] + (1 - slopes[None, :]) * cy[:, None]) \
            + 0.1
        torch.testing.assert_close(features[inside], expected, atol=1e-5, rtol=1e-4)
        checked += int(inside.sum())
    assert checked > 0, f'{name}: no box inside the map to check'


def test_ground_truth_outputs_are_the_loaded_labels(tiny_detector):
    _, model, data = tiny_detector
    out = model.score_step(data, ('gt_boxes', 'gt_labels'))
    processed = model.data_preprocessor(data, False)['data_samples']
    for boxes, labels, sample in zip(out['gt_boxes'], out['gt_labels'], processed):
        torch.testing.assert_close(boxes, get_box_tensor(sample.gt_instances.bboxes).float())
        assert labels.tolist() == sample.gt_instances.labels.tolist()
    unlabeled = copy.deepcopy(data)
    for sample in unlabeled['data_samples']:
        del sample.gt_instances
    with pytest.raises(ValueError, match="'gt_boxes' reads the labels"):
        model.score_step(unlabeled, ('gt_boxes',))


def test_the_experiment_refuses_ppal_on_rtmdet_before_training(voc_root):
    from mmal.loop.checks import check_model_outputs
    from mmal.utils import ConfigError
    cfg = voc_config('configs/learning_loss/rtmdet-tiny_ll_synthetic-voc.py', voc_root)
    with pytest.raises(ConfigError, match=r"PPALStrategy needs the score outputs "
                                          r"\['posteriors'\].*QualityFocalLoss"):
        check_model_outputs(cfg, strategy())


# ------------------------------------------------------------------ real cycles
@pytest.mark.slow
@pytest.mark.parametrize('config', [DETECTORS['ssd'], DETECTORS['faster-rcnn']],
                         ids=['ssd', 'faster-rcnn'])
def test_ppal_runs_a_real_cycle(voc_root, tmp_path, config):
    cfg = one_epoch_two_cycles(voc_config(config, voc_root))
    cfg.model.score_cfg = dict(num_boxes=20, score_thr=0.0)  # one epoch: keep unsure boxes
    cfg.active_learning.strategy = dict(type='PPALStrategy', pool_ratio=2, score_thr=0.0)
    c0, c1, picked = run_and_check_selection(cfg, tmp_path)
    assert c1['labeled'] == c0['labeled'] + picked
    assert all(math.isfinite(p['score']) and p['score'] > 0 for p in c0['selected'])
    with open(tmp_path / 'cycle_00' / 'al_scores.csv') as f:
        scores = sorted(float(row['score']) for row in csv.DictReader(f))
    # the 8 medoids come from the uncertainty pool: the 2 x 8 highest of the 24 scores
    assert len(scores) == 24 and min(p['score'] for p in c0['selected']) >= scores[-16]
    assert 'pascal_voc/mAP' in c1['metrics']
