"""ProbCover: the balls that cover the most of the data not yet covered."""
import numpy as np
import torch
from scipy import sparse
from torch import Tensor

from ..registry import STRATEGIES
from .base import BaseStrategy
from .k_center import DEFAULT_CHUNK_SIZE
from .kmeans import candidate_and_labeled_rows, kmeans

#: The paper's ball radius for CIFAR-10 on L2-normalised SimCLR embeddings.
DEFAULT_DELTA = 0.75
#: The paper's purity threshold for choosing the radius.
DEFAULT_PURITY = 0.95
#: Most edges of the ball graph: about 1.5 GiB while it is built.
DEFAULT_MAX_EDGES = 50_000_000


@STRATEGIES.register_module()
class ProbCoverStrategy(BaseStrategy):
    """Probability coverage (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022).

    *Active Learning Through a Covering Lens*: with few labels, choose the
    samples whose balls of radius ``delta`` cover the most of the data. On
    the pooled tapped features of candidates and labeled set
    (L2-normalised), a directed graph has an edge ``x -> y`` when
    ``|x - y| < delta`` (every point covers itself). The points the labeled
    set's balls reach are covered from the start; each pick is the
    candidate whose ball holds the most points not yet covered, and the
    points it covers then count for no one else (their incoming edges are
    removed). Once everything is covered, the rest are drawn uniformly.

    ``delta`` decides everything: balls so large that they hold several
    kinds of images cover much and teach little. The default is the
    paper's radius for CIFAR-10 on its self-supervised embeddings;
    features of another model have another scale. ``delta='purity'``
    takes the paper's choice instead: k-means with ``purity_clusters``
    clusters (the paper: the number of classes), and the largest radius at
    which at least ``purity`` (0.95) of the balls hold one cluster only,
    computed exactly (a ball around ``x`` is pure up to the distance of
    the nearest point of another cluster).

    Ties (equal coverage, including the draws once everything is covered)
    are broken by the seeded generator, never by position. The recorded
    score of a candidate is the number of points its ball covered before
    the first pick. Cost: the graph holds every edge (``N + L`` rows,
    their neighbours within ``delta``), built a block of distances at a
    time; a radius that puts more than ``max_edges`` pairs in it is
    refused, naming the fix (the balls would hold most of the data anyway).

    Args:
        delta (float | str): The ball radius on unit-length features, in
            ``(0, 2]``, or ``'purity'``.
        purity_clusters (int, optional): Clusters of the purity choice;
            required with ``delta='purity'``.
        purity (float): Fraction of pure balls the chosen radius keeps.
        max_edges (int): Most edges of the graph (memory: about 32 bytes
            each while it is built).
        chunk_size (int): Rows (and columns) of one block of distances.
    """

    outputs = ('features',)
    labeled_outputs = ('features',)

    def __init__(self, task: str | None = None, delta: float | str = DEFAULT_DELTA,
                 purity_clusters: int | None = None, purity: float = DEFAULT_PURITY,
                 max_edges: int = DEFAULT_MAX_EDGES,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        super().__init__(task)
        if delta == 'purity':
            if (not isinstance(purity_clusters, int) or isinstance(purity_clusters, bool)
                    or purity_clusters < 2):
                raise ValueError(f"ProbCoverStrategy: delta='purity' needs purity_clusters, "
                                 f'an integer >= 2 (the paper: the number of classes), got '
                                 f'{purity_clusters!r}; e.g. delta=\'purity\', '
                                 'purity_clusters=20')
        elif (not isinstance(delta, (int, float)) or isinstance(delta, bool)
              or not 0 < delta <= 2):
            raise ValueError(f"ProbCoverStrategy: delta={delta!r} must be a radius in (0, 2] "
                             "(features are unit length) or 'purity'")
        if not isinstance(purity, (int, float)) or not 0 < purity <= 1:
            raise ValueError(f'ProbCoverStrategy: purity={purity!r} must lie in (0, 1]')
        for name, value in (('max_edges', max_edges), ('chunk_size', chunk_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f'ProbCoverStrategy: {name}={value!r} must be an integer >= 1')
        self.max_edges = max_edges
        self.delta = delta if delta == 'purity' else float(delta)
        self.purity_clusters = purity_clusters
        self.purity = float(purity)
        self.chunk_size = chunk_size
        #: The radius the last select() used (the purity choice, or delta).
        self.last_delta: float | None = None

    def select(self, candidate_outputs: dict, labeled_outputs: dict, k: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        candidates, labeled = candidate_and_labeled_rows(self, candidate_outputs,
                                                         labeled_outputs, k, self.chunk_size)
        n = len(candidates)
        rows = torch.cat([candidates, labeled])
        delta = self.delta
        if delta == 'purity':
            if self.purity_clusters > len(rows):
                raise ValueError(f'ProbCoverStrategy: purity_clusters={self.purity_clusters} '
                                 f'> the {len(rows)} scored samples; lower it')
            delta = purity_radius(rows, kmeans(rows, self.purity_clusters, rng,
                                               chunk_size=self.chunk_size),
                                  self.purity, self.chunk_size)
        self.last_delta = float(delta)
        graph = ball_graph(rows, delta, self.chunk_size, self.max_edges)
        return greedy_cover(graph, n, k, rng)


def ball_graph(rows: Tensor, delta: float, chunk_size: int = DEFAULT_CHUNK_SIZE,
               max_edges: int = DEFAULT_MAX_EDGES) -> sparse.csr_matrix:
    """``(M, M)`` 0/1 matrix: ``[x, y] = 1`` when ``|x - y| < delta`` (the diagonal too).

    Raises:
        ValueError: More than ``max_edges`` pairs lie within ``delta``.
    """
    m = len(rows)
    xs, ys, count = [], [], 0
    for i in range(0, m, chunk_size):
        for j in range(0, m, chunk_size):
            x, y = torch.nonzero(torch.cdist(rows[i:i + chunk_size], rows[j:j + chunk_size])
                                 < delta, as_tuple=True)
            count += len(x)
            if count > max_edges:
                raise ValueError(
                    f'ProbCoverStrategy: delta={delta:.4g} puts more than {max_edges} pairs of '
                    f'the {m} scored samples within it (max_edges): its balls hold much of the '
                    "data, so they cover it without telling samples apart. Lower delta, or let "
                    "the paper's rule choose it: delta='purity', purity_clusters=C (C: about "
                    'the number of classes)')
            xs.append(x.numpy().astype(np.int32) + i)
            ys.append(y.numpy().astype(np.int32) + j)
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    # the diagonal explicitly: rounding can put a point a hair from itself
    xs, ys = np.concatenate([xs, np.arange(m)]), np.concatenate([ys, np.arange(m)])
    graph = sparse.csr_matrix((np.ones(len(xs), dtype=np.int32), (xs, ys)), shape=(m, m))
    graph.data[:] = 1  # the diagonal listed twice is one edge
    return graph


def greedy_cover(graph: sparse.csr_matrix, n: int, k: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """ProbCover's greedy picks among the first ``n`` rows of ``graph`` (the candidates;
    the rest, the labeled set, cover from the start), and each candidate's first coverage."""
    m = graph.shape[0]
    incoming = graph.T.tocsr()
    covered = np.zeros(m, dtype=bool)
    for row in range(n, m):
        covered[graph.indices[graph.indptr[row]:graph.indptr[row + 1]]] = True
    degree = np.asarray(graph[:n] @ (~covered).astype(np.int64)).ravel()
    scores = degree.astype(np.float64)
    tie_rank = rng.permutation(n)
    picked = []
    for _ in range(k):
        best = int(np.lexsort((tie_rank, -degree))[0])
        picked.append(best)
        reach = graph.indices[graph.indptr[best]:graph.indptr[best + 1]]
        new = reach[~covered[reach]]
        covered[new] = True
        # each newly covered point no longer counts for any ball that reaches it
        lost = np.asarray(incoming[new].sum(axis=0)).ravel()[:n]
        degree = degree - lost
        degree[picked] = -1  # never picked twice, even when all is covered
    return np.asarray(picked, dtype=np.int64), scores


def purity_radius(rows: Tensor, cluster: np.ndarray, purity: float = DEFAULT_PURITY,
                  chunk_size: int = DEFAULT_CHUNK_SIZE) -> float:
    """The largest radius at which at least ``purity`` of the balls hold one cluster.

    The ball ``{y : |x - y| < r}`` is pure exactly while ``r`` is at most
    ``x``'s distance to the nearest row of another cluster, so the answer
    is a quantile of those distances (no search over a grid of radii).
    """
    m = len(rows)
    labels = torch.as_tensor(cluster)
    nearest_other = torch.full((m,), float('inf'))
    for i in range(0, m, chunk_size):
        for j in range(0, m, chunk_size):
            dist = torch.cdist(rows[i:i + chunk_size], rows[j:j + chunk_size])
            same = labels[i:i + chunk_size, None] == labels[None, j:j + chunk_size]
            dist[same] = float('inf')
            nearest_other[i:i + chunk_size] = torch.minimum(nearest_other[i:i + chunk_size],
                                                            dist.amin(dim=1))
    # at least ceil(purity * m) balls pure: the radius of the ceil(purity * m)-th largest
    need = int(np.ceil(purity * m))
    radius = float(torch.sort(nearest_other, descending=True).values[need - 1])
    return min(radius, 2.0)  # one cluster alone is pure at any radius: all of the sphere
