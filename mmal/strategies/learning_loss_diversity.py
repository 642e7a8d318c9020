"""Learning Loss with diversity: the highest predicted losses, spread out."""
import math

import numpy as np

from ..registry import STRATEGIES
from .base import BaseStrategy, require, top_k
from .k_center import DEFAULT_CHUNK_SIZE, k_center_greedy


@STRATEGIES.register_module()
class LearningLossDiversityStrategy(BaseStrategy):
    """Top ``m*K`` by predicted loss, then K of them by k-center greedy on features.

    Predicted loss alone tends to pick near-duplicates (similar hard
    images); k-center greedy over the shortlist, with the labeled set as the
    initial centers, keeps the K picks apart from each other and from what
    is already labeled. ``m = 1`` is plain Learning Loss; ``m*K >= N`` is
    core-set over all candidates. The predicted loss and the pooled features
    come from one forward pass; the recorded score is the predicted loss.

    Args:
        m (float): Shortlist size as a multiple of K (``>= 1``).
        chunk_size (int): Rows and columns of one block of distances.
    """

    outputs = ('pred_loss', 'features')
    labeled_outputs = ('features',)

    def __init__(self, task: str | None = None, m: float = 2.0,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        super().__init__(task)
        if not isinstance(m, (int, float)) or isinstance(m, bool) or m < 1:
            raise ValueError(f'LearningLossDiversityStrategy: m={m!r} must be a number >= 1 '
                             '(the shortlist is the top m*K predicted losses)')
        self.m = float(m)
        self.chunk_size = int(chunk_size)

    def select(self, candidate_outputs: dict, labeled_outputs: dict, k: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        require(self, candidate_outputs, 'pred_loss', 'features')
        require(self, labeled_outputs, 'features', where='labeled-set')
        scores = np.asarray(candidate_outputs['pred_loss'], dtype=np.float64)
        features = candidate_outputs['features']
        shortlist_size = min(len(scores), max(k, math.ceil(self.m * k)))
        shortlist = top_k(scores, shortlist_size, rng, user=type(self).__name__)
        picks = k_center_greedy(features[shortlist], k, rng,
                                centers=labeled_outputs['features'], chunk_size=self.chunk_size)
        return shortlist[picks], scores
