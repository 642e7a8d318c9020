"""Random sampling: the baseline every strategy must beat."""
import numpy as np
import torch

from ..registry import STRATEGIES
from .base import BaseStrategy


@STRATEGIES.register_module()
class RandomStrategy(BaseStrategy):
    """Uniformly random scores from the experiment's seeded generator.

    Needs no forward pass, so it costs nothing and is identical for every
    model; it is the reference of the paper's comparison.
    """

    def score_candidates(self, model, dataloader, num_candidates: int,
                         rng: np.random.Generator, labeled_features=None
                         ) -> tuple[np.ndarray, None]:
        return rng.random(num_candidates), None

    def score_batch(self, outputs: dict) -> torch.Tensor:
        raise RuntimeError('RandomStrategy scores without a forward pass')
