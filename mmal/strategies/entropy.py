"""Entropy sampling: label the samples whose predicted distributions are flattest."""
import math

import torch
from torch import Tensor

from ..registry import STRATEGIES
from .uncertainty import UncertaintyStrategy, binary_entropy, sum_normalised


@STRATEGIES.register_module()
class EntropyStrategy(UncertaintyStrategy):
    """Normalised entropy ``H(p) / log(n)`` per box or joint, aggregated per sample.

    Dividing by the entropy of a uniform ``p`` over ``n`` outcomes puts
    every box and joint in ``[0, 1]``, whatever the number of classes or
    the heatmap size; it does not change the ranking of a fixed model.

    Detection: ``p`` is a box's posterior over the classes and background;
    for sigmoid heads, the C binary entropies summed, over ``C log 2``.
    Pose: ``p`` is the joint's heatmap clipped at 0 and normalised to sum 1
    over its ``H*W`` pixels (a softmax would flatten a ``[0, 1]``-valued
    heatmap into near-uniform); an all-zero heatmap, a joint the model
    places nowhere, counts as uniform, the maximum.

    See :class:`~mmal.strategies.uncertainty.UncertaintyStrategy` for the
    arguments, the boxes scored and images with no box.
    """

    def box_uncertainty(self, probs: Tensor) -> Tensor:
        return normalised_entropy(probs)

    def class_uncertainty(self, probs: Tensor) -> Tensor:
        return sum_normalised(binary_entropy(probs), probs.shape[-1])

    def joint_uncertainty(self, heatmaps: Tensor) -> Tensor:
        mass = heatmaps.flatten(2).clamp(min=0.0)
        total = mass.sum(dim=-1, keepdim=True)
        uniform = torch.full_like(mass, 1.0 / mass.shape[-1])
        probs = torch.where(total > 0, mass / total.clamp(min=torch.finfo(mass.dtype).tiny),
                            uniform)
        return normalised_entropy(probs)


def normalised_entropy(probs: Tensor) -> Tensor:
    """Entropy over the last dim divided by its maximum ``log(n)`` (0 when ``n == 1``)."""
    n = probs.shape[-1]
    entropy = -torch.special.xlogy(probs, probs).sum(dim=-1)
    return entropy / math.log(n) if n > 1 else torch.zeros_like(entropy)
