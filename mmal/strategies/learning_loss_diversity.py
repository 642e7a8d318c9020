"""Learning Loss with diversity: the highest predicted losses, spread out."""
import math

import numpy as np

from ..registry import STRATEGIES
from .base import BaseStrategy
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

    score_outputs = ('pred_loss',)
    needs_features = True
    needs_labeled_features = True

    def __init__(self, m: float = 2.0, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if not isinstance(m, (int, float)) or isinstance(m, bool) or m < 1:
            raise ValueError(f'LearningLossDiversityStrategy: m={m!r} must be a number >= 1 '
                             '(the shortlist is the top m*K predicted losses)')
        self.m = float(m)
        self.chunk_size = int(chunk_size)

    def score_batch(self, outputs: dict):
        return outputs['pred_loss']

    def select(self, scores: np.ndarray, k: int, rng: np.random.Generator,
               features: np.ndarray | None = None,
               labeled_features: np.ndarray | None = None) -> np.ndarray:
        if features is None:
            raise ValueError('LearningLossDiversityStrategy needs the candidates\' pooled '
                             'features (features=...)')
        if len(features) != len(scores):
            raise ValueError(f'{len(scores)} scores but {len(features)} feature rows')
        shortlist_size = min(len(scores), max(k, math.ceil(self.m * k)))
        shortlist = super().select(scores, shortlist_size, rng)
        picks = k_center_greedy(features[shortlist], k, rng, centers=labeled_features,
                                chunk_size=self.chunk_size)
        return shortlist[picks]
