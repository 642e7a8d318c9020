"""Learning Loss: label the samples whose predicted loss is highest."""
import torch

from ..registry import STRATEGIES
from .base import BaseStrategy


@STRATEGIES.register_module()
class LearningLossStrategy(BaseStrategy):
    """Score = the loss-prediction module's output (Yoo & Kweon, CVPR 2019).

    Only the feature extractor and the small module run: no head, no NMS,
    no labels.
    """

    score_outputs = ('pred_loss',)

    def score_batch(self, outputs: dict) -> torch.Tensor:
        return outputs['pred_loss']
