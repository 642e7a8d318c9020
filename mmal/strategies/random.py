"""Random sampling: the baseline every strategy must beat."""
import numpy as np

from ..registry import STRATEGIES
from ..scoring import NUM_SAMPLES
from .base import BaseStrategy, top_k


@STRATEGIES.register_module()
class RandomStrategy(BaseStrategy):
    """Uniformly random scores from the experiment's seeded generator.

    Needs no forward pass, so it costs nothing and is identical for every
    model; it is the reference of the paper's comparison.
    """

    def select(self, candidate_outputs: dict, labeled_outputs: dict, k: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        scores = rng.random(candidate_outputs[NUM_SAMPLES])
        return top_k(scores, k, rng, user='RandomStrategy'), scores
