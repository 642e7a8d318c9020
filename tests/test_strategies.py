"""Every strategy on small hand-built inputs whose right answer is known.

Strategies are pure functions of the task-normalised outputs: here those
outputs are built by hand, as the scoring loop would hand them over.
"""
import math

import numpy as np
import pytest
import torch

from mmal.registry import STRATEGIES
from mmal.strategies import k_center_greedy, min_distances
from mmal.strategies.density_weighted import mean_cosine_similarity
from mmal.strategies.measures import normalised_entropy

UNCERTAINTY = ('LeastConfidenceStrategy', 'MarginStrategy', 'EntropyStrategy')


def build(type_, task='detection', **kw):
    return STRATEGIES.build(dict(type=type_, **kw), default_args=dict(task=task))


def detection(posteriors, kind='softmax', **more):
    """Candidate outputs: per image a (boxes, C+1) posterior array."""
    return dict(num_samples=len(posteriors), posterior_kind=kind,
                posteriors=[np.asarray(p, dtype=np.float32).reshape(-1, 4) for p in posteriors],
                **more)


def select(strategy, outputs, k, labeled=None, seed=0):
    return strategy.select(outputs, labeled or dict(num_samples=0), k,
                           np.random.default_rng(seed))


def softmax(*rows):
    return torch.tensor(rows, dtype=torch.float32).softmax(-1).numpy()


def peaked(cls=0, strength=10.0):
    logits = [0.0] * 4
    logits[cls] = strength
    return logits


UNIFORM = [0.0] * 4
SIGMOID_UNSURE = [0.5, 0.45, 0.5, 0.0]  # p_c of 3 classes, then prod(1 - p_c)


def sigmoid_box(*p):
    p = np.asarray(p, dtype=np.float32)
    return np.append(p, np.prod(1 - p))


# ------------------------------------------------------------------ registry
@pytest.mark.parametrize('name', [*UNCERTAINTY, 'CoreSetStrategy', 'DensityWeightedStrategy',
                                  'LearningLossDiversityStrategy', 'LearningLossStrategy',
                                  'RandomStrategy'])
def test_every_strategy_is_registered_and_buildable_with_its_task(name):
    strategy = build(name)
    assert type(strategy).__name__ == name and strategy.task == 'detection'
    with pytest.raises(ValueError, match="unknown task 'segmentation'"):
        build(name, task='segmentation')


# ---------------------------------------------------------- detection boxes
@pytest.mark.parametrize('name', UNCERTAINTY)
def test_uniform_posteriors_rank_above_peaked_ones_on_softmax_heads(name):
    strategy = build(name)
    out = detection([softmax(UNIFORM, UNIFORM), softmax(peaked(0), peaked(1)),
                     softmax(peaked(2, strength=1.0), peaked(0))])
    order, scores = select(strategy, out, 3)
    assert scores.shape == (3,) and scores[0] > scores[2] > scores[1]
    assert list(order) == [0, 2, 1]


@pytest.mark.parametrize('name', UNCERTAINTY)
def test_unsure_sigmoid_scores_rank_above_sure_ones_on_sigmoid_heads(name):
    strategy = build(name)
    out = detection([[sigmoid_box(0.5, 0.5, 0.5)], [sigmoid_box(0.99, 0.01, 0.01)],
                     [sigmoid_box(0.7, 0.05, 0.05)]], kind='sigmoid')
    order, scores = select(strategy, out, 3)
    assert list(order) == [0, 2, 1]
    # p_c = 0.5 everywhere: the measure's maximum (least confidence: 1 - 0.5)
    assert scores[0] == pytest.approx(0.5 if name == 'LeastConfidenceStrategy' else 1.0)


def test_a_sigmoid_box_is_not_read_as_a_softmax_one():
    # Background column ~0.95 (no class fires): softmax reading calls it sure
    # background; per-class reading sees three sure "no" decisions. Both agree
    # here, but a box with p = (0.5, 0.5, 0.5) sums past 1: only the sigmoid
    # reading is defined on it, and gives the maximum.
    entropy = build('EntropyStrategy')
    box = sigmoid_box(0.5, 0.5, 0.5)
    sig = entropy.scores(detection([[box]], kind='sigmoid'), {})
    assert sig[0] == pytest.approx(1.0)
    assert entropy.per_box(torch.tensor([box]), 'sigmoid')[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="posterior_kind 'logits'"):
        entropy.scores(detection([[box]], kind='logits'), {})


def test_box_measures_have_the_textbook_values():
    p = torch.tensor([0.5, 0.3, 0.2])
    assert build('LeastConfidenceStrategy').box_uncertainty(p) == pytest.approx(0.5)
    assert build('MarginStrategy').box_uncertainty(p) == pytest.approx(1 - (0.5 - 0.3))
    entropy = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2)) / math.log(3)
    assert build('EntropyStrategy').box_uncertainty(p) == pytest.approx(entropy)
    assert normalised_entropy(torch.full((4,), 0.25)) == pytest.approx(1.0)
    assert normalised_entropy(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(0.0)
    # sigmoid heads: per-class binary decisions
    q = torch.tensor([0.9, 0.3])
    assert build('LeastConfidenceStrategy').class_uncertainty(q) == pytest.approx(0.3)
    assert build('MarginStrategy').class_uncertainty(q) == pytest.approx(1 - 0.4)
    binary = [-(x * math.log(x) + (1 - x) * math.log(1 - x)) for x in (0.9, 0.3)]
    assert build('EntropyStrategy').class_uncertainty(q) == pytest.approx(
        sum(binary) / (2 * math.log(2)))


@pytest.mark.parametrize('aggregation,expected', [('max', 0.75), ('mean', (0.75 + 0.2) / 2),
                                                  ('sum', 0.75 + 0.2)])
def test_boxes_aggregate_per_image_by_max_mean_or_sum(aggregation, expected):
    strategy = build('LeastConfidenceStrategy', aggregation=aggregation)
    image = [[0.25] * 4, [0.8, 0.1, 0.05, 0.05]]  # 1 - max p: 0.75 and 0.2
    assert strategy.scores(detection([image]), {})[0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize('name,maximum', [('LeastConfidenceStrategy', 0.75),
                                          ('MarginStrategy', 1.0), ('EntropyStrategy', 1.0)])
@pytest.mark.parametrize('kind', ['softmax', 'sigmoid'])
def test_an_image_with_no_candidate_box_gets_the_empty_score(name, maximum, kind):
    out = detection([np.zeros((0, 4)), [[0.25] * 4]], kind=kind)
    # sigmoid: p_c = 0.5, every measure's maximum (least confidence: 1 - 0.5)
    expected = maximum if kind == 'softmax' else (0.5 if name == 'LeastConfidenceStrategy'
                                                  else 1.0)
    assert build(name).scores(out, {})[0] == pytest.approx(expected)
    assert build(name, empty_score=-1.0).scores(out, {})[0] == -1.0


def test_bad_uncertainty_settings_are_refused():
    with pytest.raises(ValueError, match="aggregation='median'"):
        build('EntropyStrategy', aggregation='median')
    with pytest.raises(ValueError, match='empty_score'):
        build('EntropyStrategy', empty_score='min')
    with pytest.raises(RuntimeError, match='task='):
        STRATEGIES.build(dict(type='EntropyStrategy')).candidate_passes()
    with pytest.raises(ValueError, match=r"needs the candidate outputs \['posteriors'\]"):
        build('EntropyStrategy').scores(dict(num_samples=1, features=np.zeros((1, 2))), {})


def test_strategies_declare_what_the_loop_computes():
    assert build('EntropyStrategy').candidate_passes()['main'].outputs == ('posteriors',)
    assert build('EntropyStrategy', task='pose').candidate_passes()['main'].outputs == (
        'heatmaps',)
    assert build('RandomStrategy').candidate_passes() == {}
    core = build('CoreSetStrategy')
    assert core.candidate_passes()['main'].outputs == ('features',)
    assert core.labeled_passes()['main'].outputs == ('features',)
    dense = build('DensityWeightedStrategy')
    assert dense.candidate_passes()['main'].outputs == ('posteriors', 'features')
    assert build('LearningLossStrategy').labeled_passes() == {}


# ------------------------------------------------------------------ pose joints
def gaussian(size=16, center=(8, 8), sigma=1.0, peak=1.0):
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing='ij')
    d2 = (ys - center[0]) ** 2 + (xs - center[1]) ** 2
    return peak * torch.exp(-d2 / (2 * sigma ** 2))


def pose(heatmaps):
    return dict(num_samples=len(heatmaps), heatmaps=np.asarray(heatmaps, dtype=np.float32))


def test_pose_least_confidence_reads_the_heatmap_peak():
    strategy = build('LeastConfidenceStrategy', task='pose', aggregation='mean')
    heatmaps = torch.stack([torch.stack([gaussian(peak=0.9), gaussian(peak=0.7)]),
                            torch.stack([gaussian(peak=0.2), gaussian(peak=1.3)])])
    scores = strategy.scores(pose(heatmaps), {})
    # 1 - peak per joint (clipped to [0, 1]), mean over the two joints
    np.testing.assert_allclose(scores, [(0.1 + 0.3) / 2, (0.8 + 0.0) / 2], rtol=1e-5)


def test_pose_entropy_ranks_flat_heatmaps_above_sharp_ones():
    strategy = build('EntropyStrategy', task='pose', aggregation='max')
    sharp = gaussian(sigma=0.5)
    blurred = gaussian(sigma=4.0)
    heatmaps = torch.stack([torch.stack([sharp, sharp]),
                            torch.stack([sharp, blurred]),
                            torch.stack([sharp, torch.zeros(16, 16)])])
    scores = strategy.scores(pose(heatmaps), {})
    assert scores[2] == pytest.approx(1.0)  # a joint placed nowhere: uniform
    assert scores[2] > scores[1] > scores[0]
    # negative values (regression overshoot) carry no probability mass
    shifted = strategy.scores(pose(heatmaps[:1] - 0.01 * (heatmaps[:1] == 0)), {})
    np.testing.assert_allclose(shifted, scores[:1])


def test_margin_refuses_pose_naming_the_task_and_the_reason():
    with pytest.raises(ValueError, match=r'MarginStrategy does not apply to pose.*heatmap'):
        build('MarginStrategy', task='pose')
    with pytest.raises(ValueError, match=r'DensityWeightedStrategy does not apply to pose'):
        build('DensityWeightedStrategy', task='pose', uncertainty=dict(type='MarginStrategy'))
    for name in ('LeastConfidenceStrategy', 'EntropyStrategy', 'CoreSetStrategy',
                 'DensityWeightedStrategy', 'LearningLossDiversityStrategy'):
        build(name, task='pose')
        build(name, task='detection')


# ------------------------------------------------------------------- k-center
def test_k_center_picks_the_far_point_first():
    labeled = np.array([[0.0, 0.0], [0.1, 0.0]])
    candidates = np.array([[0.2, 0.1], [5.0, 5.0], [0.0, 0.3], [4.9, 4.9], [-3.0, 0.0]])
    picks = k_center_greedy(candidates, 3, np.random.default_rng(0), centers=labeled)
    # the farthest from the labeled set; then (4.9, 4.9) is covered by it, so the
    # next farthest is (-3, 0); then (0, 0.3), the least covered by everything so far
    assert list(picks) == [1, 4, 2]
    # without centers the first pick is the seed's, the second the farthest from it
    first, second = k_center_greedy(candidates, 2, np.random.default_rng(0))
    assert second == np.argmax(np.linalg.norm(candidates - candidates[first], axis=1))


def test_k_center_chunks_give_the_exact_answer():
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(37, 300)), rng.normal(size=(23, 300))
    brute = np.sqrt(((x[:, None] - c[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(min_distances(x, c, chunk_size=5).numpy(), brute, rtol=1e-4)
    big = k_center_greedy(x, 10, np.random.default_rng(1), centers=c)
    small = k_center_greedy(x, 10, np.random.default_rng(1), centers=c, chunk_size=4)
    assert list(big) == list(small)


def test_distances_are_computed_in_bounded_blocks(monkeypatch):
    shapes = []
    real_cdist = torch.cdist

    def spy(a, b, **kw):
        shapes.append((len(a), len(b)))
        return real_cdist(a, b, **kw)

    monkeypatch.setattr(torch, 'cdist', spy)
    rng = np.random.default_rng(0)
    k_center_greedy(rng.normal(size=(30, 8)), 5, rng, centers=rng.normal(size=(50, 8)),
                    chunk_size=7)
    assert len(shapes) > 5 and max(max(s) for s in shapes) <= 7  # never 30 x 50


def test_k_center_breaks_ties_by_the_seed_and_never_repeats():
    points = np.zeros((6, 3))  # all identical: every choice is a tie
    orders = {tuple(k_center_greedy(points, 6, np.random.default_rng(s))) for s in range(6)}
    assert len(orders) > 1 and all(sorted(o) == list(range(6)) for o in orders)
    again = k_center_greedy(points, 6, np.random.default_rng(3))
    assert tuple(again) == tuple(k_center_greedy(points, 6, np.random.default_rng(3)))
    with pytest.raises(ValueError, match='cannot pick 7 of 6'):
        k_center_greedy(points, 7, np.random.default_rng(0))


def test_core_set_scores_are_distances_to_the_labeled_set_and_it_picks_far_points():
    strategy = build('CoreSetStrategy')
    labeled = dict(num_samples=1, features=np.array([[0.0, 0.0]]))
    candidates = np.array([[1.0, 0.0], [10.0, 0.0], [10.0, 0.5], [0.0, -6.0]])
    order, scores = select(strategy, dict(num_samples=4, features=candidates), 2, labeled)
    np.testing.assert_allclose(scores, [1.0, 10.0, math.hypot(10, 0.5), 6.0], rtol=1e-6)
    assert list(order) == [2, 3]  # (10, 0) is covered by (10, 0.5)
    # a labeled set whose features are missing is refused (an empty one is the initial set's)
    with pytest.raises(ValueError, match='labeled-set outputs'):
        select(strategy, dict(num_samples=4, features=candidates), 2, dict(num_samples=1))


# -------------------------------------------------------------------- density
def test_mean_cosine_similarity_is_exact_in_chunks():
    x = np.random.default_rng(0).normal(size=(29, 17))
    x[3] = 0.0
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    brute = (unit @ unit.T).mean(1)
    np.testing.assert_allclose(mean_cosine_similarity(x, chunk_size=4).numpy(), brute,
                               atol=1e-12)


def test_density_weighting_demotes_an_isolated_outlier():
    # Four similar candidates and one outlier that is slightly more uncertain.
    features = np.array([[1.0, 0.1, 0.0], [1.0, 0.0, 0.1], [0.9, 0.1, 0.1], [1.0, 0.05, 0.05],
                         [0.0, 0.0, 1.0]])
    # one box each, least confidence 0.5, 0.4, 0.45, 0.3, 0.6 (background 0)
    boxes = [[[1 - u, u / 3, u / 3, u / 3]] for u in (0.5, 0.4, 0.45, 0.3, 0.6)]
    out = detection(boxes, features=features)
    plain = build('LeastConfidenceStrategy')
    assert select(plain, out, 1)[0][0] == 4
    dense = build('DensityWeightedStrategy', beta=1.0,
                  uncertainty=dict(type='LeastConfidenceStrategy'))
    order, scores = select(dense, out, 1)
    assert order[0] == 0 and np.argsort(scores)[0] == 4  # the outlier drops to last
    flat = build('DensityWeightedStrategy', beta=0.0,
                 uncertainty=dict(type='LeastConfidenceStrategy'))
    np.testing.assert_allclose(flat.scores(out, {}), plain.scores(out, {}))
    with pytest.raises(ValueError, match='weights an uncertainty score'):
        build('DensityWeightedStrategy', uncertainty=dict(type='LearningLossStrategy'))


# ----------------------------------------------------- learning loss + diversity
def test_learning_loss_diversity_spreads_the_top_predicted_losses():
    labeled = dict(num_samples=1, features=np.array([[0.0, 0.0]]))
    features = np.array([[5.0, 5.0], [5.0, 5.01], [-4.0, 3.0], [0.1, 0.0], [5.0, 4.99]])
    out = dict(num_samples=5, pred_loss=np.array([0.9, 0.95, 0.8, 0.1, 0.85]),
               features=features)
    plain, _ = select(build('LearningLossStrategy'), out, 2)
    assert set(plain) == {0, 1}  # near-duplicates
    picks, scores = select(build('LearningLossDiversityStrategy', m=2), out, 2, labeled)
    # shortlist = top 4 by loss {1, 0, 4, 2}; k-center keeps the farthest of the
    # near-duplicates from the labeled set, then (-4, 3)
    assert list(picks) == [1, 2]
    np.testing.assert_array_equal(scores, out['pred_loss'])
    same, _ = select(build('LearningLossDiversityStrategy', m=1), out, 2, labeled)
    assert set(same) == set(plain)
    with pytest.raises(ValueError, match='m=0.5'):
        build('LearningLossDiversityStrategy', m=0.5)


def test_random_needs_no_outputs_and_follows_the_seed():
    strategy = build('RandomStrategy')
    a = select(strategy, dict(num_samples=20), 5, seed=3)
    b = select(strategy, dict(num_samples=20), 5, seed=3)
    assert list(a[0]) == list(b[0]) and len(set(a[0])) == 5
    assert list(select(strategy, dict(num_samples=20), 5, seed=4)[0]) != list(a[0])
