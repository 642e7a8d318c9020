"""How well a strategy's scores order the candidates' true losses (the paper's Fig. 5).

After a cycle's selection, a fixed random sample of the candidates is run
once more through the cycle's model with labels: their true target losses
(the per-sample loss the ranking loss trains on) are compared pair by pair
with the scores of the running strategy, of Learning Loss (the module's
prediction) and of entropy (the uncertainty baseline the paper plots
beside it). Only benchmarks can do this: it reads the candidates' labels,
which the selection never sees.
"""
import numpy as np


def pairwise_ranking_accuracy(scores: np.ndarray, losses: np.ndarray,
                              chunk_size: int = 2048) -> float:
    """Fraction of pairs whose score order matches the order of their true losses.

    Pairs with equal true losses are left out; a pair with equal scores
    counts one half (a coin flip of the tie-breaker), so constant scores give
    0.5, perfectly ordered scores 1.0 and reversed ones 0.0; this is
    ``(1 + Kendall's tau-a over the untied pairs) / 2``. Samples with a
    non-finite score or loss are left out. NaN when every true loss is
    equal. Computed in blocks of ``chunk_size`` rows.
    """
    scores = np.asarray(scores, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    if scores.shape != losses.shape or scores.ndim != 1:
        raise ValueError(f'scores {scores.shape} and losses {losses.shape} must be two '
                         'vectors of one length')
    keep = np.isfinite(scores) & np.isfinite(losses)
    scores, losses = scores[keep], losses[keep]
    agree = pairs = 0.0
    for start in range(0, len(scores), chunk_size):
        rows = slice(start, start + chunk_size)
        true_order = np.sign(losses[rows, None] - losses[None, :])
        score_order = np.sign(scores[rows, None] - scores[None, :])
        # Each unordered pair appears twice (i, j) and (j, i): symmetric, so
        # counting both halves gives the same fraction.
        valid = true_order != 0
        pairs += valid.sum()
        agree += (score_order == true_order)[valid].sum() + 0.5 * (score_order == 0)[valid].sum()
    return float(agree / pairs) if pairs else float('nan')


def ranking_sample(num_candidates: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions (into the candidates) of the fixed random ranking sample."""
    size = min(size, num_candidates)
    return np.sort(rng.choice(num_candidates, size=size, replace=False))
