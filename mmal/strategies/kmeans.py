"""k-means (Lloyd, k-means++ start) on feature rows, for the typicality strategies.

scikit-learn is not among MMAL's dependencies, and scipy's ``kmeans2`` runs
a fixed number of iterations and keeps an empty cluster's stale centre, so
the few lines are written here: deterministic for a given generator (every
random choice is drawn from it) and memory-bounded by blocks of rows.
"""
import numpy as np
import torch
from torch import Tensor

from .base import labeled_rows, require
from .k_center import DEFAULT_CHUNK_SIZE, _Rows


def unit_rows(features: np.ndarray | Tensor, name: str = 'features',
              chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    """``(N, D)`` float32 rows scaled to unit length (a zero row stays zero).

    Refuses non-finite rows, naming ``name``. The typicality strategies
    compare directions: the papers' distances are between L2-normalised
    embeddings, so a large activation does not make an image far from all.
    """
    rows = _Rows(features, name, chunk_size)
    out = torch.empty(len(rows), rows.dim)
    for start in range(0, len(rows), chunk_size):
        out[start:start + chunk_size] = torch.nn.functional.normalize(
            rows.block(start, start + chunk_size), dim=1)
    return out


def candidate_and_labeled_rows(strategy, candidate_outputs: dict, labeled_outputs: dict,
                               k: int, chunk_size: int) -> tuple[Tensor, Tensor]:
    """The candidates' and the labeled set's features as unit rows (labeled: maybe 0 rows).

    Raises:
        ValueError: For ``k`` outside ``[0, N]`` or rows of two widths, naming ``strategy``.
    """
    name = type(strategy).__name__
    require(strategy, candidate_outputs, 'features')
    candidates = unit_rows(candidate_outputs['features'], 'candidate features', chunk_size)
    if not 0 <= k <= len(candidates):
        raise ValueError(f'{name}: cannot select {k} of {len(candidates)} candidates')
    labeled = labeled_rows(strategy, labeled_outputs)
    labeled = (torch.zeros(0, candidates.shape[1]) if labeled is None else
               unit_rows(labeled, 'labeled-set features', chunk_size))
    if labeled.shape[1] != candidates.shape[1]:
        raise ValueError(f'{name}: candidate features have {candidates.shape[1]} dimensions, '
                         f'labeled ones {labeled.shape[1]}')
    return candidates, labeled


def squared_distances(x: Tensor, centers: Tensor) -> Tensor:
    """``|x - c|^2`` for every row of ``x`` and ``centers``, clipped at 0 (rounding)."""
    d = (x * x).sum(1, keepdim=True) - 2.0 * x @ centers.T + (centers * centers).sum(1)
    return d.clamp_(min=0.0)


def kmeans_pp_init(x: Tensor, k: int, rng: np.random.Generator,
                   chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    """k-means++ centres (Arthur & Vassilvitskii, 2007): the first uniform, each next one
    drawn with probability proportional to the squared distance to the nearest so far."""
    n = len(x)
    picked = [int(rng.integers(n))]
    nearest = torch.full((n,), float('inf'), dtype=torch.float64)
    while len(picked) < k:
        center = x[picked[-1]:picked[-1] + 1]
        for start in range(0, n, chunk_size):
            block = squared_distances(x[start:start + chunk_size], center).squeeze(1)
            nearest[start:start + chunk_size] = torch.minimum(
                nearest[start:start + chunk_size], block.double())
        nearest[picked] = 0.0
        weight = nearest.numpy()
        total = weight.sum()
        if total > 0:
            picked.append(int(rng.choice(n, p=weight / total)))
        else:  # every row left duplicates a centre: any of them
            picked.append(int(rng.choice(np.setdiff1d(np.arange(n), picked))))
    return x[picked].clone()


def assign(x: Tensor, centers: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE
           ) -> tuple[Tensor, Tensor]:
    """Each row's nearest centre and its squared distance, a block of rows at a time."""
    labels = torch.empty(len(x), dtype=torch.int64)
    dist = torch.empty(len(x))
    for start in range(0, len(x), chunk_size):
        d = squared_distances(x[start:start + chunk_size], centers)
        dist[start:start + chunk_size], labels[start:start + chunk_size] = d.min(dim=1)
    return labels, dist


def kmeans(x: Tensor, k: int, rng: np.random.Generator, max_iter: int = 100,
           chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """Cluster labels ``(N,)`` in ``[0, k)`` of Lloyd's k-means from a k-means++ start.

    Stops when no label changes (or after ``max_iter`` rounds). An empty
    cluster takes the row farthest from its own centre, as scikit-learn
    does, so there are always ``k`` non-empty clusters when ``N >= k``.

    Args:
        x (Tensor): ``(N, D)`` float32 rows.
        k (int): Clusters, ``1 <= k <= N``.
        rng (np.random.Generator): The seeded generator of the start.
        max_iter (int): Most Lloyd rounds.
        chunk_size (int): Rows of one block of distances.
    """
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f'k-means: cannot make {k} clusters of {n} rows')
    centers = kmeans_pp_init(x, k, rng, chunk_size)
    labels = None
    for _ in range(max_iter):
        new_labels, dist = assign(x, centers, chunk_size)
        counts = torch.bincount(new_labels, minlength=k)
        for empty in torch.nonzero(counts == 0).flatten().tolist():
            # from a cluster that keeps a member, so none empties in turn
            movable = torch.where(counts[new_labels] > 1, dist, torch.tensor(-1.0))
            far = int(movable.argmax())
            counts[new_labels[far]] -= 1
            new_labels[far], dist[far] = empty, 0.0
            counts[empty] = 1
        if labels is not None and torch.equal(new_labels, labels):
            break
        labels = new_labels
        sums = torch.zeros(k, x.shape[1], dtype=torch.float64)
        for start in range(0, n, chunk_size):
            sums.index_add_(0, labels[start:start + chunk_size],
                            x[start:start + chunk_size].double())
        centers = (sums / counts.unsqueeze(1).double()).float()
    return labels.numpy()
