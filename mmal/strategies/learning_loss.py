"""Learning Loss: label the samples whose predicted loss is highest."""
import numpy as np

from ..registry import STRATEGIES
from .base import BaseStrategy, require


@STRATEGIES.register_module()
class LearningLossStrategy(BaseStrategy):
    """Score = the loss-prediction module's output (Yoo & Kweon, CVPR 2019).

    Only the feature extractor and the small module run: no head, no NMS,
    no labels.
    """

    outputs = ('pred_loss',)

    def scores(self, candidate_outputs: dict, labeled_outputs: dict) -> np.ndarray:
        require(self, candidate_outputs, 'pred_loss')
        return candidate_outputs['pred_loss']
