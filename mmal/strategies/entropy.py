"""Entropy sampling: label the samples whose predicted distributions are flattest."""

from torch import Tensor

from ..registry import STRATEGIES
from .measures import (
    binary_entropy,
    heatmap_distribution,
    normalised_entropy,
    simcc_entropy,
    sum_normalised,
)
from .uncertainty import UncertaintyStrategy


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
    places nowhere, counts as uniform, the maximum. SimCC
    (``pose_output='simcc'``): the entropy of the joint's 2-D location,
    ``H(p_x) + H(p_y)``, over its maximum ``log(Wx * Wy)``.

    See :class:`~mmal.strategies.uncertainty.UncertaintyStrategy` for the
    arguments, the boxes scored and images with no box.
    """

    def box_uncertainty(self, probs: Tensor) -> Tensor:
        return normalised_entropy(probs)

    def class_uncertainty(self, probs: Tensor) -> Tensor:
        return sum_normalised(binary_entropy(probs), probs.shape[-1])

    def joint_uncertainty(self, heatmaps: Tensor) -> Tensor:
        return normalised_entropy(heatmap_distribution(heatmaps))

    def simcc_uncertainty(self, simcc_x: Tensor, simcc_y: Tensor) -> Tensor:
        return simcc_entropy(simcc_x, simcc_y)
