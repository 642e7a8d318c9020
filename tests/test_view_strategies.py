"""Strategies that compare views, boxes and heatmap peaks: hand-built inputs, then real cycles.

Localization stability and tightness (Kao et al., ACCV 2018), CALD (Yu et
al., CVPR-W 2022) and multiple peak entropy (Liu & Ferrari, ICCV 2017).
The hand-built outputs are what the scoring loop would hand over; the
real cycles (``slow``) train, score and select on the small configs.
"""
import copy
import math

import numpy as np
import pytest
import torch

from mmal.models.learning_loss import UnsupportedScoreOutputError
from mmal.registry import STRATEGIES
from mmal.scoring import ScorePass, score_batches
from mmal.strategies.box_views import detections, js_divergence, pairwise_iou

C = 3  # classes; posteriors have C + 1 columns, background last
BOX = [10.0, 10.0, 50.0, 50.0]
MOVED = [30.0, 30.0, 70.0, 70.0]       # IoU with BOX: 400 / 2800
MOVED_IOU = 400.0 / 2800.0


def build(type_, task='detection', **kw):
    return STRATEGIES.build(dict(type=type_, **kw), default_args=dict(task=task))


def post(cls=0, p=0.9):
    """A posterior with ``p`` on class ``cls`` and the rest on the background (last)."""
    row = np.zeros(C + 1, dtype=np.float32)
    row[cls] = p
    row[-1] += 1.0 - p
    return row


def image(*boxes_and_posteriors):
    """``(boxes (n, 4), posteriors (n, C+1))`` of one image."""
    if not boxes_and_posteriors:
        return np.zeros((0, 4), np.float32), np.zeros((0, C + 1), np.float32)
    boxes, posteriors = zip(*boxes_and_posteriors)
    return np.asarray(boxes, np.float32), np.stack(posteriors).astype(np.float32)


def outputs(main, **views):
    """Candidate outputs: ``main`` and each view a list of per-image ``image(...)``."""
    out = dict(num_samples=len(main), posterior_kind='softmax',
               boxes=[b for b, _ in main], posteriors=[p for _, p in main])
    for name, images in views.items():
        out[f'{name}/boxes'] = [b for b, _ in images]
        out[f'{name}/posteriors'] = [p for _, p in images]
    return out


def select(strategy, candidates, k, labeled=None, seed=0):
    return strategy.select(candidates, labeled or dict(num_samples=0), k,
                           np.random.default_rng(seed))


# ------------------------------------------------------------------ shared parts
def test_iou_and_js_have_the_textbook_values():
    iou = pairwise_iou(torch.tensor([BOX]), torch.tensor([BOX, MOVED, [60., 60., 70., 70.]]))
    np.testing.assert_allclose(iou.numpy(), [[1.0, MOVED_IOU, 0.0]], rtol=1e-6)
    p, q = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert float(js_divergence(p, q)) == pytest.approx(math.log(2))
    assert float(js_divergence(p, p)) == pytest.approx(0.0)


def test_detections_are_confident_boxes_after_class_aware_nms():
    boxes = torch.tensor([BOX, [11., 11., 51., 51.], [11., 11., 51., 51.], MOVED])
    posteriors = torch.tensor(np.stack([post(0, 0.9), post(0, 0.8), post(1, 0.7),
                                        post(2, 0.04)]))
    keep = detections(boxes, posteriors, score_thr=0.05, nms_iou=0.5)
    # the class-0 copy is suppressed, the class-1 box at the same place stays,
    # the box below the threshold goes; most confident first
    assert keep.tolist() == [0, 2]
    assert detections(boxes, posteriors, 0.05, None).tolist() == [0, 1, 2]


# ------------------------------------------------------------ localization stability
def stability(**kw):
    return build('LocalizationStabilityStrategy', stds=(0.1, 0.2), **kw)


def test_a_box_that_moves_under_noise_is_unstable_and_a_still_one_stable():
    still = image((BOX, post()))
    moved = image((MOVED, post()))
    candidates = outputs([still, still], noise0=[still, moved], noise1=[still, moved])
    scores = stability().scores(candidates, {})
    # score = 1 - S_I; S_I = the confidence-weighted mean IoU with the noisy copies' boxes
    np.testing.assert_allclose(scores, [0.0, 1.0 - MOVED_IOU], rtol=1e-6)
    order, _ = select(stability(), candidates, 1)
    assert order.tolist() == [1]


def test_stability_averages_the_levels_and_weights_boxes_by_confidence():
    sure, unsure = post(0, 0.9), post(1, 0.3)
    far = [200., 200., 240., 240.]
    ref = image((BOX, sure), (far, unsure))
    # level 0: both boxes stay; level 1: the unsure box is gone, the sure one moved
    level0 = image((BOX, sure), (far, unsure))
    level1 = image((MOVED, sure))
    scores = stability().scores(outputs([ref], noise0=[level0], noise1=[level1]), {})
    s_sure, s_unsure = (1.0 + MOVED_IOU) / 2, (1.0 + 0.0) / 2
    expected = 1.0 - (0.9 * s_sure + 0.3 * s_unsure) / (0.9 + 0.3)
    assert scores[0] == pytest.approx(expected, rel=1e-6)
    # LS+C: plus w * max_j (1 - P_max)
    combined = stability(classification_weight=1.0).scores(
        outputs([ref], noise0=[level0], noise1=[level1]), {})
    assert combined[0] == pytest.approx(expected + (1.0 - 0.3), rel=1e-6)


def test_an_image_with_no_reference_box_is_labeled_first_by_default():
    empty, still = image(), image((BOX, post()))
    candidates = outputs([empty, still], noise0=[empty, still], noise1=[empty, still])
    assert stability().scores(candidates, {}).tolist() == [1.0, 0.0]
    assert stability(empty_score=-1.0).scores(candidates, {}).tolist() == [-1.0, 0.0]
    # boxes under score_thr are no reference
    faint = image((BOX, post(0, 0.2)))
    assert stability(score_thr=0.5).scores(
        outputs([faint], noise0=[faint], noise1=[faint]), {})[0] == 1.0


def test_stability_declares_one_noisy_pass_per_level():
    passes = build('LocalizationStabilityStrategy', stds=[0.1, 0.3], seed=7).candidate_passes()
    assert list(passes) == ['main', 'noise0', 'noise1']
    assert passes['main'] == ScorePass(('boxes', 'posteriors'))
    assert passes['noise1'].transform == dict(type='GaussianNoise', std=0.3, seed=8)
    assert len(build('LocalizationStabilityStrategy').candidate_passes()) == 7  # 6 paper levels


@pytest.mark.parametrize('kw, match', [
    (dict(stds=[]), 'stds'), (dict(stds=[0.1, -1]), 'stds'),
    (dict(score_thr=1.5), 'score_thr'), (dict(nms_iou=0), 'nms_iou'),
    (dict(classification_weight=-1), 'classification_weight'),
    (dict(empty_score='min'), 'empty_score')])
def test_bad_stability_settings_name_the_key(kw, match):
    with pytest.raises(ValueError, match=match):
        build('LocalizationStabilityStrategy', **kw)


# ------------------------------------------------------------ localization tightness
def tight_outputs(*images):
    """Per image a list of (refined box, proposal, posterior)."""
    out = dict(num_samples=len(images), posterior_kind='softmax', boxes=[], proposals=[],
               posteriors=[])
    for rows_ in images:
        out['boxes'].append(np.asarray([r[0] for r in rows_], np.float32).reshape(-1, 4))
        out['proposals'].append(np.asarray([r[1] for r in rows_], np.float32).reshape(-1, 4))
        out['posteriors'].append(np.asarray([r[2] for r in rows_], np.float32)
                                 .reshape(-1, C + 1))
    return out


def test_a_box_equal_to_its_proposal_is_tight():
    strategy = build('LocalizationTightnessStrategy')
    tight = [(BOX, BOX, post(0, 0.9))]       # T = 1, sure: the cues agree
    loose = [(BOX, MOVED, post(0, 0.9))]     # T = 0.14, sure: they disagree
    doubtful_tight = [(BOX, BOX, post(0, 0.1))]
    scores = strategy.scores(tight_outputs(tight, loose, doubtful_tight, []), {})
    # score = 1 - min_j |T + P_max - 1|
    np.testing.assert_allclose(scores, [1 - 0.9, 1 - abs(MOVED_IOU + 0.9 - 1), 1 - 0.1, 1.0],
                               rtol=1e-6)
    assert scores[1] > scores[0]


def test_tightness_takes_the_least_consistent_detection():
    strategy = build('LocalizationTightnessStrategy', nms_iou=None)
    rows_ = [(BOX, BOX, post(0, 0.9)), (MOVED, BOX, post(1, 0.8))]
    score = strategy.scores(tight_outputs(rows_), {})[0]
    assert score == pytest.approx(1 - min(0.9, abs(MOVED_IOU + 0.8 - 1)), rel=1e-6)


def test_tightness_without_proposals_names_the_two_stage_detector():
    strategy = build('LocalizationTightnessStrategy')
    no_proposals = dict(num_samples=1, boxes=[np.zeros((0, 4))], posteriors=[np.zeros((0, 4))])
    with pytest.raises(UnsupportedScoreOutputError,
                       match="proposals.*two-stage detector.*LearningLossTwoStageDetector"):
        strategy.scores(no_proposals, {})


def test_a_single_stage_detector_refuses_the_proposals_tightness_asks_for(tiny_cfg):
    from .test_learning_loss_detector import batch
    from .test_learning_loss_detector import build as build_model
    model = build_model(tiny_cfg)
    passes = build('LocalizationTightnessStrategy').candidate_passes()
    with pytest.raises(UnsupportedScoreOutputError, match='no proposals.*two-stage'):
        score_batches(model, [batch(tiny_cfg, 2)], passes)


# ---------------------------------------------------------------------------- CALD
def cald(**kw):
    return build('CALDStrategy', views=[dict(type='HorizontalFlip'),
                                        dict(type='GaussianNoise', std=0.1)], **kw)


def test_identical_views_are_consistent_and_diverging_ones_are_not():
    strategy = cald(base_point=2.0)  # |c - 2| = 2 - c: the metric is the inconsistency
    same = image((BOX, post(0, 0.9)))
    diverged = image((MOVED, post(1, 0.6)))
    (box, p), (moved, q) = [tuple(torch.tensor(a) for a in x) for x in (same, diverged)]
    # identical views: c = IoU 1 + (1 - JS 0) * P_max 0.9 = 1.9
    assert float(strategy.distances(box, p, box, p)) == pytest.approx(2 - 1.9, rel=1e-6)
    js = float(js_divergence(p, q))
    c_diverged = MOVED_IOU + 0.5 * (1 - js) * (0.9 + 0.6)
    assert float(strategy.distances(box, p, moved, q)) == pytest.approx(2 - c_diverged, rel=1e-6)
    assert 0 < js < math.log(2) and c_diverged < 1.0
    # an image's metric is the mean over views of min(1, min_j |c_j - beta|), and -M its score
    candidates = outputs([same, same], view0=[same, diverged], view1=[same, same])
    scores = select(strategy, candidates, 1)[1]
    np.testing.assert_allclose(scores, [-(2 - 1.9), -(1.0 + (2 - 1.9)) / 2], rtol=1e-6)


def test_cald_labels_first_the_detection_closest_to_the_base_point():
    # beta = 1.3: c = 1.9 is 0.6 away, c = 1.3 is on it, c ~ 0.2 is capped at 1
    strategy = cald()
    easy = image((BOX, post(0, 0.9)))
    half = image((BOX, post(0, 0.3)))          # IoU 1 + 0.3 = 1.3
    lost = image((BOX, post(0, 0.9)))
    far = image(([200., 200., 240., 240.], post(2, 0.05)))
    candidates = outputs([easy, half, lost], view0=[easy, half, far], view1=[easy, half, far])
    order, scores = select(strategy, candidates, 3, labeled=dict(num_samples=0))
    assert scores[1] == pytest.approx(0.0, abs=1e-6)
    assert scores[0] == pytest.approx(-0.6, rel=1e-5)
    assert scores[2] == pytest.approx(-1.0)                # min(1, |c - 1.3|)
    # stage 2 keeps stage 1's candidates; with no labeled set all picks are made
    assert sorted(order.tolist()) == [0, 1, 2]


def test_an_image_with_nothing_detected_tops_stage_one():
    strategy = cald()
    nothing, easy = image(), image((BOX, post(0, 0.9)))
    candidates = outputs([nothing, easy], view0=[nothing, easy], view1=[nothing, easy])
    order, scores = select(strategy, candidates, 1)
    assert scores.tolist()[0] == 0.0 and order.tolist() == [0]


def class_image(cls, p=0.9):
    return image((BOX, post(cls, p)))


def labeled_set(*classes):
    images = [class_image(c) for c in classes]
    return dict(num_samples=len(images), boxes=[b for b, _ in images],
                posteriors=[p for _, p in images])


def test_stage_two_prefers_the_class_distribution_unlike_the_labeled_sets():
    strategy = cald(stage1_ratio=2.0)
    a, b = class_image(0), class_image(1)
    candidates = outputs([a, b], view0=[a, b], view1=[a, b])  # equal stage-1 metrics
    for labeled, expected in ((labeled_set(0, 0, 0), 1), (labeled_set(1, 1), 0)):
        for seed in range(4):   # not a tie broken by the seed
            order, _ = select(strategy, candidates, 1, labeled=labeled, seed=seed)
            assert order.tolist() == [expected]


def test_stage_two_only_sees_the_stage_one_candidates():
    strategy = cald(stage1_ratio=1.0)
    sure_same_class = image((BOX, post(0, 0.3)))   # on the base point: stage-1 first
    other_class = class_image(1)                   # unlike the labeled set, stage-1 last
    candidates = outputs([sure_same_class, other_class], view0=[sure_same_class, other_class],
                         view1=[sure_same_class, other_class])
    order, _ = select(strategy, candidates, 1, labeled=labeled_set(0, 0))
    assert order.tolist() == [0]
    order, _ = select(cald(stage1_ratio=2.0), candidates, 1, labeled=labeled_set(0, 0))
    assert order.tolist() == [1]


def test_update_labeled_makes_the_picks_balance_each_other():
    first, twin, other = class_image(1), class_image(1), class_image(2, p=0.7)
    candidates = outputs([first, twin, other], view0=[first, twin, other],
                         view1=[first, twin, other])
    labeled = labeled_set(0, 0)
    fixed, _ = select(cald(stage1_ratio=2.0), candidates, 2, labeled=labeled)
    assert sorted(fixed.tolist()) == [0, 1]         # the two most unlike class 0
    greedy, _ = select(cald(stage1_ratio=2.0, update_labeled=True), candidates, 2,
                       labeled=labeled)
    assert greedy[1] == 2 and greedy[0] in (0, 1)   # once class 1 is in, class 2 is rarer


def test_cald_declares_its_views_and_the_labeled_pass():
    strategy = cald()
    passes = strategy.candidate_passes()
    assert list(passes) == ['main', 'view0', 'view1']
    assert passes['view0'].transform == dict(type='HorizontalFlip')
    assert strategy.labeled_passes()['main'].outputs == ('boxes', 'posteriors')


@pytest.mark.parametrize('kw, match', [
    (dict(views=[]), 'views'), (dict(views=[dict(type='NoSuchTransform')]), 'views'),
    (dict(views=[dict(type='GaussianNoise', std=-1)]), 'std'),
    (dict(base_point=3.0), 'base_point'), (dict(stage1_ratio=0.5), 'stage1_ratio')])
def test_bad_cald_settings_name_the_key(kw, match):
    with pytest.raises(ValueError, match=match):
        build('CALDStrategy', **kw)


# ------------------------------------------------------------ multiple peak entropy
def gaussian(size=32, center=(16, 16), sigma=1.0, peak=1.0):
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing='ij')
    return peak * torch.exp(-((ys - center[0]) ** 2 + (xs - center[1]) ** 2) / (2 * sigma ** 2))


def heatmaps(*joints_per_sample):
    return dict(num_samples=len(joints_per_sample),
                heatmaps=np.stack([torch.stack(j).numpy() for j in joints_per_sample]))


def test_a_two_peak_heatmap_ranks_above_a_one_peak_one():
    strategy = build('MultiPeakEntropyStrategy', task='pose')
    one = gaussian()
    two = gaussian(center=(8, 8)) + gaussian(center=(24, 24))
    weak_second = gaussian(center=(8, 8)) + gaussian(center=(24, 24), peak=0.5)
    scores = strategy.scores(heatmaps([one, one], [two, one], [weak_second, one],
                                      [torch.zeros(32, 32), one]), {})
    assert scores[0] == pytest.approx(0.0, abs=1e-6)
    # two equal peaks, softmax: log 2 / log 5 for that joint, mean over 2 joints
    assert scores[1] == pytest.approx(math.log(2) / math.log(5) / 2, rel=1e-5)
    assert scores[1] > scores[2] > scores[0]
    assert scores[3] == pytest.approx(0.5)          # a joint placed nowhere: the maximum


def test_peaks_are_local_maxima_apart_above_the_threshold():
    strategy = build('MultiPeakEntropyStrategy', task='pose', normalise='sum', min_distance=2,
                     aggregation='max')
    plateau = torch.zeros(32, 32)
    plateau[10:13, 10:13] = 1.0                      # a flat top counts once
    assert strategy.scores(heatmaps([plateau]), {})[0] == pytest.approx(0.0, abs=1e-6)
    ripple = gaussian() + 0.05 * (gaussian(center=(4, 4), sigma=0.5) > 0.5)
    assert strategy.scores(heatmaps([ripple]), {})[0] == pytest.approx(0.0, abs=1e-6)
    low = build('MultiPeakEntropyStrategy', task='pose', normalise='sum', threshold=0.0,
                min_distance=2)
    p = np.array([1.0, 0.05]) / 1.05
    assert low.scores(heatmaps([ripple]), {})[0] == pytest.approx(
        -(p * np.log(p)).sum() / math.log(5), rel=1e-4)


def test_multi_peak_entropy_refuses_detection_naming_why():
    with pytest.raises(ValueError, match='MultiPeakEntropyStrategy does not apply to detection'
                                         '.*heatmaps'):
        build('MultiPeakEntropyStrategy')
    for name in ('LocalizationStabilityStrategy', 'LocalizationTightnessStrategy',
                 'CALDStrategy'):
        with pytest.raises(ValueError, match=f'{name} does not apply to pose.*boxes'):
            build(name, task='pose')


@pytest.mark.parametrize('kw, match', [
    (dict(num_peaks=1), 'num_peaks'), (dict(min_distance=0), 'min_distance'),
    (dict(threshold=2), 'threshold'), (dict(normalise='exp'), 'normalise'),
    (dict(aggregation='median'), 'aggregation')])
def test_bad_multi_peak_settings_name_the_key(kw, match):
    with pytest.raises(ValueError, match=match):
        build('MultiPeakEntropyStrategy', task='pose', **kw)


# ------------------------------------------------------------------- real cycles
def _cycle(cfg, tmp_path, strategy):
    from .cycles import one_epoch_two_cycles, run_and_check_selection
    cfg = one_epoch_two_cycles(copy.deepcopy(cfg))
    cfg.active_learning.strategy = strategy
    c0, c1, picked = run_and_check_selection(cfg, tmp_path)
    assert c1['labeled'] == c0['labeled'] + picked
    assert all(math.isfinite(p['score']) for p in c0['selected'])
    return c0, c1


@pytest.mark.slow
@pytest.mark.parametrize('strategy', [
    dict(type='LocalizationStabilityStrategy', stds=[0.2, 0.6]),
    dict(type='CALDStrategy')], ids=lambda s: s['type'])
def test_view_strategy_runs_a_real_detection_cycle(tiny_cfg, tmp_path, strategy):
    _, c1 = _cycle(tiny_cfg, tmp_path, strategy)
    assert 'pascal_voc/mAP' in c1['metrics']


@pytest.mark.slow
def test_tightness_runs_a_real_two_stage_cycle(voc_root, tmp_path):
    from .conftest import voc_config
    cfg = voc_config('configs/learning_loss/faster-rcnn-tiny_ll_synthetic-voc.py', voc_root)
    _, c1 = _cycle(cfg, tmp_path, dict(type='LocalizationTightnessStrategy'))
    assert 'pascal_voc/mAP' in c1['metrics']


@pytest.mark.slow
def test_multi_peak_entropy_runs_a_real_pose_cycle(pose_cfg, tmp_path):
    _, c1 = _cycle(pose_cfg, tmp_path, dict(type='MultiPeakEntropyStrategy'))
    assert 'PCK' in c1['metrics']
