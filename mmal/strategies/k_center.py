"""k-center greedy selection, shared by every strategy that wants diversity.

Distances are computed in chunks of ``chunk_size`` rows (and columns), so
scoring 10,000+ candidates against a large labeled set never holds more than
``chunk_size**2`` distances at once; the only ``N``-sized buffers are the
features themselves (possibly memory-mapped: they are read a block at a
time) and one running minimum-distance vector.
"""
import numpy as np
import torch
from torch import Tensor

#: Rows (and columns) of one distance block: 1024**2 float32 = 4 MiB.
DEFAULT_CHUNK_SIZE = 1024


def _as_tensor(features: np.ndarray | Tensor, name: str) -> Tensor:
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, Tensor) else features,
                        dtype=torch.float32)
    if x.dim() != 2:
        raise ValueError(f'{name} must be (N, D) feature rows, got shape {tuple(x.shape)}')
    if not torch.isfinite(x).all():
        raise FloatingPointError(f'{name} holds non-finite values')
    return x


class _Rows:
    """Feature rows read a block at a time, as float32 tensors.

    Features may be a memory-mapped float16 file (:mod:`mmal.scoring.store`):
    converting them whole would hold an ``N x D`` float32 copy, so each
    block is converted when it is used.
    """

    def __init__(self, features: np.ndarray | Tensor, name: str, chunk_size: int) -> None:
        self.data, self.name = features, name
        if len(features.shape) != 2:
            raise ValueError(f'{name} must be (N, D) feature rows, got shape '
                             f'{tuple(features.shape)}')
        for i in range(0, len(features), chunk_size):  # refuse non-finite rows up front
            if not torch.isfinite(self.block(i, i + chunk_size)).all():
                raise FloatingPointError(f'{name} holds non-finite values')

    def __len__(self) -> int:
        return len(self.data)

    @property
    def dim(self) -> int:
        return self.data.shape[1]

    def block(self, start: int, stop: int) -> Tensor:
        rows = self.data[start:stop]
        if isinstance(rows, Tensor):
            return rows.to(torch.float32)
        return torch.as_tensor(np.asarray(rows, dtype=np.float32))


def min_distances(features: np.ndarray | Tensor, centers: np.ndarray | Tensor,
                  chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    """Euclidean distance from each row of ``features`` to its nearest center.

    Args:
        features (np.ndarray | Tensor): ``(N, D)``.
        centers (np.ndarray | Tensor): ``(L, D)``, ``L >= 1``.
        chunk_size (int): Rows and columns of one distance block.

    Returns:
        Tensor: ``(N,)`` float32 distances.
    """
    x = _Rows(features, 'features', chunk_size)
    c = _Rows(centers, 'centers', chunk_size)
    if len(c) == 0:
        raise ValueError('min_distances needs at least one center')
    if x.dim != c.dim:
        raise ValueError(f'features have {x.dim} dimensions, centers {c.dim}')
    out = torch.empty(len(x))
    for i in range(0, len(x), chunk_size):
        block = x.block(i, i + chunk_size)
        best = torch.full((len(block),), float('inf'))
        for j in range(0, len(c), chunk_size):
            best = torch.minimum(best, torch.cdist(block, c.block(j, j + chunk_size)).amin(dim=1))
        out[i:i + chunk_size] = best
    return out


def k_center_greedy(features: np.ndarray | Tensor, k: int, rng: np.random.Generator,
                    centers: np.ndarray | Tensor | None = None,
                    chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """Greedy k-center (Sener & Savarese, ICLR 2018): pick the farthest point, repeat.

    Each step picks the candidate farthest from everything chosen so far
    (the ``centers``, e.g. the labeled set, and earlier picks), which
    2-approximates the core-set's minimax cover radius.

    Args:
        features (np.ndarray | Tensor): ``(N, D)`` candidate features.
        k (int): How many candidates to pick, ``k <= N``.
        rng (np.random.Generator): Seeded generator: exact distance ties
            (duplicates, or every candidate when there are no centers) are
            broken by a random permutation drawn from it, never by position.
        centers (np.ndarray | Tensor, optional): ``(L, D)`` points already
            covered (the labeled set). Without any, the first pick is the
            tie-break's choice.
        chunk_size (int): Rows and columns of one distance block.

    Returns:
        np.ndarray: ``(k,)`` positions into ``features``, in pick order.
    """
    x = _Rows(features, 'features', chunk_size)
    n = len(x)
    if not 0 <= k <= n:
        raise ValueError(f'cannot pick {k} of {n} candidates')
    if centers is not None and len(centers) > 0:
        min_dist = min_distances(features, centers, chunk_size)
    else:
        min_dist = torch.full((n,), float('inf'))
    tie_rank = torch.as_tensor(rng.permutation(n))
    picked = []
    for _ in range(k):
        farthest = min_dist.max()
        tied = torch.nonzero(min_dist == farthest).flatten()
        i = int(tied[tie_rank[tied].argmin()])
        picked.append(i)
        center = x.block(i, i + 1)
        for start in range(0, n, chunk_size):
            block = x.block(start, start + chunk_size)
            # Exact differences (not the matmul expansion): one center costs
            # O(chunk * D) either way, and duplicates then tie exactly.
            dist = torch.cdist(block, center,
                               compute_mode='donot_use_mm_for_euclid_dist').squeeze(1)
            min_dist[start:start + chunk_size] = torch.minimum(
                min_dist[start:start + chunk_size], dist)
        # Picked points must never win again, even when every distance left is 0.
        min_dist[i] = -1.0
    return np.asarray(picked, dtype=np.int64)
