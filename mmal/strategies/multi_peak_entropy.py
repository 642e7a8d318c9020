"""Multiple peak entropy: label the persons whose joints the model places in several spots."""
import math

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from ..registry import STRATEGIES
from .base import BaseStrategy, require
from .measures import (
    AGGREGATIONS,
    POSE_OUTPUTS,
    aggregate,
    check_choice,
    check_pose_output,
    pose_arrays,
)

NORMALISATIONS = ('softmax', 'sum')
#: The public re-implementation finds peaks at least 5 pixels apart on
#: 64 x 64 heatmaps; the default scales that to the heatmaps at hand.
REFERENCE_MIN_DISTANCE, REFERENCE_SIDE = 5, 64


@STRATEGIES.register_module()
class MultiPeakEntropyStrategy(BaseStrategy):
    """Entropy of each joint heatmap's local peaks (Liu & Ferrari, ICCV 2017).

    Liu & Ferrari, *Active Learning for Human Pose Estimation*, ICCV 2017
    (multiple peak entropy, MPE). A pose estimator that hesitates
    between places for a joint (a left and a right wrist, a limb and a
    background stripe) puts a peak on each. The entropy of the whole
    heatmap (:class:`EntropyStrategy`) mostly measures how wide one peak
    is; MPE looks at the competing peaks instead:

    1. the local maxima of joint ``k``'s heatmap: pixels that are the
       largest within ``min_distance`` pixels in both axes, kept greedily
       from the highest down with at most one per ``(2 min_distance + 1)``
       window (so a flat top counts once), at most ``num_peaks`` of them,
       each positive and at least ``threshold`` times the joint's highest;
    2. their values ``m_1..m_T`` made a distribution, ``p_t = exp(m_t) /
       sum exp(m_s)`` (``normalise='softmax'``, as the public
       re-implementation has it) or ``m_t / sum m_s`` (``'sum'``);
    3. the joint's entropy ``-sum p_t log p_t``, divided by
       ``log(num_peaks)``, its largest value, into ``[0, 1]``; one clear
       peak gives 0. A heatmap with no positive value (the joint is placed
       nowhere) counts as the maximum, 1, as in :class:`EntropyStrategy`;
    4. the sample's score aggregates its K joints: ``'mean'`` (default;
       the public re-implementation sums over the joints, which ranks the
       same, K being fixed), ``'sum'``, or ``'max'`` (the most ambiguous
       joint).

    Choices beyond the paper: the public re-implementation
    (``multipeak_entropy`` in github.com/meghshukla/ActiveLearningForHumanPose)
    uses ``skimage.feature.peak_local_max(min_distance=5, num_peaks=5)``
    on 64 x 64 heatmaps, which keeps every local maximum above the
    heatmap's minimum, so a clean one-peak heatmap still has four near-zero
    "peaks" of background ripple, whose softmax weights are nearly those of
    the real peak and drown the difference between one and two peaks;
    ``threshold`` (default 0.1 of the joint's highest value) drops them.
    ``peak_local_max`` also skips peaks within ``min_distance`` of the
    border; here they count, since a joint may lie at the crop's edge.
    Joint visibility is unknown without labels, so every joint counts.

    **SimCC** (``pose_output='simcc'``: RTMPose, whose head makes no
    heatmaps but each joint's x and y distributions): the same peaks on each
    1-D distribution (``min_distance`` scaled to the bins as to a heatmap's
    width: the same fraction of the crop), their probabilities normalised by
    their sum (``normalise`` defaults to ``'sum'`` here: a softmax of
    probabilities, all well below 1, is near uniform whatever the peaks),
    and the joint's value is the mean of the x and y entropies, each over
    ``log(num_peaks)``: the entropy of the two peak distributions' product
    (x and y independent, as SimCC models them) over its maximum.

    Pose only.

    Args:
        task (str): ``'pose'``.
        num_peaks (int): Most peaks kept per joint (``>= 2``).
        min_distance (int, optional): Least distance between two peaks, in
            heatmap pixels (Chebyshev); None: 5 per 64 pixels of heatmap
            width, at least 1.
        threshold (float): Least peak value, as a fraction of the joint's
            highest value, in ``[0, 1]``.
        normalise (str, optional): ``'softmax'`` or ``'sum'``; None:
            ``'softmax'`` on heatmaps, ``'sum'`` on SimCC distributions.
        aggregation (str): ``'mean'``, ``'sum'`` or ``'max'`` over joints.
        pose_output (str): ``'heatmaps'`` (heatmap heads) or ``'simcc'``
            (SimCC heads such as RTMPose's).
    """

    tasks = ('pose',)
    task_reason = ('it reads the local peaks of joint heatmaps, and a detector outputs boxes '
                   'and class posteriors, not heatmaps; use EntropyStrategy, '
                   'LocalizationStabilityStrategy or CALDStrategy for detection')

    def __init__(self, task: str | None = None, num_peaks: int = 5,
                 min_distance: int | None = None, threshold: float = 0.1,
                 normalise: str | None = None, aggregation: str = 'mean',
                 pose_output: str = 'heatmaps') -> None:
        super().__init__(task)
        name = type(self).__name__
        if isinstance(num_peaks, bool) or not isinstance(num_peaks, int) or num_peaks < 2:
            raise ValueError(f'{name}: num_peaks={num_peaks!r} must be an integer >= 2 (with '
                             'one peak the entropy is always 0)')
        if min_distance is not None and (isinstance(min_distance, bool)
                                         or not isinstance(min_distance, int)
                                         or min_distance < 1):
            raise ValueError(f'{name}: min_distance={min_distance!r} must be an integer >= 1 '
                             '(heatmap pixels) or None (scaled to the heatmap size)')
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
                or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"{name}: threshold={threshold!r} must lie in [0, 1] (a fraction "
                             "of the joint's highest heatmap value)")
        check_pose_output(name, task, pose_output)
        if normalise is None:
            normalise = 'sum' if pose_output == 'simcc' else 'softmax'
        check_choice(name, 'normalise', normalise, NORMALISATIONS)
        check_choice(name, 'aggregation', aggregation, AGGREGATIONS)
        self.pose_output = pose_output
        self.num_peaks = num_peaks
        self.min_distance = min_distance
        self.threshold = float(threshold)
        self.normalise = normalise
        self.aggregation = aggregation

    @property
    def outputs(self) -> tuple[str, ...]:
        return POSE_OUTPUTS[self.pose_output]

    def scores(self, candidate_outputs: dict, labeled_outputs: dict) -> np.ndarray:
        require(self, candidate_outputs, *self.outputs)
        # float64: an untrained model's near-flat heatmaps give peaks within 1e-3 of each
        # other, whose entropies differ below float32's resolution
        arrays = pose_arrays(type(self).__name__, candidate_outputs, self.pose_output,
                             dtype=np.float64)
        if self.pose_output == 'simcc':
            entropy = (self.axis_entropy(arrays[0]) + self.axis_entropy(arrays[1])) / 2
        else:
            entropy = self.joint_entropy(arrays[0])
        return np.asarray([float(aggregate(e, self.aggregation)) for e in entropy],
                          dtype=np.float64)

    def joint_entropy(self, heatmaps: Tensor) -> Tensor:
        """Normalised multiple-peak entropy of each joint, ``(N, K, H, W)`` -> ``(N, K)``."""
        return self.peak_entropy(heatmaps.flatten(0, 1)).reshape(heatmaps.shape[:2])

    def axis_entropy(self, simcc: Tensor) -> Tensor:
        """Normalised multiple-peak entropy of each joint's 1-D SimCC distribution along
        one axis, ``(N, K, W)`` -> ``(N, K)``: the peaks of a map one row high."""
        return self.peak_entropy(simcc.flatten(0, 1)[:, None, :]).reshape(simcc.shape[:2])

    def peak_entropy(self, maps: Tensor) -> Tensor:
        """``(J, H, W)`` maps -> ``(J,)`` normalised entropies of their peaks."""
        radius = self.min_distance or max(
            1, round(REFERENCE_MIN_DISTANCE * maps.shape[-1] / REFERENCE_SIDE))
        peaks = local_peaks(maps, self.num_peaks, radius, self.threshold)
        found = torch.isfinite(peaks)
        if self.normalise == 'softmax':
            probs = peaks.softmax(dim=-1)
        else:
            mass = torch.where(found, peaks, torch.zeros_like(peaks))
            probs = mass / mass.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(mass.dtype).tiny)
        entropy = -torch.special.xlogy(probs, probs).sum(dim=-1) / math.log(self.num_peaks)
        # no peak: the joint is placed nowhere, the most uncertain case
        return torch.where(found.any(dim=-1), entropy, torch.ones_like(entropy))


def local_peaks(maps: Tensor, num_peaks: int, radius: int, threshold: float) -> Tensor:
    """The ``num_peaks`` highest local maxima of each ``(H, W)`` map, ``(J, num_peaks)``.

    A peak is a pixel equal to the maximum of its ``(2 radius + 1)``
    window, positive and at least ``threshold`` times the map's highest
    value. Peaks are taken from the highest down, each suppressing the
    others within ``radius`` (so a plateau gives one peak). Missing peaks
    are ``-inf``.
    """
    num_maps, height, width = maps.shape
    pooled = F.max_pool2d(maps[:, None], kernel_size=2 * radius + 1, stride=1,
                          padding=radius)[:, 0]
    top = maps.flatten(1).amax(dim=1)[:, None, None]
    is_peak = (maps == pooled) & (maps > 0) & (maps >= threshold * top)
    remaining = torch.where(is_peak, maps, torch.full_like(maps, -math.inf)).flatten(1)
    ys = torch.arange(height).repeat_interleave(width)
    xs = torch.arange(width).repeat(height)
    peaks = torch.full((num_maps, num_peaks), -math.inf, dtype=maps.dtype)
    for t in range(num_peaks):
        value, index = remaining.max(dim=1)
        peaks[:, t] = value
        near = ((ys[None] - ys[index][:, None]).abs() <= radius) \
            & ((xs[None] - xs[index][:, None]).abs() <= radius)
        remaining = remaining.masked_fill(near, -math.inf)
    return peaks
