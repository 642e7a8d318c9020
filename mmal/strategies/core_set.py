"""Core-set: label the candidates that best cover the feature space."""
import numpy as np

from ..registry import STRATEGIES
from .base import BaseStrategy, labeled_rows, require
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
    follow the greedy order, which also accounts for earlier picks. With
    nothing labeled (choosing the initial set) the first pick is the seeded
    generator's, and a candidate's score is its distance to the nearest
    pick (0 for the picks: how well the selection covers it).

    Args:
        chunk_size (int): Rows and columns of one block of distances.
    """

    outputs = ('features',)
    labeled_outputs = ('features',)

    def __init__(self, task: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        super().__init__(task)
        self.chunk_size = int(chunk_size)

    def select(self, candidate_outputs: dict, labeled_outputs: dict, k: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        require(self, candidate_outputs, 'features')
        features = candidate_outputs['features']
        centers = labeled_rows(self, labeled_outputs)
        picks = k_center_greedy(features, k, rng, centers=centers, chunk_size=self.chunk_size)
        if centers is None:
            if k == 0:
                return picks, np.zeros(len(features))
            centers = np.asarray(features[np.sort(picks)])
        scores = min_distances(features, centers, self.chunk_size).double().numpy()
        return picks, scores
