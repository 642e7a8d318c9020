"""TypiClust and ProbCover on hand-made clusters whose right picks are known.

Points are built near chosen directions of R^3 (the strategies compare
unit-length features): ``star(direction, offsets)`` puts one point on the
direction and the others at the given (u, v) offsets in its tangent plane.
"""
import numpy as np
import pytest

from mmal.registry import STRATEGIES
from mmal.strategies.kmeans import kmeans, unit_rows
from mmal.strategies.prob_cover import ball_graph, greedy_cover, purity_radius
from mmal.strategies.typiclust import typicality

DIRECTIONS = np.eye(3)[[0, 1, 2]].tolist() + [list(np.ones(3) / np.sqrt(3))]


def build(type_, task='detection', **kw):
    return STRATEGIES.build(dict(type=type_, **kw), default_args=dict(task=task))


def ring(count, radius, phase=0.0):
    angles = phase + 2 * np.pi * np.arange(count) / count
    return [(radius * np.cos(a), radius * np.sin(a)) for a in angles]


def star(direction, offsets):
    """The direction itself (row 0) and a point per tangent-plane offset."""
    d = np.asarray(direction, dtype=np.float64)
    d /= np.linalg.norm(d)
    u = np.cross(d, [0.3, 0.5, 0.8])
    u /= np.linalg.norm(u)
    v = np.cross(d, u)
    rows = [d] + [d + a * u + b * v for a, b in offsets]
    return np.stack([r / np.linalg.norm(r) for r in rows]).astype(np.float32)


def outputs(*groups):
    features = np.concatenate(groups)
    return dict(num_samples=len(features), features=features)


def start_of(groups, g):
    return sum(len(x) for x in groups[:g])


# ------------------------------------------------------------------ TypiClust
def dense_group(direction, outer):
    """A centre, 5 points close around it, ``outer`` points far from it: the centre is
    the densest point (its 5 nearest at 0.02, the others' 0.02 to 0.04 away)."""
    return star(direction, ring(5, 0.02) + ring(outer, 0.3, phase=0.3))


def test_typiclust_picks_the_densest_point_of_each_cluster_biggest_first():
    groups = [dense_group(DIRECTIONS[1], 2), dense_group(DIRECTIONS[0], 6),
              dense_group(DIRECTIONS[2], 0)]  # 8, 12 and 6 points
    for seed in range(3):
        picks, scores = build('TypiClustStrategy').select(
            outputs(*groups), dict(num_samples=0), 3, np.random.default_rng(seed))
        # each cluster's centre, the 12-point cluster first, then 8, then 6
        assert list(picks) == [start_of(groups, 1), start_of(groups, 0), start_of(groups, 2)]
        assert scores.shape == (26,) and np.all(np.isfinite(scores))


def test_typiclust_uses_a_cluster_of_outliers_last():
    groups = [star(DIRECTIONS[3], ring(2, 0.02)),  # 3 points: not above min_cluster_size
              dense_group(DIRECTIONS[0], 0), dense_group(DIRECTIONS[1], 0)]
    picks, _ = build('TypiClustStrategy').select(outputs(*groups), dict(num_samples=0), 3,
                                                 np.random.default_rng(0))
    assert set(picks[:2]) == {start_of(groups, 1), start_of(groups, 2)}
    assert picks[2] >= 3  # a big cluster again, as the paper's code drops small ones
    # without the cut, the uncovered small cluster comes before a second round
    picks, _ = build('TypiClustStrategy', min_cluster_size=0).select(
        outputs(*groups), dict(num_samples=0), 3, np.random.default_rng(0))
    assert set(picks[:2]) == {start_of(groups, 1), start_of(groups, 2)}
    assert picks[2] < 3


def test_typiclust_skips_the_clusters_the_labeled_set_covers():
    groups = [dense_group(DIRECTIONS[0], 6), dense_group(DIRECTIONS[1], 2),
              dense_group(DIRECTIONS[2], 0)]
    labeled = dict(num_samples=1, features=star(DIRECTIONS[0], [])[:1])
    picks, _ = build('TypiClustStrategy').select(outputs(*groups), labeled, 2,
                                                 np.random.default_rng(0))
    # the biggest cluster holds a labeled sample: the next two clusters' centres
    assert list(picks) == [start_of(groups, 1), start_of(groups, 2)]


def test_typiclust_breaks_ties_between_equal_clusters_by_the_generator():
    groups = [dense_group(DIRECTIONS[0], 2), dense_group(DIRECTIONS[1], 2),
              dense_group(DIRECTIONS[2], 2)]
    labeled = dict(num_samples=1, features=star(DIRECTIONS[0], [])[:1])
    orders = set()
    for seed in range(12):
        picks, _ = build('TypiClustStrategy').select(outputs(*groups), labeled, 2,
                                                     np.random.default_rng(seed))
        assert set(picks) == {start_of(groups, 1), start_of(groups, 2)}
        orders.add(tuple(picks))
    assert len(orders) == 2
    # and the same seed gives the same picks
    again = [build('TypiClustStrategy').select(outputs(*groups), labeled, 2,
                                               np.random.default_rng(5))[0] for _ in range(2)]
    assert list(again[0]) == list(again[1])


def test_typiclust_revisits_clusters_when_picks_outnumber_them():
    groups = [dense_group(DIRECTIONS[0], 6), dense_group(DIRECTIONS[1], 6)]
    picks, _ = build('TypiClustStrategy', max_clusters=2).select(
        outputs(*groups), dict(num_samples=0), 4, np.random.default_rng(0))
    assert len(set(picks)) == 4
    assert sorted(p // 12 for p in picks) == [0, 0, 1, 1]
    assert {picks[0], picks[1]} == {0, 12}  # the centres before the second round


def test_typicality_is_the_inverse_mean_distance_to_the_nearest_neighbours():
    x = np.random.default_rng(0).normal(size=(15, 4)).astype(np.float32)
    import torch
    got = typicality(torch.as_tensor(x), k_neighbors=20, chunk_size=4)
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    k = 7  # min(20, 15 // 2)
    want = 1 / (np.sort(dist, axis=1)[:, :k].mean(axis=1) + 1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert typicality(torch.as_tensor(x[:1])).tolist() == [0.0]


def test_kmeans_finds_separated_groups_and_is_seeded():
    import torch
    groups = [dense_group(d, 6) for d in DIRECTIONS]
    x = unit_rows(np.concatenate(groups))
    labels = kmeans(x, 4, np.random.default_rng(3))
    for g in range(4):
        assert len(set(labels[12 * g:12 * (g + 1)])) == 1
    assert len(set(labels)) == 4
    np.testing.assert_array_equal(kmeans(x, 4, np.random.default_rng(3)), labels)
    # more clusters than groups: none is left empty
    assert len(set(kmeans(x, 40, np.random.default_rng(0)))) == 40
    assert torch.isfinite(x).all()


@pytest.mark.parametrize('kw,match', [
    (dict(k_neighbors=0), 'k_neighbors=0 must be an integer >= 1'),
    (dict(max_clusters=1.5), 'max_clusters=1.5'),
])
def test_typiclust_refuses_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        build('TypiClustStrategy', **kw)


# ------------------------------------------------------------------ ProbCover
def cover_groups():
    """A: a centre with 6 points at 0.15 (hexagon side 0.15: neighbours cover each other)
    and a twin 0.03 from the centre that covers the same; B: a centre with 4 at 0.15 on a
    cross (0.21 apart); C: two points 0.1 apart. With delta 0.2 the centre of A and its
    twin cover 8, B's centre 5, anything else fewer."""
    a = star(DIRECTIONS[0], ring(6, 0.15) + [(0.02, 0.02)])
    b = star(DIRECTIONS[1], ring(4, 0.15))
    c = star(DIRECTIONS[2], [(0.1, 0.0)])
    return [a, b, c]


def test_prob_cover_picks_the_ball_covering_the_most_then_the_most_left():
    groups = cover_groups()
    firsts = set()
    for seed in range(12):
        picks, scores = build('ProbCoverStrategy', delta=0.2).select(
            outputs(*groups), dict(num_samples=0), 3, np.random.default_rng(seed))
        # A's centre or its twin (a tie), then B's centre: the twin covers nothing
        # new once the other is picked (its covered points' edges are gone)
        assert picks[0] in (0, 7) and picks[1] == start_of(groups, 1)
        assert start_of(groups, 2) <= picks[2]  # then C
        firsts.add(int(picks[0]))
        assert scores[0] == scores[7] == 8 and scores[start_of(groups, 1)] == 5
    assert firsts == {0, 7}  # the tie is the generator's


def test_prob_cover_skips_balls_the_labeled_set_covers():
    groups = cover_groups()
    labeled = dict(num_samples=1, features=star(DIRECTIONS[0], [])[:1])
    picks, scores = build('ProbCoverStrategy', delta=0.2).select(
        outputs(*groups), labeled, 2, np.random.default_rng(0))
    assert picks[0] == start_of(groups, 1) and start_of(groups, 2) <= picks[1]
    assert scores[0] == 0  # A's centre covers nothing the labeled sample does not


def test_prob_cover_draws_the_rest_once_everything_is_covered():
    groups = cover_groups()
    picks, _ = build('ProbCoverStrategy', delta=0.2).select(
        outputs(*groups), dict(num_samples=0), 15, np.random.default_rng(0))
    assert sorted(picks) == list(range(15))


def test_ball_graph_and_greedy_cover_agree_with_brute_force():
    import torch
    x = unit_rows(np.random.default_rng(1).normal(size=(30, 3)))
    graph = ball_graph(x, 0.8, chunk_size=7).toarray()
    dist = torch.cdist(x, x).numpy()
    np.testing.assert_array_equal(graph, ((dist < 0.8) | np.eye(30, dtype=bool)).astype(int))
    picks, scores = greedy_cover(ball_graph(x, 0.8), 25, 5, np.random.default_rng(0))
    covered = graph[25:].any(axis=0)
    np.testing.assert_array_equal(scores, graph[:25] @ ~covered)
    for p in picks:  # each pick covers the most of what is left
        gain = graph[:25] @ ~covered
        assert gain[p] == gain[[q for q in range(25) if q not in picks[:list(picks).index(p)]]
                               ].max()
        covered |= graph[p].astype(bool)


def test_prob_cover_purity_radius_keeps_the_balls_inside_one_cluster():
    groups = cover_groups()
    x = unit_rows(np.concatenate(groups))
    cluster = np.repeat([0, 1, 2], [len(g) for g in groups])
    radius = purity_radius(x, cluster, purity=1.0)
    dist = np.linalg.norm(x.numpy()[:, None] - x.numpy()[None], axis=-1)
    other = cluster[:, None] != cluster[None]
    assert radius == pytest.approx(dist[other].min(), rel=1e-5)
    # a lower purity allows a larger radius, the delta='purity' option uses it
    assert purity_radius(x, cluster, purity=0.5) >= radius
    strategy = build('ProbCoverStrategy', delta='purity', purity_clusters=3)
    picks, _ = strategy.select(outputs(*groups), dict(num_samples=0), 3,
                               np.random.default_rng(0))
    assert 0 < strategy.last_delta <= 2 and len(set(picks)) == 3


def test_prob_cover_refuses_a_radius_whose_graph_holds_most_pairs():
    groups = cover_groups()
    with pytest.raises(ValueError, match=r"delta=1.9 puts more than 100 pairs of the 15 .*"
                                         r"delta='purity', purity_clusters=C"):
        build('ProbCoverStrategy', delta=1.9, max_edges=100).select(
            outputs(*groups), dict(num_samples=0), 2, np.random.default_rng(0))


@pytest.mark.parametrize('kw,match', [
    (dict(delta=0), r'delta=0 must be a radius in \(0, 2\]'),
    (dict(delta='purity'), "delta='purity' needs purity_clusters"),
    (dict(purity=1.5), r'purity=1.5 must lie in \(0, 1\]'),
])
def test_prob_cover_refuses_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        build('ProbCoverStrategy', **kw)
