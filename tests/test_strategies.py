"""Every strategy on small hand-built inputs whose right answer is known."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from mmal.registry import STRATEGIES
from mmal.strategies import k_center_greedy, min_distances
from mmal.strategies.density_weighted import mean_cosine_similarity
from mmal.strategies.entropy import normalised_entropy
from mmal.strategies.uncertainty import flatten_class_logits

UNCERTAINTY = ('LeastConfidenceStrategy', 'MarginStrategy', 'EntropyStrategy')


def build(type_, task='detection', **kw):
    strategy = STRATEGIES.build(dict(type=type_, **kw))
    strategy.check_task(task)
    return strategy


def ssd_outputs(box_logits: torch.Tensor) -> tuple:
    """SSD-style head outputs: one level, one location, A anchors.

    Args:
        box_logits: ``(B, A, C + 1)`` logits, background last.
    """
    b, a, c1 = box_logits.shape
    cls = box_logits.reshape(b, a * c1, 1, 1)
    return ([cls], [torch.zeros(b, a * 4, 1, 1)])


def peaked(c1=4, cls=0, strength=10.0):
    logits = torch.zeros(c1)
    logits[cls] = strength
    return logits


UNIFORM = torch.zeros(4)
BACKGROUND = peaked(cls=3)  # confidently background: no candidate box


# ------------------------------------------------------------------ registry
@pytest.mark.parametrize('name', [*UNCERTAINTY, 'CoreSetStrategy', 'DensityWeightedStrategy',
                                  'LearningLossDiversityStrategy', 'LearningLossStrategy',
                                  'RandomStrategy'])
def test_every_strategy_is_registered_and_buildable(name):
    strategy = STRATEGIES.build(dict(type=name))
    assert type(strategy).__name__ == name


# ---------------------------------------------------------- detection boxes
@pytest.mark.parametrize('name', UNCERTAINTY)
def test_uniform_posteriors_rank_above_peaked_ones(name):
    strategy = build(name)
    logits = torch.stack([torch.stack([UNIFORM, UNIFORM]),
                          torch.stack([peaked(cls=0), peaked(cls=1)]),
                          torch.stack([peaked(cls=2, strength=1.0), peaked(cls=0)])])
    scores = strategy.score_batch(dict(head_outputs=ssd_outputs(logits)))
    assert scores.shape == (3,)
    assert scores[0] > scores[2] > scores[1]
    order = strategy.select(scores.numpy().astype(float), 3, np.random.default_rng(0))
    assert list(order) == [0, 2, 1]


def test_box_measures_have_the_textbook_values():
    p = torch.tensor([0.5, 0.3, 0.2])
    assert build('LeastConfidenceStrategy').box_uncertainty(p) == pytest.approx(0.5)
    assert build('MarginStrategy').box_uncertainty(p) == pytest.approx(1 - (0.5 - 0.3))
    entropy = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2)) / math.log(3)
    assert build('EntropyStrategy').box_uncertainty(p) == pytest.approx(entropy)
    assert normalised_entropy(torch.full((4,), 0.25)) == pytest.approx(1.0)
    assert normalised_entropy(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(0.0)


@pytest.mark.parametrize('aggregation,expected', [('max', 0.75), ('mean', (0.75 + 0.2) / 2),
                                                  ('sum', 0.75 + 0.2)])
def test_boxes_aggregate_per_image_by_max_mean_or_sum(aggregation, expected):
    strategy = build('LeastConfidenceStrategy', aggregation=aggregation)
    confident = torch.log(torch.tensor([0.8, 0.1, 0.05, 0.05]))  # 1 - max p = 0.2
    logits = torch.stack([UNIFORM, confident, BACKGROUND]).unsqueeze(0)  # 3rd: no box
    score = strategy.score_batch(dict(head_outputs=ssd_outputs(logits)))
    assert score.item() == pytest.approx(expected, rel=1e-5)


def test_boxes_are_the_top_anchors_by_foreground_before_nms():
    # Two boxes on the same spot would be one after NMS; before NMS both count.
    sure = torch.log(torch.tensor([0.9, 0.05, 0.03, 0.02]))
    unsure = torch.log(torch.tensor([0.3, 0.25, 0.2, 0.25]))
    logits = torch.stack([sure, unsure, unsure]).unsqueeze(0)
    out = ssd_outputs(logits)
    strategy = build('LeastConfidenceStrategy', aggregation='sum')
    assert strategy.score_batch(dict(head_outputs=out)).item() == pytest.approx(0.1 + 0.7 + 0.7)
    # num_boxes keeps the most confident foreground anchors only
    strategy = build('LeastConfidenceStrategy', aggregation='sum', num_boxes=1)
    assert strategy.score_batch(dict(head_outputs=out)).item() == pytest.approx(0.1)
    # score_thr drops the anchors whose foreground confidence is below it
    strategy = build('LeastConfidenceStrategy', aggregation='sum', score_thr=0.5)
    assert strategy.score_batch(dict(head_outputs=out)).item() == pytest.approx(0.1)


@pytest.mark.parametrize('name,maximum', [('LeastConfidenceStrategy', 0.75),
                                          ('MarginStrategy', 1.0), ('EntropyStrategy', 1.0)])
@pytest.mark.parametrize('aggregation', ['max', 'mean', 'sum'])
def test_an_image_with_no_candidate_box_gets_the_empty_score(name, maximum, aggregation):
    logits = torch.stack([torch.stack([BACKGROUND, BACKGROUND]),
                          torch.stack([UNIFORM, BACKGROUND])])
    out = dict(head_outputs=ssd_outputs(logits))
    # default: one box with a uniform posterior, the measure's maximum
    scores = build(name, aggregation=aggregation).score_batch(out)
    assert scores[0].item() == pytest.approx(maximum)
    assert scores[1].item() == pytest.approx(maximum)  # one uniform box, whatever the rule
    scores = build(name, aggregation=aggregation, empty_score=-1.0).score_batch(out)
    assert scores[0].item() == -1.0 and torch.isfinite(scores).all()


def test_class_logits_are_flattened_in_mmdet_anchor_order():
    b, c1 = 2, 3
    level0 = torch.arange(b * 2 * c1 * 2 * 1, dtype=torch.float32).reshape(b, 2 * c1, 2, 1)
    level1 = torch.randn(b, 3 * c1, 1, 1)
    flat = flatten_class_logits([level0, level1],
                                [torch.zeros(b, 8, 2, 1), torch.zeros(b, 12, 1, 1)])
    assert flat.shape == (b, 2 * 2 + 3, c1)
    # mmdet: permute(0, 2, 3, 1).reshape(B, -1, C + 1): location-major, then anchor
    torch.testing.assert_close(flat[1, 3], level0[1, c1:2 * c1, 1, 0])
    torch.testing.assert_close(flat[0, 4:], level1[0, :, 0, 0].reshape(3, c1))
    with pytest.raises(ValueError, match='disagree on the number of classes'):
        flatten_class_logits([level0, torch.zeros(b, 8, 1, 1)],
                             [torch.zeros(b, 8, 2, 1), torch.zeros(b, 16, 1, 1)])
    with pytest.raises(ValueError, match='not A\\*\\(C\\+1\\) and A\\*4'):
        flatten_class_logits([torch.zeros(b, 7, 1, 1)], [torch.zeros(b, 8, 1, 1)])


def test_bad_uncertainty_settings_are_refused():
    with pytest.raises(ValueError, match="aggregation='median'"):
        STRATEGIES.build(dict(type='EntropyStrategy', aggregation='median'))
    with pytest.raises(ValueError, match='empty_score'):
        STRATEGIES.build(dict(type='EntropyStrategy', empty_score='min'))
    with pytest.raises(RuntimeError, match='check_task'):
        STRATEGIES.build(dict(type='EntropyStrategy')).score_batch(
            dict(head_outputs=ssd_outputs(UNIFORM[None, None])))


# ------------------------------------------------------------------ pose joints
def gaussian(size=16, center=(8, 8), sigma=1.0, peak=1.0):
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing='ij')
    d2 = (ys - center[0]) ** 2 + (xs - center[1]) ** 2
    return peak * torch.exp(-d2 / (2 * sigma ** 2))


def test_pose_least_confidence_reads_the_heatmap_peak():
    strategy = build('LeastConfidenceStrategy', task='pose', aggregation='mean')
    heatmaps = torch.stack([torch.stack([gaussian(peak=0.9), gaussian(peak=0.7)]),
                            torch.stack([gaussian(peak=0.2), gaussian(peak=1.3)])])
    scores = strategy.score_batch(dict(head_outputs=heatmaps))
    # 1 - peak per joint (clipped to [0, 1]), mean over the two joints
    torch.testing.assert_close(scores, torch.tensor([(0.1 + 0.3) / 2, (0.8 + 0.0) / 2]))


def test_pose_entropy_ranks_flat_heatmaps_above_sharp_ones():
    strategy = build('EntropyStrategy', task='pose', aggregation='max')
    sharp = gaussian(sigma=0.5)
    blurred = gaussian(sigma=4.0)
    heatmaps = torch.stack([torch.stack([sharp, sharp]),
                            torch.stack([sharp, blurred]),
                            torch.stack([sharp, torch.zeros(16, 16)])])
    scores = strategy.score_batch(dict(head_outputs=heatmaps))
    assert scores[2] == pytest.approx(1.0)  # a joint placed nowhere: uniform
    assert scores[2] > scores[1] > scores[0]
    # negative values (regression overshoot) carry no probability mass
    shifted = strategy.score_batch(dict(head_outputs=heatmaps[:1] - 0.01 * (heatmaps[:1] == 0)))
    torch.testing.assert_close(shifted, scores[:1])
    # a multi-stage head: the last stage is read
    staged = strategy.score_batch(dict(head_outputs=[torch.zeros_like(heatmaps), heatmaps]))
    torch.testing.assert_close(staged, scores)


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
    labeled = np.array([[0.0, 0.0]])
    candidates = np.array([[1.0, 0.0], [10.0, 0.0], [10.0, 0.5], [0.0, -6.0]])
    scores = strategy.scores_from(None, candidates, labeled)
    np.testing.assert_allclose(scores, [1.0, 10.0, math.hypot(10, 0.5), 6.0], rtol=1e-6)
    picks = strategy.select(scores, 2, np.random.default_rng(0), features=candidates,
                            labeled_features=labeled)
    assert list(picks) == [2, 3]  # (10, 0) is covered by (10, 0.5)
    with pytest.raises(ValueError, match='labeled set'):
        strategy.select(scores, 2, np.random.default_rng(0))


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
    uncertainty = np.array([0.5, 0.4, 0.45, 0.3, 0.6])
    plain = build('EntropyStrategy')
    assert plain.select(uncertainty, 1, np.random.default_rng(0))[0] == 4
    dense = build('DensityWeightedStrategy', beta=1.0)
    scores = dense.scores_from(uncertainty, features, None)
    assert dense.select(scores, 1, np.random.default_rng(0))[0] == 0
    assert np.argsort(scores)[0] == 4  # the outlier drops to last
    flat = build('DensityWeightedStrategy', beta=0.0)
    np.testing.assert_allclose(flat.scores_from(uncertainty, features, None), uncertainty)
    with pytest.raises(ValueError, match='weights an uncertainty score'):
        STRATEGIES.build(dict(type='DensityWeightedStrategy',
                              uncertainty=dict(type='LearningLossStrategy')))


# ----------------------------------------------------- learning loss + diversity
def test_learning_loss_diversity_spreads_the_top_predicted_losses():
    labeled = np.array([[0.0, 0.0]])
    features = np.array([[5.0, 5.0], [5.0, 5.01], [-4.0, 3.0], [0.1, 0.0], [5.0, 4.99]])
    pred_loss = np.array([0.9, 0.95, 0.8, 0.1, 0.85])
    plain = build('LearningLossStrategy').select(pred_loss, 2, np.random.default_rng(0))
    assert set(plain) == {0, 1}  # near-duplicates
    diverse = build('LearningLossDiversityStrategy', m=2)
    picks = diverse.select(pred_loss, 2, np.random.default_rng(0), features=features,
                           labeled_features=labeled)
    # shortlist = top 4 by loss {1, 0, 4, 2}; k-center keeps the farthest of the
    # near-duplicates from the labeled set, then (-4, 3)
    assert list(picks) == [1, 2]
    same = build('LearningLossDiversityStrategy', m=1).select(
        pred_loss, 2, np.random.default_rng(0), features=features, labeled_features=labeled)
    assert set(same) == set(plain)
    with pytest.raises(ValueError, match='m=0.5'):
        STRATEGIES.build(dict(type='LearningLossDiversityStrategy', m=0.5))


# ------------------------------------------------------- the shared scoring pass
class FakeModel(nn.Module):
    """A model with ``score_step``: features = the input, heatmaps from it."""

    def __init__(self):
        super().__init__()
        self.calls = []
        self.layer = nn.Linear(1, 1)

    def score_step(self, data, outputs):
        self.calls.append((tuple(outputs), self.training, torch.is_grad_enabled()))
        x = data['x']
        out = {}
        if 'features' in outputs:
            out['features'] = x
        if 'head_outputs' in outputs:
            out['head_outputs'] = x[:, :, None, None].expand(-1, -1, 4, 4) * \
                torch.linspace(0, 1, 16).reshape(1, 1, 4, 4)
        if 'pred_loss' in outputs:
            out['pred_loss'] = x.sum(1)
        return out


def test_one_test_mode_no_grad_pass_serves_outputs_and_features():
    model = FakeModel().train()
    x = torch.rand(7, 3) + 0.1
    loader = [dict(x=x[i:i + 3]) for i in range(0, 7, 3)]
    strategy = build('DensityWeightedStrategy', task='pose',
                     uncertainty=dict(type='LeastConfidenceStrategy'))
    scores, features = strategy.score_candidates(model, loader, 7, np.random.default_rng(0))
    assert model.calls == [(('head_outputs', 'features'), False, False)] * 3
    assert model.training  # restored
    np.testing.assert_allclose(features, x.numpy(), rtol=1e-6)
    assert scores.shape == (7,) and np.isfinite(scores).all()
    # the labeled set: features only
    model.calls.clear()
    labeled = strategy.pooled_features(model, loader[:1], 3)
    assert model.calls == [(('features',), False, False)] and labeled.shape == (3, 3)
    ll = build('LearningLossDiversityStrategy')
    scores, features = ll.score_candidates(model, loader, 7, np.random.default_rng(0))
    np.testing.assert_allclose(scores, x.sum(1).numpy(), rtol=1e-6)
    assert features.shape == (7, 3)
    core = build('CoreSetStrategy')
    model.calls.clear()
    scores, _ = core.score_candidates(model, loader, 7, np.random.default_rng(0),
                                      labeled_features=labeled)
    assert [c[0] for c in model.calls] == [('features',)] * 3
    assert np.allclose(scores[:3], 0.0, atol=1e-3) and (scores[3:] > 0).all()
