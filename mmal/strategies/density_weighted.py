"""Density weighting: uncertain *and* representative samples first."""
import numpy as np
import torch
from mmengine.registry import DefaultScope
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from ..registry import STRATEGIES
from .base import BaseStrategy, require
from .k_center import DEFAULT_CHUNK_SIZE
from .uncertainty import UncertaintyStrategy


@STRATEGIES.register_module()
class DensityWeightedStrategy(BaseStrategy):
    """Uncertainty times density: ``u(x) * (mean_u cos(f(x), f(u)))**beta`` (Settles).

    An uncertainty measure alone favours outliers, which are uncertain
    because they are unlike anything, and teach little about the rest of
    the pool. Weighting by the candidate's mean cosine similarity to the
    pool demotes them. The pool is the scored candidate set (a random
    subset of the unlabeled pool when ``candidate_pool`` is a number); the
    similarity uses the pooled tapped features, from the same forward pass
    as the uncertainty. Features that point away from the pool on average
    get density 0 (a negative mean similarity is clipped).

    Args:
        uncertainty (dict): Config of an uncertainty strategy, e.g.
            ``dict(type='EntropyStrategy', aggregation='max')``.
        beta (float): Weight of the density term (``>= 0``; 0 = pure
            uncertainty).
        chunk_size (int): Feature rows normalised at once.
    """

    def __init__(self, task: str | None = None, uncertainty: dict | None = None,
                 beta: float = 1.0, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        with DefaultScope.overwrite_default_scope('mmal'):
            inner = STRATEGIES.build(dict(uncertainty or dict(type='EntropyStrategy')))
        if not isinstance(inner, UncertaintyStrategy):
            raise ValueError(f'DensityWeightedStrategy weights an uncertainty score, got '
                             f'{type(inner).__name__}; use LeastConfidenceStrategy, '
                             'MarginStrategy or EntropyStrategy')
        if not isinstance(beta, (int, float)) or beta < 0:
            raise ValueError(f'DensityWeightedStrategy: beta={beta!r} must be a number >= 0')
        self.uncertainty = inner
        self.tasks = inner.tasks
        self.task_reason = inner.task_reason
        super().__init__(task)  # refuses a task the inner measure does not apply to
        inner.task = task
        self.beta = float(beta)
        self.chunk_size = int(chunk_size)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (*self.uncertainty.outputs, 'features')

    def scores(self, candidate_outputs: dict, labeled_outputs: dict) -> np.ndarray:
        require(self, candidate_outputs, 'features')
        uncertainty = self.uncertainty.scores(candidate_outputs, labeled_outputs)
        density = mean_cosine_similarity(candidate_outputs['features'],
                                         self.chunk_size).double().clamp(min=0.0)
        return uncertainty * density.pow(self.beta).numpy()


def mean_cosine_similarity(features: np.ndarray | Tensor,
                           chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    """Each row's mean cosine similarity to all rows (itself included).

    The mean of cosines is linear in the other rows' unit vectors,
    ``mean_j <x_i/|x_i|, x_j/|x_j|> = <x_i/|x_i|, mean_j x_j/|x_j|>``, so
    the exact value needs one pass to sum the unit vectors and one to take
    dot products, chunk by chunk: ``O(N*D)`` time and no ``N x N`` matrix.
    A zero row has similarity 0 to everything.

    Args:
        features (np.ndarray | Tensor): ``(N, D)``.
        chunk_size (int): Rows normalised at once.

    Returns:
        Tensor: ``(N,)`` float64 mean similarities in ``[-1, 1]``.
    """
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, Tensor) else features)
    if x.dim() != 2 or len(x) == 0:
        raise ValueError(f'features must be non-empty (N, D) rows, got {tuple(x.shape)}')
    # float64 per chunk: a sum of N unit vectors loses digits in float32 for large N.
    direction = torch.zeros(x.shape[1], dtype=torch.float64)
    for i in range(0, len(x), chunk_size):
        direction += F.normalize(x[i:i + chunk_size].double(), dim=1).sum(dim=0)
    direction /= len(x)
    out = torch.empty(len(x), dtype=torch.float64)
    for i in range(0, len(x), chunk_size):
        out[i:i + chunk_size] = F.normalize(x[i:i + chunk_size].double(), dim=1) @ direction
    return out
