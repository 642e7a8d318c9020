"""The comparison's numbers on hand-made curves with known answers."""
import numpy as np
import pytest

from mmal.compare import parse_strategy, plan_runs
from mmal.compare.report import Run, compare, to_csv, to_markdown
from mmal.compare.stats import (
    bootstrap_ci,
    labels_to_reach,
    mean_std,
    normalised_auc,
    paired_differences,
    t_interval,
)
from mmal.loop.ranking import pairwise_ranking_accuracy
from mmal.utils import ConfigError


def test_normalised_auc_is_the_curves_average_level():
    assert normalised_auc([100, 200, 300], [0.5, 0.5, 0.5]) == pytest.approx(0.5)
    # a straight line from 0.2 to 0.6 averages 0.4
    assert normalised_auc([100, 200, 300], [0.2, 0.4, 0.6]) == pytest.approx(0.4)
    # uneven steps: trapezoids weighted by their width
    assert normalised_auc([0, 100, 400], [0.0, 1.0, 1.0]) == pytest.approx((50 + 300) / 400)
    assert normalised_auc([100], [0.3]) == pytest.approx(0.3)
    with pytest.raises(ValueError, match='must not decrease'):
        normalised_auc([200, 100], [0.1, 0.2])
    # a cycle whose picks cost nothing in the unit (empty images in boxes): no width
    assert normalised_auc([0, 100, 100], [0.0, 1.0, 0.5]) == pytest.approx(0.5)


def test_labels_to_reach_interpolates_and_says_not_reached():
    x, y = [100, 200, 300, 400], [0.2, 0.4, 0.5, 0.6]
    assert labels_to_reach(x, y, 0.45) == pytest.approx(250.0)
    assert labels_to_reach(x, y, 0.4) == pytest.approx(200.0)
    assert labels_to_reach(x, y, 0.1) == pytest.approx(100.0)  # reached from the start
    assert labels_to_reach(x, y, 0.61) is None
    # a dip does not count as reaching: the first crossing is interpolated
    assert labels_to_reach([100, 200, 300], [0.3, 0.1, 0.5], 0.4) == pytest.approx(275.0)


def test_bootstrap_ci_covers_the_mean_and_shrinks_with_agreement():
    low, high = bootstrap_ci([0.01, 0.03, 0.02, 0.05, 0.04])
    assert low <= 0.03 <= high and low > 0          # all seeds agree: CI above zero
    low, high = bootstrap_ci([-0.05, 0.05, -0.04, 0.04])
    assert low < 0 < high                           # disagreeing seeds: CI spans zero
    with pytest.raises(ValueError, match='two'):
        bootstrap_ci([0.02])


def test_t_interval_is_wider_than_the_bootstrap_for_three_seeds():
    diffs = [0.001, 0.01, 0.02]
    low, high = bootstrap_ci(diffs)
    assert low > 0                                    # the percentile bootstrap is optimistic
    t_low, t_high = t_interval(diffs)
    assert t_low < 0 < t_high                         # the t-interval is not
    assert (t_low + t_high) / 2 == pytest.approx(np.mean(diffs))


def test_mean_std_and_paired_differences():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2)), 2)
    assert mean_std([1.0]) == (1.0, 0.0, 1)
    assert mean_std([None, float('nan'), 2.0])[2] == 1
    seeds, diffs = paired_differences({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.4, 2: 0.8})
    assert seeds == [0, 2] and diffs == pytest.approx([0.1, -0.1])


def test_pairwise_ranking_accuracy_perfect_reversed_random_and_ties():
    losses = np.arange(50, dtype=float)
    assert pairwise_ranking_accuracy(losses * 2 + 1, losses) == 1.0
    assert pairwise_ranking_accuracy(-losses, losses) == 0.0
    assert pairwise_ranking_accuracy(np.zeros(50), losses) == 0.5   # ties count one half
    rng = np.random.default_rng(0)
    big = rng.random(3000)
    assert abs(pairwise_ranking_accuracy(rng.random(3000), big) - 0.5) < 0.02
    # blocks give the same answer as one block
    scores = big + rng.normal(0, 0.3, size=3000)
    assert pairwise_ranking_accuracy(scores, big, chunk_size=7) == pytest.approx(
        pairwise_ranking_accuracy(scores, big, chunk_size=4096))
    # one discordant pair of three
    assert pairwise_ranking_accuracy([1, 3, 2], [1, 2, 3]) == pytest.approx(2 / 3)
    assert np.isnan(pairwise_ranking_accuracy([1, 2], [5, 5]))


def test_parse_strategy_names_options_and_refusals():
    assert parse_strategy('RandomStrategy') == ('RandomStrategy', dict(type='RandomStrategy'))
    assert parse_strategy('entropy_sum=EntropyStrategy:aggregation=sum,empty_score=0') == (
        'entropy_sum', dict(type='EntropyStrategy', aggregation='sum', empty_score=0))
    assert parse_strategy('EntropyStrategy:empty_score=0.0')[1]['empty_score'] == 0.0
    # the oracle is a diagnostic; a comparison is a benchmark and asks for it
    assert parse_strategy('OracleLossStrategy')[1] == dict(type='OracleLossStrategy',
                                                             diagnostic=True)
    with pytest.raises(ConfigError, match='key=value'):
        parse_strategy('EntropyStrategy:sum')
    with pytest.raises(ConfigError, match=r"--strategies 'EntropyStrateg': type='EntropyStrateg' "
                                          r"is not a strategy; did you mean \['EntropyStrategy'"):
        plan_runs(['EntropyStrateg'], [0])
    with pytest.raises(ConfigError, match='more than once'):
        plan_runs(['EntropyStrategy', 'EntropyStrategy:aggregation=sum'], [0])
    specs = plan_runs(['LearningLossStrategy', 'RandomStrategy'], [0, 1])
    assert [(s.name, s.seed) for s in specs] == [('LearningLossStrategy', 0),
                                                ('RandomStrategy', 0),
                                                ('LearningLossStrategy', 1),
                                                ('RandomStrategy', 1)]


def _run(name, seed, values, labeled=(100, 200, 300), rank=None):
    cycles = [dict(cycle=i, num_labeled=n, metrics={'pascal_voc/mAP': v},
                   ranking_accuracy=None if rank is None else dict(strategy=rank, num_samples=9))
              for i, (n, v) in enumerate(zip(labeled, values))]
    return Run(name, seed, None, True, cycles)


def test_compare_against_random_on_hand_made_curves():
    runs = [
        _run('RandomStrategy', 0, [0.2, 0.3, 0.4], rank=0.5),
        _run('RandomStrategy', 1, [0.2, 0.32, 0.4], rank=0.5),
        # 0.1 better than random after cycle 0 on both seeds
        _run('Better', 0, [0.2, 0.4, 0.5], rank=0.7),
        _run('Better', 1, [0.2, 0.42, 0.5], rank=0.8),
        _run('Worse', 0, [0.2, 0.25, 0.3]),
        _run('Worse', 1, [0.2, 0.25, 0.3]),
    ]
    result = compare(runs)
    assert result['metric'] == 'pascal_voc/mAP'
    assert list(result['strategies'])[0] == 'RandomStrategy'
    better = result['strategies']['Better']
    assert [p['mean'] for p in better['curve']] == pytest.approx([0.2, 0.41, 0.5])
    assert better['curve'][1]['std'] == pytest.approx(np.std([0.4, 0.42], ddof=1))
    # random's final mean 0.4: Better's mean curve crosses it between 100 (0.2)
    # and 200 (0.41) labels; random needed 300
    needed = 100 + 100 * (0.4 - 0.2) / (0.41 - 0.2)
    assert better['labels_to_reach_baseline'] == pytest.approx(needed)
    assert better['labels_saved'] == pytest.approx(300 - needed)
    assert result['strategies']['Worse']['labels_to_reach_baseline'] is None
    # AUC: random (0.2, 0.3, 0.4) -> 0.3; Better seed 0 (0.2, 0.4, 0.5) -> 0.375
    assert result['strategies']['RandomStrategy']['auc']['per_seed'][0] == pytest.approx(0.3)
    vs = better['vs_baseline']
    assert vs['auc']['per_seed'] == pytest.approx([0.075, 0.075])
    assert vs['final']['mean'] == pytest.approx(0.1) and vs['final']['ci'][0] > 0
    assert result['strategies']['Worse']['vs_baseline']['final']['ci'][1] < 0
    assert better['cycles'][0]['ranking_accuracy']['strategy']['mean'] == pytest.approx(0.75)
    md = to_markdown(result)
    assert '| Better | 2 |' in md and 'not reached' in md and '+105' in md
    assert 'Better,1,200,pascal_voc/mAP,0.41' in to_csv(result).replace(' ', '')


def test_summary_figures_use_finished_runs_and_the_cycles_they_all_have():
    runs = [
        _run('RandomStrategy', 0, [0.2, 0.3, 0.4]),
        _run('RandomStrategy', 1, [0.2, 0.3]),          # still running its last cycle
        _run('Better', 0, [0.2, 0.4, 0.5]),
        _run('Better', 1, [0.2, 0.4, 0.5]),
    ]
    runs[1].finished = False
    result = compare(runs)
    assert result['horizon'] == 3 and result['unfinished'] == ['RandomStrategy seed 1']
    random = result['strategies']['RandomStrategy']
    assert [p['n'] for p in random['curve']] == [2, 2, 1]   # per-cycle means keep all
    assert random['auc']['per_seed'] == {0: pytest.approx(0.3)}
    assert result['baseline_final'] == pytest.approx(0.4)
    final = result['strategies']['Better']['vs_baseline']['final']
    assert final['seeds'] == [0] and final['per_seed'] == pytest.approx([0.1])
    assert final['ci'] is None                                # one pair: no interval
    assert 'Runs not finished yet' in to_markdown(result)
    # while nothing has finished, every run counts up to the shortest
    for r in runs:
        r.finished = False
    result = compare(runs)
    assert result['horizon'] == 2 and result['baseline_final'] == pytest.approx(0.3)


def test_compare_refuses_runs_of_different_plans():
    runs = [_run('A', 0, [0.2, 0.3]), _run('A', 1, [0.2, 0.3], labeled=(100, 250))]
    with pytest.raises(ValueError, match='labeled count'):
        compare(runs)
