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
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..strategies import EntropyStrategy
from ..strategies.base import collect_per_sample

#: The reference scorers, by the strategy each stands for.
REFERENCE_SCORES = ('LearningLossStrategy', 'EntropyStrategy')


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


def reference_scores_and_losses(model: nn.Module, dataloader: DataLoader, num_samples: int,
                                task: str) -> dict[str, np.ndarray] | None:
    """True target losses and the reference strategies' scores of the given samples.

    ``task`` (``'detection'``, ``'pose'``) chooses entropy's measurement.
    A model whose head entropy cannot read (a sigmoid detection head) gets
    no entropy reference.

    Returns:
        dict | None: ``'target_loss'`` and one array per name of
        :data:`REFERENCE_SCORES`, each ``(N,)`` in dataset order, on rank 0;
        None on other ranks.
    """
    entropy = EntropyStrategy()
    entropy.check_task(task)
    inner = model.module if hasattr(model, 'module') else model
    with_entropy = getattr(inner, 'head_outputs_supported', True)
    outputs = ('target_loss', 'pred_loss', *(entropy.score_outputs if with_entropy else ()))

    def per_sample(out: dict) -> list[tuple[float, ...]]:
        columns = [out['target_loss'].float(), out['pred_loss'].float()]
        if with_entropy:
            columns.append(entropy.score_batch(out).float())
        return [tuple(r) for r in torch.stack(columns, dim=1).cpu().tolist()]

    gathered = collect_per_sample(model, dataloader, num_samples, outputs, per_sample,
                                  user='the ranking evaluation')
    if gathered is None:
        return None
    table = np.asarray(gathered, dtype=np.float64).reshape(len(gathered), -1)
    result = dict(target_loss=table[:, 0], LearningLossStrategy=table[:, 1])
    if with_entropy:
        result['EntropyStrategy'] = table[:, 2]
    return result

