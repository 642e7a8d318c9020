"""Least confidence: label the samples whose best guess is least probable."""
import torch
from torch import Tensor

from ..registry import STRATEGIES
from .measures import simcc_peak_probability
from .uncertainty import UncertaintyStrategy


@STRATEGIES.register_module()
class LeastConfidenceStrategy(UncertaintyStrategy):
    """Uncertainty ``1 - max p``, per box or joint, aggregated per sample.

    Detection: ``max p`` over a box's posterior (classes and background);
    for sigmoid heads, ``max(p_c, 1 - p_c)`` of the box's least sure class.
    Pose: ``max p`` is the joint's heatmap peak, mmpose's keypoint score,
    clipped to ``[0, 1]`` (regressed heatmaps may overshoot slightly).
    SimCC (``pose_output='simcc'``): ``max p`` is the probability of the
    joint's most likely location, ``max p_x * max p_y`` (mmpose's SimCC
    keypoint score reads raw logits, which are no probabilities).

    See :class:`~mmal.strategies.uncertainty.UncertaintyStrategy` for the
    arguments, the boxes scored and images with no box.
    """

    def box_uncertainty(self, probs: Tensor) -> Tensor:
        return 1.0 - probs.amax(dim=-1)

    def class_uncertainty(self, probs: Tensor) -> Tensor:
        return (1.0 - torch.maximum(probs, 1.0 - probs)).amax(dim=-1)

    def joint_uncertainty(self, heatmaps: Tensor) -> Tensor:
        return 1.0 - heatmaps.flatten(2).amax(dim=-1).clamp(0.0, 1.0)

    def simcc_uncertainty(self, simcc_x: Tensor, simcc_y: Tensor) -> Tensor:
        return 1.0 - simcc_peak_probability(simcc_x, simcc_y)
