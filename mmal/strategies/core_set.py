"""Core-set: label the candidates that best cover the feature space."""
import numpy as np

from ..registry import STRATEGIES
from .base import BaseStrategy
from .k_center import DEFAULT_CHUNK_SIZE, k_center_greedy, min_distances


@STRATEGIES.register_module()
class CoreSetStrategy(BaseStrategy):
    """k-center greedy on pooled tapped features (Sener & Savarese, ICLR 2018).

    The features are the globally average-pooled maps of the model's taps,
    the loss-prediction module's inputs, for labeled samples and candidates
    alike. Starting from the labeled set as centers, each pick is the
    candidate farthest from every center so far. Any task: only features
    are used.

    The recorded score of a candidate is its distance to the nearest
    labeled sample (the first pick has the largest); the picks themselves
    follow the greedy order, which also accounts for earlier picks.

    Args:
        chunk_size (int): Rows and columns of one block of distances.
    """

    needs_features = True
    needs_labeled_features = True

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = int(chunk_size)

    def scores_from(self, batch_scores, features: np.ndarray | None,
                    labeled_features: np.ndarray | None) -> np.ndarray:
        _require(self, features, labeled_features)
        return min_distances(features, labeled_features, self.chunk_size).double().numpy()

    def select(self, scores: np.ndarray, k: int, rng: np.random.Generator,
               features: np.ndarray | None = None,
               labeled_features: np.ndarray | None = None) -> np.ndarray:
        _require(self, features, labeled_features)
        if len(features) != len(scores):
            raise ValueError(f'{len(scores)} scores but {len(features)} feature rows')
        return k_center_greedy(features, k, rng, centers=labeled_features,
                               chunk_size=self.chunk_size)


def _require(strategy, features, labeled_features) -> None:
    if features is None or labeled_features is None:
        raise ValueError(f'{type(strategy).__name__} needs the candidates\' and the labeled '
                         'set\'s pooled features (features=..., labeled_features=...)')
