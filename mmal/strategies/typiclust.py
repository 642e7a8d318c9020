"""TypiClust: the most typical sample of each large uncovered cluster."""
import numpy as np
import torch
from torch import Tensor

from ..registry import STRATEGIES
from .base import BaseStrategy, top_k
from .k_center import DEFAULT_CHUNK_SIZE
from .kmeans import candidate_and_labeled_rows, kmeans

#: Added to the mean distance, as in the paper's code, so duplicates stay finite.
EPS = 1e-5


@STRATEGIES.register_module()
class TypiClustStrategy(BaseStrategy):
    """Typical clustering (Hacohen, Dekel & Weinshall, ICML 2022).

    *Active Learning on a Budget: Opposite Strategies Suit High and Low
    Budgets*: with few labels, the samples worth labeling are the typical
    ones, spread over the data, not the uncertain ones. The pooled tapped
    features of candidates and labeled set (L2-normalised) are clustered
    by k-means into ``|labeled| + K`` clusters (at most ``max_clusters``).
    Each pick comes from the cluster with the fewest labeled samples and
    picks so far, the largest among those (clusters of at most
    ``min_cluster_size`` samples only when no larger one has a candidate
    left), and is its candidate of highest typicality: the inverse mean
    Euclidean distance to its ``k`` nearest candidates of the same cluster
    (``k = min(k_neighbors, n // 2)`` for a cluster of ``n`` candidates
    left, as the paper's code caps it). The labeled set counts as covering
    its clusters, so the strategy also works cycle after cycle; before
    cycle 0 (``active_learning.initial_strategy``) nothing is labeled.

    Every random choice (the k-means++ start, ties between clusters and
    between equally typical candidates) is drawn from the seeded generator.
    The recorded score of a candidate is its typicality within its cluster.
    Cost: k-means on ``N + L`` rows of D (``O(iterations * (N + L) * C *
    D)``), and per pick the distances within one cluster; one float32
    copy of the features is held.

    Args:
        k_neighbors (int): Neighbours of the typicality (the paper's 20).
        max_clusters (int): Most clusters (the paper's code: 500; k-means
            cost grows with it). With more picks than clusters, clusters
            are revisited in the same order.
        min_cluster_size (int): Clusters this small or smaller are used
            last (the paper's code drops clusters of 5 or fewer: outliers).
        max_iter (int): Most k-means rounds.
        chunk_size (int): Rows of one block of distances.
    """

    outputs = ('features',)
    labeled_outputs = ('features',)

    def __init__(self, task: str | None = None, k_neighbors: int = 20, max_clusters: int = 500,
                 min_cluster_size: int = 5, max_iter: int = 100,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        super().__init__(task)
        for name, value, least in (('k_neighbors', k_neighbors, 1),
                                   ('max_clusters', max_clusters, 1),
                                   ('min_cluster_size', min_cluster_size, 0),
                                   ('max_iter', max_iter, 1), ('chunk_size', chunk_size, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f'TypiClustStrategy: {name}={value!r} must be an integer '
                                 f'>= {least}')
        self.k_neighbors = k_neighbors
        self.max_clusters = max_clusters
        self.min_cluster_size = min_cluster_size
        self.max_iter = max_iter
        self.chunk_size = chunk_size

    def select(self, candidate_outputs: dict, labeled_outputs: dict, k: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        candidates, labeled = candidate_and_labeled_rows(self, candidate_outputs,
                                                         labeled_outputs, k, self.chunk_size)
        n = len(candidates)
        rows = torch.cat([candidates, labeled])
        num_clusters = min(len(labeled) + max(k, 1), self.max_clusters, len(rows))
        cluster = kmeans(rows, num_clusters, rng, self.max_iter, self.chunk_size)
        size = np.bincount(cluster, minlength=num_clusters)
        covered = np.bincount(cluster[n:], minlength=num_clusters)
        small = size <= self.min_cluster_size
        tie = rng.permutation(num_clusters)
        left = [list(np.flatnonzero(cluster[:n] == c)) for c in range(num_clusters)]
        scores = np.zeros(n)
        for members in left:
            if members:
                scores[members] = typicality(candidates[members], self.k_neighbors,
                                             self.chunk_size)
        picked, taken = [], np.zeros(num_clusters, dtype=np.int64)
        for _ in range(k):
            # fewest labeled / picked first, then the largest; a small cluster last
            order = np.lexsort((tie, -size, covered, small))
            c = next(c for c in order if left[c])
            members = left[c]
            # among the candidates left, as the paper's code recomputes it
            typical = (scores[members] if not taken[c] else
                       typicality(candidates[members], self.k_neighbors, self.chunk_size))
            best = members[int(top_k(typical, 1, rng, user=type(self).__name__)[0])]
            picked.append(best)
            members.remove(best)
            covered[c] += 1
            taken[c] += 1
        return np.asarray(picked, dtype=np.int64), scores


def typicality(features: Tensor, k_neighbors: int = 20,
               chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """Each row's ``1 / (mean distance to its k nearest other rows + 1e-5)``.

    ``k = min(k_neighbors, n // 2)`` for ``n`` rows, as the paper's code
    caps it in small clusters; a single row has no neighbour and typicality
    0. The paper's definition uses the Euclidean distance (its code, via
    faiss, the squared one).

    Args:
        features (Tensor): ``(n, D)`` rows.
        k_neighbors (int): Neighbours averaged over.
        chunk_size (int): Rows of one block of distances.
    """
    n = len(features)
    k = min(k_neighbors, n // 2)
    if k == 0:
        return np.zeros(n)
    out = np.empty(n)
    for start in range(0, n, chunk_size):
        block = features[start:start + chunk_size]
        dist = torch.cdist(block, features)
        rows = torch.arange(len(block))
        dist[rows, rows + start] = float('inf')  # a row is not its own neighbour
        nearest = dist.topk(k, dim=1, largest=False).values
        out[start:start + chunk_size] = 1.0 / (nearest.double().mean(dim=1).numpy() + EPS)
    return out
