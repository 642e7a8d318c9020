"""Localization stability: label the images whose boxes move when the image is perturbed."""
import numpy as np
import torch

from ..registry import STRATEGIES
from ..scoring import MAIN, ScorePass
from .base import BaseStrategy, require
from .box_views import (
    DEFAULT_NMS_IOU,
    DEFAULT_SCORE_THR,
    best_match,
    check_detection_cfg,
    check_empty_score,
    detections,
    foreground,
    rows,
)

#: Kao et al. add Gaussian noise of standard deviation 8, 16, ..., 48 to
#: 0-255 pixel values. The scoring loop adds noise to the normalised input
#: (divided by the preprocessor's pixel std, about 58 for the ImageNet
#: statistics mmdet uses), so the same six levels are these.
PAPER_PIXEL_STDS = (8, 16, 24, 32, 40, 48)
IMAGENET_PIXEL_STD = 58.0
DEFAULT_STDS = tuple(round(s / IMAGENET_PIXEL_STD, 3) for s in PAPER_PIXEL_STDS)


@STRATEGIES.register_module()
class LocalizationStabilityStrategy(BaseStrategy):
    """Boxes that move under input noise mark an informative image (Kao et al., ACCV 2018).

    Kao, Lee, Sen & Liu, *Localization-Aware Active Learning for Object
    Detection*, ACCV 2018. The detector runs on the image and on
    N copies with Gaussian noise of increasing strength (one scoring pass
    per level, ``stds``). Reference boxes ``B_0^j`` are the detections of
    the clean image (confidence ``P_max >= score_thr``, after class-aware
    NMS; see :mod:`~mmal.strategies.box_views`). For each noise level
    ``n``, the corresponding box ``C_n(B_0^j)`` is the detection of the
    noisy copy that overlaps ``B_0^j`` most; a box's stability is its mean
    overlap over the levels,

        ``S_B(B_0^j) = (1/N) sum_n IoU(B_0^j, C_n(B_0^j))``

    (0 for a level with no detection at all), and the image's stability is
    the confidence-weighted mean over its reference boxes, so that confident
    boxes, the ones a user would keep, count most:

        ``S_I = sum_j P_max(B_0^j) S_B(B_0^j) / sum_j P_max(B_0^j)``.

    Low stability is informative. The score is the instability
    ``1 - S_I``, in ``[0, 1]``, plus, with ``classification_weight`` =
    ``w > 0``, the paper's classification term: ``U_I = max_j (1 -
    P_max(B_0^j))``, the least confident reference box. The paper's
    combined criterion (LS+C) ranks by ``U_I - lambda S_I``; ``w * U_I +
    1 - S_I`` ranks the same with ``w = 1 / lambda`` (``w = 1``: the
    paper's and the public re-implementations' ``lambda = 1``). The
    definitions follow the paper as re-implemented in the public code of
    CALD (``ls_c_train.py``, github.com/we1pingyu/CALD) and of the
    ``localization_stability`` miner of another public benchmark, which
    agree on every step above.

    Boxes are compared in the frame of the input (the scoring loop maps
    views back), and noise moves no object, so a perfectly stable detector
    scores 0.

    **Images with no reference box** (nothing detected on the clean image)
    get ``empty_score``; ``'max'`` (the default), the largest score, labels
    them first: the detector either faces an empty image or misses every
    object, and cannot tell which. The public re-implementation gives them
    stability 0, the same order.

    Detection only.

    Args:
        task (str): ``'detection'``.
        stds (Sequence[float]): Noise levels, standard deviations of the
            noise added to the normalised input (one scoring pass each).
            Default: the paper's 8, 16, ..., 48 of 255 in pixel units.
        score_thr (float): Least ``P_max`` of a detection (reference boxes
            and the noisy copies' boxes alike).
        nms_iou (float | None): IoU of the class-aware NMS that makes
            candidates detections; None keeps every candidate.
        classification_weight (float): ``w`` above; 0 is localization
            stability alone.
        empty_score (float | str): Score of an image with no reference box.
        seed (int): Seed of the noise (level ``i`` uses ``seed + i``).
    """

    tasks = ('detection',)
    task_reason = ('it compares the boxes a detector finds on noisy copies of an image, and a '
                   'pose estimator outputs joint heatmaps, not boxes; use '
                   'MultiPeakEntropyStrategy or EntropyStrategy for pose')

    def __init__(self, task: str | None = None, stds=DEFAULT_STDS,
                 score_thr: float = DEFAULT_SCORE_THR, nms_iou: float | None = DEFAULT_NMS_IOU,
                 classification_weight: float = 0.0, empty_score: float | str = 'max',
                 seed: int = 0) -> None:
        super().__init__(task)
        name = type(self).__name__
        if isinstance(stds, (int, float)):
            stds = (stds,)
        if (not isinstance(stds, (list, tuple)) or not stds
                or any(isinstance(s, bool) or not isinstance(s, (int, float)) or s <= 0
                       for s in stds)):
            raise ValueError(f'{name}: stds={stds!r} must be a non-empty list of noise standard '
                             'deviations > 0 (in units of the normalised input, e.g. '
                             f'{list(DEFAULT_STDS)})')
        if (isinstance(classification_weight, bool)
                or not isinstance(classification_weight, (int, float))
                or classification_weight < 0):
            raise ValueError(f'{name}: classification_weight={classification_weight!r} must be '
                             'a number >= 0 (0: localization stability alone; 1: the paper\'s '
                             'LS+C)')
        self.stds = tuple(float(s) for s in stds)
        self.score_thr, self.nms_iou = check_detection_cfg(name, score_thr, nms_iou)
        self.classification_weight = float(classification_weight)
        self.empty_score = check_empty_score(name, empty_score)
        self.seed = int(seed)

    @property
    def levels(self) -> list[str]:
        """The names of the noisy passes."""
        return [f'noise{i}' for i in range(len(self.stds))]

    def candidate_passes(self) -> dict[str, ScorePass]:
        passes = {MAIN: ScorePass(('boxes', 'posteriors'))}
        for i, (level, std) in enumerate(zip(self.levels, self.stds)):
            passes[level] = ScorePass(('boxes', 'posteriors'), transform=dict(
                type='GaussianNoise', std=std, seed=self.seed + i))
        return passes

    def scores(self, candidate_outputs: dict, labeled_outputs: dict) -> np.ndarray:
        require(self, candidate_outputs, 'boxes', 'posteriors',
                *(f'{level}/{key}' for level in self.levels for key in ('boxes', 'posteriors')))
        out = np.empty(candidate_outputs['num_samples'], dtype=np.float64)
        for i in range(len(out)):
            reference, confidence = self._detections(candidate_outputs, '', i)
            if len(reference) == 0:
                out[i] = self.empty_value()
                continue
            views = [self._detections(candidate_outputs, f'{level}/', i)[0]
                     for level in self.levels]
            out[i] = self.image_score(reference, confidence, views)
        return out

    def image_score(self, reference: torch.Tensor, confidence: torch.Tensor,
                    views: list[torch.Tensor]) -> float:
        """``w U_I + 1 - S_I`` of one image from its reference and noisy detections."""
        stability = torch.stack([best_match(reference, boxes)[0] for boxes in views]).mean(0)
        weight = confidence.double()
        image_stability = float((weight * stability.double()).sum() / weight.sum())
        uncertainty = float(1.0 - confidence.min())
        return self.classification_weight * uncertainty + 1.0 - image_stability

    def empty_value(self) -> float:
        if self.empty_score == 'max':
            return self.classification_weight + 1.0
        return float(self.empty_score)

    def _detections(self, outputs: dict, prefix: str, i: int):
        boxes = rows(outputs, f'{prefix}boxes', i, 4)
        posteriors = rows(outputs, f'{prefix}posteriors', i)
        if posteriors.dim() != 2 or posteriors.shape[1] < 2:
            raise ValueError(f'{type(self).__name__}: image {i} {prefix}posteriors have shape '
                             f'{tuple(posteriors.shape)}, expected (boxes, classes + 1)')
        keep = detections(boxes, posteriors, self.score_thr, self.nms_iou)
        return boxes[keep], foreground(posteriors[keep])
