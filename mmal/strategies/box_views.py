"""The box strategies' shared part: a view's detections, box overlaps, matching across views.

Not a strategy itself: :class:`LocalizationStabilityStrategy`,
:class:`LocalizationTightnessStrategy` and :class:`CALDStrategy` build on it.

**A view's detections.** The scoring loop hands over each image's
candidate boxes before NMS (see :mod:`mmal.models.detectors.candidates`):
the most confident ones, overlapping copies included. The papers these
strategies come from compare a detector's *detections*, the boxes that
survive its post-processing, so each view's candidates are cut the same
way here: foreground confidence ``P_max`` (the largest class probability,
background excluded) at least ``score_thr``, then class-aware NMS at
``nms_iou`` (the class being each box's most probable one). Without NMS a
well-detected object would count once per overlapping copy, and an image
would weigh by how many copies its detector leaves.
"""
import math

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms

from ..utils.boxes import pairwise_iou

#: Defaults of torchvision's Faster R-CNN post-processing, which the
#: public code of CALD and of its re-implementation of Kao et al. uses.
DEFAULT_SCORE_THR = 0.05
DEFAULT_NMS_IOU = 0.5


def check_detection_cfg(owner: str, score_thr, nms_iou) -> tuple[float, float | None]:
    """``score_thr`` and ``nms_iou`` as numbers; a clear error naming the key otherwise."""
    if isinstance(score_thr, bool) or not isinstance(score_thr, (int, float)) \
            or not 0.0 <= score_thr < 1.0:
        raise ValueError(f'{owner}: score_thr={score_thr!r} must lie in [0, 1) (the least '
                         'foreground confidence of a detection)')
    if nms_iou is not None and (isinstance(nms_iou, bool) or not isinstance(nms_iou, (int, float))
                                or not 0.0 < nms_iou <= 1.0):
        raise ValueError(f'{owner}: nms_iou={nms_iou!r} must lie in (0, 1], or be None for no '
                         'NMS')
    return float(score_thr), None if nms_iou is None else float(nms_iou)


def rows(outputs: dict, key: str, index: int, width: int | None = None) -> Tensor:
    """Image ``index``'s ``(N_i, width)`` rows of a per-image output, as float32."""
    value = torch.as_tensor(np.asarray(outputs[key][index], dtype=np.float32))
    if width is not None:
        value = value.reshape(-1, width)
    return value


def foreground(posteriors: Tensor) -> Tensor:
    """``P_max`` of each box: its largest class probability, background (last) excluded."""
    return posteriors[:, :-1].amax(dim=1) if len(posteriors) else posteriors.new_zeros(0)


def detections(boxes: Tensor, posteriors: Tensor, score_thr: float,
               nms_iou: float | None) -> Tensor:
    """Row indices of a view's detections, most confident first (see the module docstring)."""
    if len(boxes) != len(posteriors):
        raise ValueError(f'{len(boxes)} boxes but {len(posteriors)} posterior rows: the scoring '
                         'loop returns them row-aligned')
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long)
    confidence = foreground(posteriors)
    keep = torch.nonzero(confidence >= score_thr).flatten()
    if nms_iou is None or len(keep) == 0:
        return keep[confidence[keep].argsort(descending=True, stable=True)]
    labels = posteriors[keep, :-1].argmax(dim=1)
    return keep[batched_nms(boxes[keep], confidence[keep], labels, nms_iou)]


def best_match(reference: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """For each reference box, the IoU of its best-overlapping box and that box's row.

    With no box to match, the IoU is 0 and the row -1: the object is gone
    from the view, the most unstable a box can be.
    """
    if len(boxes) == 0:
        return reference.new_zeros(len(reference)), torch.full((len(reference),), -1)
    iou, index = pairwise_iou(reference, boxes).max(dim=1)
    return iou, index


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Jensen-Shannon divergence of rows, in nats, each row first scaled to sum to 1.

    In ``[0, log 2]``. Scaling a row to sum 1 leaves a softmax posterior
    unchanged and turns a sigmoid head's independent probabilities into a
    distribution, as CALD's public code has it (``scipy.stats.entropy``
    normalises its arguments).
    """
    p = p / p.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(p.dtype).tiny)
    q = q / q.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(q.dtype).tiny)
    m = (p + q) / 2
    kl_pm = (torch.special.xlogy(p, p) - torch.special.xlogy(p, m)).sum(dim=-1)
    kl_qm = (torch.special.xlogy(q, q) - torch.special.xlogy(q, m)).sum(dim=-1)
    return (0.5 * (kl_pm + kl_qm)).clamp(min=0.0, max=math.log(2))


def check_empty_score(owner: str, empty_score) -> float | str:
    if empty_score != 'max' and (isinstance(empty_score, bool)
                                 or not isinstance(empty_score, (int, float))):
        raise ValueError(f"{owner}: empty_score={empty_score!r} must be 'max' (label images "
                         'with no detection first) or a number')
    return empty_score
