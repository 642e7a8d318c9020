"""The uncertainty family's shared part: per-box / per-joint scores, aggregated per sample.

Not a strategy itself: :class:`LeastConfidenceStrategy`,
:class:`MarginStrategy` and :class:`EntropyStrategy` each register one
measure on top of it.
"""
import math
from abc import ABCMeta, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from .base import BaseStrategy

AGGREGATIONS = ('max', 'mean', 'sum')


class UncertaintyStrategy(BaseStrategy, metaclass=ABCMeta):
    """Score = how unsure the model is, from its raw head outputs (one pass).

    **Detection** (SSD-style softmax heads, background last, as mmdet's SSD
    and ``score_step``'s ``head_outputs`` document). Scores are computed
    **before NMS**, on the ``num_boxes`` anchors with the highest foreground
    confidence (``max`` over the non-background classes), the same cut as
    mmdet's ``nms_pre``, keeping those whose foreground confidence reaches
    ``score_thr``. Why not after NMS: NMS keeps the locally most confident
    box and the score threshold drops the unsure ones, so the detections
    that survive are exactly the ones the model is sure about, and an
    uncertain image often ends with no detection at all; the competing,
    suppressed boxes are where the doubt lives. It is also cheaper (no NMS).
    The price: overlapping anchors on one object all count, which inflates
    ``'sum'`` for large objects. A box's uncertainty is measured on its full
    posterior over the C classes and background, so "object or
    background?" doubt counts as well as "which class?" doubt.

    **Images with no candidate box** (none of the top anchors reaches
    ``score_thr``): a detector that sees nothing in an image either faces an
    empty image or misses everything in it, and cannot tell which, so by
    default (``empty_score='max'``) the image counts as one box with a
    uniform posterior, the measure's maximum: such images are labeled
    first. Give a number (e.g. ``0.0``) to label them last instead.

    **Pose** (heatmap heads, ``head_outputs`` ``(B, K, H, W)``; a list of
    stages is read at its last): each subclass measures every joint's
    heatmap, aggregated over the K joints. Joint visibility is unknown
    without labels, so every joint counts.

    Per box / joint, aggregated per sample by ``aggregation``: ``'max'``
    (the most uncertain box or joint), ``'mean'`` or ``'sum'`` (more
    uncertain boxes make a more informative image), as compared by Brust et
    al., *Active Learning for Deep Object Detection*, VISAPP 2019.

    Args:
        aggregation (str): ``'max'``, ``'mean'`` or ``'sum'``.
        num_boxes (int): Detection: anchors per image scored, by foreground
            confidence.
        score_thr (float): Detection: minimum foreground confidence of a
            candidate box.
        empty_score (float | str): Detection: the score of an image with no
            candidate box; ``'max'`` is the measure's maximum, that of a
            uniform posterior.
    """

    score_outputs = ('head_outputs',)
    tasks = ('detection', 'pose')

    def __init__(self, aggregation: str = 'max', num_boxes: int = 100,
                 score_thr: float = 0.05, empty_score: float | str = 'max') -> None:
        name = type(self).__name__
        if aggregation not in AGGREGATIONS:
            raise ValueError(f'{name}: aggregation={aggregation!r} must be one of '
                             f'{AGGREGATIONS}')
        if not isinstance(num_boxes, int) or isinstance(num_boxes, bool) or num_boxes < 1:
            raise ValueError(f'{name}: num_boxes={num_boxes!r} must be an integer >= 1')
        if not 0.0 <= score_thr <= 1.0:
            raise ValueError(f'{name}: score_thr={score_thr!r} must lie in [0, 1]')
        if empty_score != 'max' and not isinstance(empty_score, (int, float)):
            raise ValueError(f"{name}: empty_score={empty_score!r} must be 'max' or a number")
        self.aggregation = aggregation
        self.num_boxes = num_boxes
        self.score_thr = float(score_thr)
        self.empty_score = empty_score
        self.task: str | None = None

    def check_task(self, task: str) -> None:
        """Refuse other tasks, and remember which measurement applies."""
        super().check_task(task)
        self.task = task

    # ------------------------------------------------------------- measures
    @abstractmethod
    def box_uncertainty(self, probs: Tensor) -> Tensor:
        """Uncertainty of each posterior ``(..., C + 1)`` -> ``(...)``; higher = less sure."""

    def joint_uncertainty(self, heatmaps: Tensor) -> Tensor:
        """Uncertainty of each joint's heatmap ``(B, K, H, W)`` -> ``(B, K)``."""
        raise NotImplementedError(f'{type(self).__name__} has no heatmap measure')

    # ------------------------------------------------------------- scoring
    def score_batch(self, outputs: dict) -> Tensor:
        if self.task == 'detection':
            return self.detection_scores(outputs['head_outputs'])
        if self.task == 'pose':
            return self.pose_scores(outputs['head_outputs'])
        raise RuntimeError(f'{type(self).__name__}: call check_task(task) first, the '
                           'measurement differs between detection and pose')

    def detection_scores(self, head_outputs: Sequence) -> Tensor:
        """Per-image scores ``(B,)`` from SSD-style ``(cls_scores, bbox_preds)``."""
        cls_scores, bbox_preds = head_outputs[0], head_outputs[1]
        logits = flatten_class_logits(cls_scores, bbox_preds)  # (B, N, C + 1)
        probs = logits.float().softmax(dim=-1)
        # Background is the last class, as in mmdet's SSD.
        foreground = probs[..., :-1].amax(dim=-1)
        top_fg, index = foreground.topk(min(self.num_boxes, foreground.shape[1]), dim=1)
        top = probs.gather(1, index.unsqueeze(-1).expand(-1, -1, probs.shape[-1]))
        uncertainty = self.box_uncertainty(top)
        valid = top_fg >= self.score_thr
        if self.empty_score == 'max':
            uniform = probs.new_full((probs.shape[-1],), 1.0 / probs.shape[-1])
            empty = self.box_uncertainty(uniform)
        else:
            empty = probs.new_tensor(float(self.empty_score))
        return aggregate(uncertainty, valid, self.aggregation, empty)

    def pose_scores(self, heatmaps: Tensor | Sequence[Tensor]) -> Tensor:
        """Per-instance scores ``(B,)`` from heatmaps ``(B, K, H, W)``."""
        if isinstance(heatmaps, (list, tuple)):
            heatmaps = heatmaps[-1]  # multi-stage heads: the final stage predicts
        if not isinstance(heatmaps, Tensor) or heatmaps.dim() != 4:
            raise ValueError(f'{type(self).__name__} expects pose heatmaps (B, K, H, W), got '
                             f'{getattr(heatmaps, "shape", type(heatmaps).__name__)}')
        uncertainty = self.joint_uncertainty(heatmaps.float())
        valid = torch.ones_like(uncertainty, dtype=torch.bool)
        return aggregate(uncertainty, valid, self.aggregation, uncertainty.new_tensor(0.))


def flatten_class_logits(cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor]) -> Tensor:
    """Per-level ``(B, A*(C+1), H, W)`` class maps as ``(B, sum_l H*W*A, C+1)``.

    The number of anchors per location, ``A``, is read from the box map
    (``A*4`` channels): the class maps alone do not tell ``A`` from ``C+1``.
    The layout (location-major, then anchor) is mmdet's.
    """
    if len(cls_scores) != len(bbox_preds) or not cls_scores:
        raise ValueError('detection head_outputs must be (cls_scores, bbox_preds), one map '
                         'per level each')
    flat, classes = [], set()
    for level, (cls, box) in enumerate(zip(cls_scores, bbox_preds)):
        anchors = box.shape[1] // 4
        if anchors == 0 or box.shape[1] % 4 or cls.shape[1] % anchors:
            raise ValueError(f'level {level}: {cls.shape[1]} class channels and '
                             f'{box.shape[1]} box channels are not A*(C+1) and A*4')
        classes.add(cls.shape[1] // anchors)
        flat.append(cls.permute(0, 2, 3, 1).reshape(cls.shape[0], -1, cls.shape[1] // anchors))
    if len(classes) != 1:
        raise ValueError(f'levels disagree on the number of classes: {sorted(classes)}')
    return torch.cat(flat, dim=1)


def aggregate(values: Tensor, valid: Tensor, how: str, empty: Tensor) -> Tensor:
    """Reduce ``(B, N)`` values over the valid entries; ``empty`` where none is valid."""
    count = valid.sum(dim=1)
    if how == 'max':
        out = values.masked_fill(~valid, -math.inf).amax(dim=1)
    else:
        out = (values * valid).sum(dim=1)
        if how == 'mean':
            out = out / count.clamp(min=1)
    return torch.where(count > 0, out, empty.to(out.dtype).expand_as(out))
