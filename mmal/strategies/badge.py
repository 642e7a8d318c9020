"""BADGE: gradient embeddings that are both large and spread out, by k-means++ seeding."""
import numpy as np
import torch
from torch import Tensor

from ..registry import STRATEGIES
from ..scoring import NUM_SAMPLES
from .base import BaseStrategy, require
from .expected_gradient_length import embedding_matrix
from .k_center import DEFAULT_CHUNK_SIZE, _as_tensor


@STRATEGIES.register_module()
class BadgeStrategy(BaseStrategy):
    """Batch Active learning by Diverse Gradient Embeddings (Ash et al., ICLR 2020).

    *Deep Batch Active Learning by Diverse, Uncertain Gradient Lower
    Bounds*: each candidate is represented by the gradient of its loss,
    under the model's own most likely label, with respect to the last
    layer (the model's ``'grad_embedding'``; see
    :class:`~mmal.strategies.expected_gradient_length.ExpectedGradientLengthStrategy`
    for what it is per task). Its norm measures uncertainty (a lower bound
    on the update any label would cause), its direction what the sample
    would change. The K picks are k-means++ seeds on these embeddings
    (Arthur & Vassilvitskii, 2007), as in the paper's code: the first is
    the candidate with the largest norm, each next one is drawn with
    probability proportional to ``D(x)^2``, its squared distance to the
    nearest pick so far. Large embeddings far from the picks are likely;
    near-duplicates of a pick have probability 0. Unlike core-set, the
    labeled set plays no part (as in the paper): the gradients are under
    hypothetical labels, which the labeled samples do not need.

    The draws use the experiment's seeded generator, so a selection is
    reproducible; ties for the first pick are broken by it too, never by
    position. When every candidate left is at distance 0 from a pick (all
    duplicates, or all-zero embeddings) the rest are drawn uniformly.

    The recorded score of a candidate is its embedding's norm (the first
    pick has the largest); the picks follow the seeding order. Cost:
    ``O(K * N * E)`` for K picks among N embeddings of length E, in
    blocks of ``chunk_size`` rows, never an ``N x N`` matrix.

    Args:
        chunk_size (int): Rows of one block of distances.
    """

    outputs = ('grad_embedding',)
    tasks = ('detection', 'pose')

    def __init__(self, task: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        super().__init__(task)
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise ValueError(f'BadgeStrategy: chunk_size={chunk_size!r} must be an integer >= 1')
        self.chunk_size = chunk_size

    def select(self, candidate_outputs: dict, labeled_outputs: dict, k: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        require(self, candidate_outputs, 'grad_embedding')
        embedding = embedding_matrix(candidate_outputs['grad_embedding'],
                                     candidate_outputs[NUM_SAMPLES], type(self).__name__)
        scores = np.sqrt(np.einsum('ij,ij->i', embedding, embedding, dtype=np.float64))
        return kmeans_pp_seeding(embedding, k, rng, self.chunk_size, norms=scores), scores


def kmeans_pp_seeding(features: np.ndarray | Tensor, k: int, rng: np.random.Generator,
                      chunk_size: int = DEFAULT_CHUNK_SIZE,
                      norms: np.ndarray | None = None) -> np.ndarray:
    """k-means++ seeding from the largest-norm row: ``(k,)`` positions in pick order.

    Args:
        features (np.ndarray | Tensor): ``(N, D)`` rows.
        k (int): How many to pick, ``k <= N``.
        rng (np.random.Generator): Seeded generator for the ``D^2`` draws
            and the first pick's ties.
        chunk_size (int): Rows of one block of distances.
        norms (np.ndarray, optional): The rows' norms, if already known.
    """
    x = _as_tensor(features, 'features')
    n = len(x)
    if not 0 <= k <= n:
        raise ValueError(f'cannot pick {k} of {n} candidates')
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if norms is None:
        norms = torch.linalg.vector_norm(x.double(), dim=1).numpy()
    first = int(np.lexsort((rng.permutation(n), -np.asarray(norms)))[0])
    picked = [first]
    min_dist = torch.full((n,), float('inf'), dtype=torch.float64)
    while len(picked) < k:
        last = picked[-1]
        for start in range(0, n, chunk_size):
            # Exact differences, not the matmul expansion, so a duplicate of a
            # pick is at distance exactly 0 and cannot be drawn.
            dist = torch.cdist(x[start:start + chunk_size], x[last:last + 1],
                               compute_mode='donot_use_mm_for_euclid_dist').squeeze(1)
            min_dist[start:start + chunk_size] = torch.minimum(
                min_dist[start:start + chunk_size], dist.double())
        min_dist[picked] = 0.0
        weight = (min_dist ** 2).numpy()
        total = weight.sum()
        if total > 0 and np.isfinite(total):
            nxt = int(rng.choice(n, p=weight / total))
        else:
            left = np.setdiff1d(np.arange(n), picked)
            nxt = int(rng.choice(left))
        picked.append(nxt)
    return np.asarray(picked, dtype=np.int64)
