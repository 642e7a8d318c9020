"""Margin sampling: label the samples whose two best classes are closest."""
from torch import Tensor

from ..registry import STRATEGIES
from .uncertainty import UncertaintyStrategy


@STRATEGIES.register_module()
class MarginStrategy(UncertaintyStrategy):
    """Margin ``p1 - p2`` of a box's two most probable classes; smaller = label first.

    The score is ``1 - (p1 - p2)`` so that, as for every strategy, higher
    scores are labeled first; it lies in ``[0, 1]``. Background is one of
    the classes, so a box torn between "object" and "background" has a
    small margin too. Sigmoid heads: each class's margin between "yes" and
    "no", ``|2 p_c - 1|``, the smallest over the box's classes.

    Detection only: a pose heatmap is a spatial map, not a posterior over
    alternatives whose top two could be compared; and the two most probable
    bins of a SimCC distribution (RTMPose) are neighbours on one peak, so
    their margin measures how sharp that peak is, not a second place the
    joint might be (which :class:`MultiPeakEntropyStrategy` measures).

    See :class:`~mmal.strategies.uncertainty.UncertaintyStrategy` for the
    arguments, the boxes scored and images with no box.
    """

    tasks = ('detection',)
    task_reason = ('the margin compares the two most probable classes of a posterior, and a '
                   'pose heatmap has no classes (the two most probable bins of a SimCC '
                   'distribution are neighbours on one peak); use LeastConfidenceStrategy, '
                   'EntropyStrategy or MultiPeakEntropyStrategy for pose')

    def box_uncertainty(self, probs: Tensor) -> Tensor:
        top2 = probs.topk(2, dim=-1).values
        return 1.0 - (top2[..., 0] - top2[..., 1])

    def class_uncertainty(self, probs: Tensor) -> Tensor:
        return (1.0 - (2.0 * probs - 1.0).abs()).amax(dim=-1)
