"""Numbers that say whether a strategy saves labels: pure functions of curves.

A curve is a metric against the number of labeled samples, one point per
cycle. Everything here takes plain arrays, so each figure can be checked on
hand-made curves with known answers.
"""
from collections.abc import Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count, NaNs left out."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return float('nan'), float('nan'), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, int(len(v))


def normalised_auc(labeled: Sequence[float], metric: Sequence[float]) -> float:
    """Area under the curve (trapezoids) divided by its labeled range (samples or cost).

    The result is in the metric's own units: the curve's average level over
    the budget, so 0.5 means "as good as a flat 0.5 everywhere". A single
    point is its own value.
    """
    x = np.asarray(labeled, dtype=np.float64)
    y = np.asarray(metric, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError(f'labeled {x.shape} and metric {y.shape} must be non-empty vectors '
                         'of one length')
    # Equal neighbours are allowed: a cycle whose picks cost nothing in the unit
    # (empty images counted in boxes) adds a zero-width step.
    if np.any(np.diff(x) < 0):
        raise ValueError(f'labeled costs must not decrease, got {x.tolist()}')
    if len(x) == 1 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def labels_to_reach(labeled: Sequence[float], metric: Sequence[float],
                    target: float) -> float | None:
    """Labeled samples at which the curve first reaches ``target``, linearly interpolated.

    None when it never does ("not reached" within the budget).
    """
    x = np.asarray(labeled, dtype=np.float64)
    y = np.asarray(metric, dtype=np.float64)
    for i in range(len(x)):
        if y[i] >= target:
            if i == 0 or not np.isfinite(y[i - 1]):
                return float(x[i])
            frac = (target - y[i - 1]) / (y[i] - y[i - 1])
            return float(x[i - 1] + frac * (x[i] - x[i - 1]))
    return None


def bootstrap_ci(differences: Sequence[float], confidence: float = 0.95,
                 num_resamples: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of paired differences.

    With very few seeds the percentile bootstrap is optimistic (three
    differences of one sign give an interval that excludes 0 however
    spread they are): read it beside :func:`t_interval`. Needs two
    differences at least.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError('need at least two paired differences for an interval')
    if not 0 < confidence < 1:
        raise ValueError(f'confidence={confidence} must lie in (0, 1)')
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(num_resamples, len(d)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_differences(strategy: dict[int, float], baseline: dict[int, float]
                       ) -> tuple[list[int], list[float]]:
    """Per-seed differences ``strategy - baseline`` over the seeds both have."""
    seeds = sorted(set(strategy) & set(baseline))
    return seeds, [strategy[s] - baseline[s] for s in seeds]


def t_interval(differences: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of paired differences (n >= 2).

    The honest interval for a handful of seeds: it widens with the spread
    and with how few seeds there are.
    """
    from scipy import stats as scipy_stats
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError('need at least two paired differences for an interval')
    half = scipy_stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def finite(values: dict) -> dict:
    """The entries of ``values`` whose value is a finite number."""
    return {k: v for k, v in values.items() if v is not None and np.isfinite(v)}
