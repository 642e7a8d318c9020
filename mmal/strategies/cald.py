"""CALD: label images whose predictions disagree across augmented views, then balance classes."""
import math

import numpy as np
import torch
from torch import Tensor

from ..registry import STRATEGIES
from ..scoring import MAIN, ScorePass, build_transform
from .base import BaseStrategy, require, top_k
from .box_views import (
    DEFAULT_NMS_IOU,
    DEFAULT_SCORE_THR,
    best_match,
    check_detection_cfg,
    detections,
    foreground,
    js_divergence,
    rows,
)

#: A mirror image and Gaussian noise of 16/255 in pixel units (CALD's
#: ``'flip'`` and ``'ga'`` augmentations), in units of the normalised input.
DEFAULT_VIEWS = (dict(type='HorizontalFlip'), dict(type='GaussianNoise', std=0.276, seed=0))


@STRATEGIES.register_module()
class CALDStrategy(BaseStrategy):
    """Consistency-based active learning for object detection (Yu et al., CVPR-W 2022).

    Yu, Zhu, Ma, Lin et al., *Consistency-based Active Learning for Object
    Detection*, CVPR Workshops 2022 (arXiv 2103.10374). Definitions and
    defaults follow the authors' public code (``cald_train.py``,
    github.com/we1pingyu/CALD) step by step.

    **Stage 1, consistency of each image with its augmented views.** The
    detector runs on the image and on each view of ``views`` (scoring
    passes with an input transform; boxes come back in the image's frame).
    Each detection ``b_j`` of the image (confidence ``P_max >= score_thr``
    after class-aware NMS, see :mod:`~mmal.strategies.box_views`), with
    class posterior ``p_j``, is matched to the view's detection ``b'_j``
    that overlaps it most, with posterior ``p'_j``. Its consistency is a
    box term plus a class term,

        ``c_j = IoU(b_j, b'_j) + 1/2 (1 - JS(p_j, p'_j)) (P_max(b_j) + P_max(b'_j))``,

    in ``[0, 2]`` (``JS``: Jensen-Shannon divergence, natural log, posteriors
    scaled to sum to 1): 2 when the view finds the same box with the same
    confident posterior. A view's metric is ``min(1, min_j |c_j - beta|)``
    with the base point ``beta = base_point`` (1.3 in the public code): the
    image is as informative as its detection whose consistency lies closest
    to ``beta``, neither found alike in every view (``c`` near 2, nothing to
    learn) nor so inconsistent that it is likely a stray low-confidence box
    (``c`` near 0). A view with no detection scores 0. The image's metric
    ``M`` is the mean over the views; the *smaller* ``M``, the more
    informative. The recorded score of every candidate is ``-M`` (higher
    is labeled first), and an image with no detection at all has ``M = 0``,
    the top score, as in the public code.

    **Stage 2, class balance.** Among the stage-1 top ``ceil(stage1_ratio
    * K)`` candidates (1.2 K in the public code), the K picks are those
    whose predicted class distribution differs most from the labeled set's.
    An image's class vector holds, per class, its highest probability among
    its detections (0 without one), averaged over the image and its views;
    the labeled set's is the mean of its images' vectors. Both become
    distributions by a softmax, as in the public code, and candidates are
    taken by decreasing ``JS(softmax(labeled), softmax(candidate))``,
    candidates with no detection in any view first (as the public code
    does). With ``update_labeled`` each pick joins the labeled mean before
    the next is chosen, so the picks also balance each other; the public
    code leaves it fixed (the default).

    Deviation: the public code counts the labeled images' *ground-truth*
    labels per class; here the labeled set's class vectors come from the
    model's predictions on it, the same measure as the candidates' (the
    scoring pass over the labeled set loads no labels).

    Views: any input transform of ``SCORE_TRANSFORMS`` that maps boxes back
    to the image's frame. The paper's default views (flip, cut-out,
    down-scaling, rotation) need transforms that change the image frame;
    the flip and Gaussian noise (both among the paper's options) are the
    ones available, and more can be added by config.

    Detection only.

    Args:
        task (str): ``'detection'``.
        views (Sequence[dict]): Input transforms, one scoring pass each.
        base_point (float): ``beta``, in ``(0, 2]``.
        stage1_ratio (float): Stage 1 keeps ``ceil(stage1_ratio * K)``
            candidates, ``>= 1``.
        score_thr (float): Least ``P_max`` of a detection.
        nms_iou (float | None): IoU of the class-aware NMS; None keeps
            every candidate box.
        update_labeled (bool): Add each pick to the labeled class mean.
    """

    tasks = ('detection',)
    task_reason = ('it matches the boxes and class posteriors a detector gives on augmented '
                   'views, and a pose estimator outputs joint heatmaps, not boxes; use '
                   'MultiPeakEntropyStrategy or EntropyStrategy for pose')

    def __init__(self, task: str | None = None, views=DEFAULT_VIEWS, base_point: float = 1.3,
                 stage1_ratio: float = 1.2, score_thr: float = DEFAULT_SCORE_THR,
                 nms_iou: float | None = DEFAULT_NMS_IOU, update_labeled: bool = False) -> None:
        super().__init__(task)
        name = type(self).__name__
        if isinstance(views, dict):
            views = (views,)
        if not isinstance(views, (list, tuple)) or not views \
                or not all(isinstance(v, dict) and 'type' in v for v in views):
            raise ValueError(f"{name}: views={views!r} must be a non-empty list of transform "
                             "configs, e.g. [dict(type='HorizontalFlip'), "
                             "dict(type='GaussianNoise', std=0.276)]")
        for view in views:
            try:
                build_transform(view)
            except Exception as error:
                raise ValueError(f'{name}: views has {view!r}, which does not build: '
                                 f'{error}') from error
        if isinstance(base_point, bool) or not isinstance(base_point, (int, float)) \
                or not 0.0 < base_point <= 2.0:
            raise ValueError(f'{name}: base_point={base_point!r} must lie in (0, 2], the range '
                             'of a box consistency (1.3 in the public code)')
        if isinstance(stage1_ratio, bool) or not isinstance(stage1_ratio, (int, float)) \
                or stage1_ratio < 1.0:
            raise ValueError(f'{name}: stage1_ratio={stage1_ratio!r} must be a number >= 1 '
                             '(stage 1 keeps ceil(stage1_ratio * K) candidates)')
        self.views = tuple(dict(v) for v in views)
        self.base_point = float(base_point)
        self.stage1_ratio = float(stage1_ratio)
        self.score_thr, self.nms_iou = check_detection_cfg(name, score_thr, nms_iou)
        self.update_labeled = bool(update_labeled)

    @property
    def view_names(self) -> list[str]:
        return [f'view{i}' for i in range(len(self.views))]

    def candidate_passes(self) -> dict[str, ScorePass]:
        passes = {MAIN: ScorePass(('boxes', 'posteriors'))}
        for name, view in zip(self.view_names, self.views):
            passes[name] = ScorePass(('boxes', 'posteriors'), transform=dict(view))
        return passes

    def labeled_passes(self) -> dict[str, ScorePass]:
        return {MAIN: ScorePass(('boxes', 'posteriors'))}

    # ------------------------------------------------------------ selection
    def select(self, candidate_outputs: dict, labeled_outputs: dict, k: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        views = [f'{v}/' for v in self.view_names]
        require(self, candidate_outputs, 'boxes', 'posteriors',
                *(f'{v}{key}' for v in views for key in ('boxes', 'posteriors')))
        num = candidate_outputs['num_samples']
        if k > num:
            raise ValueError(f'{type(self).__name__}: cannot select {k} of {num} candidates')
        metric, classes = [], []
        for i in range(num):
            m, c = self.image_consistency(candidate_outputs, views, i)
            metric.append(m)
            classes.append(c)
        scores = -np.asarray(metric, dtype=np.float64)
        stage1 = top_k(scores, min(num, max(k, math.ceil(self.stage1_ratio * k))), rng,
                       user=type(self).__name__)
        labeled = self.labeled_classes(labeled_outputs, classes[0].numel() if classes else 0)
        if k == 0:
            return np.zeros(0, dtype=np.int64), scores
        picks = self.balance(torch.stack([classes[i] for i in stage1]), labeled, k, rng)
        return stage1[picks], scores

    def image_consistency(self, outputs: dict, views: list[str], i: int) -> tuple[float, Tensor]:
        """Stage 1 metric ``M`` of image ``i`` and its class vector (mean over views)."""
        boxes, posteriors = self._detections(outputs, '', i)
        classes = [class_vector(posteriors)]
        per_view = []
        for view in views:
            view_boxes, view_posteriors = self._detections(outputs, view, i)
            classes.append(class_vector(view_posteriors))
            if len(boxes) == 0:
                continue
            if len(view_boxes) == 0:
                per_view.append(0.0)
                continue
            # capped at 1: the public code starts its running minimum at 1.0
            per_view.append(min(1.0, float(self.distances(
                boxes, posteriors, view_boxes, view_posteriors).min())))
        metric = float(np.mean(per_view)) if len(boxes) else 0.0
        return metric, torch.stack(classes).mean(dim=0)

    def distances(self, boxes: Tensor, posteriors: Tensor, view_boxes: Tensor,
                  view_posteriors: Tensor) -> Tensor:
        """``|c_j - beta|`` of each detection of the image against one view."""
        iou, match = best_match(boxes, view_boxes)
        matched = view_posteriors[match]
        js = js_divergence(posteriors.double(), matched.double())
        confidence = foreground(posteriors).double() + foreground(matched).double()
        consistency = iou.double() + 0.5 * (1.0 - js) * confidence
        return (consistency - self.base_point).abs()

    def labeled_classes(self, labeled_outputs: dict, num_classes: int) -> tuple[Tensor, int]:
        """Sum of the labeled images' class vectors and their count."""
        total = torch.zeros(num_classes, dtype=torch.float64)
        count = labeled_outputs.get('num_samples', 0)
        if count:
            require(self, labeled_outputs, 'boxes', 'posteriors', where='labeled-set')
            for i in range(count):
                total += class_vector(self._detections(labeled_outputs, '', i)[1])
        return total, count

    def balance(self, classes: Tensor, labeled: tuple[Tensor, int], k: int,
                rng: np.random.Generator) -> np.ndarray:
        """Stage 2: positions into ``classes`` of the K picks, in pick order."""
        total, count = labeled
        total = total.clone()
        empty = (classes.sum(dim=1) == 0).numpy()
        tie_break = rng.permutation(len(classes))
        taken = np.zeros(len(classes), dtype=bool)
        picks: list[int] = []
        while len(picks) < k:
            key = self.divergence(classes, total / max(count, 1))
            # candidates with nothing detected first, then the most unlike the labeled set
            key[empty] = np.inf
            key[taken] = -np.inf
            order = np.lexsort((tie_break, -key))
            if not self.update_labeled:
                return order[:k].astype(np.int64)
            picks.append(int(order[0]))
            taken[order[0]] = True
            total += classes[order[0]]
            count += 1
        return np.asarray(picks, dtype=np.int64)

    @staticmethod
    def divergence(classes: Tensor, labeled_mean: Tensor) -> np.ndarray:
        """``JS(softmax(labeled), softmax(candidate))`` of each candidate's class vector."""
        return js_divergence(labeled_mean.softmax(dim=0)[None],
                             classes.softmax(dim=1)).numpy().astype(np.float64)

    def _detections(self, outputs: dict, prefix: str, i: int) -> tuple[Tensor, Tensor]:
        boxes = rows(outputs, f'{prefix}boxes', i, 4)
        posteriors = rows(outputs, f'{prefix}posteriors', i)
        if posteriors.dim() != 2 or posteriors.shape[1] < 2:
            raise ValueError(f'{type(self).__name__}: image {i} {prefix}posteriors have shape '
                             f'{tuple(posteriors.shape)}, expected (boxes, classes + 1)')
        keep = detections(boxes, posteriors, self.score_thr, self.nms_iou)
        return boxes[keep], posteriors[keep]


def class_vector(posteriors: Tensor) -> Tensor:
    """Per class, the highest probability among the detections, ``(C,)`` float64 (0: none)."""
    if len(posteriors) == 0:
        return torch.zeros(posteriors.shape[1] - 1, dtype=torch.float64)
    return posteriors[:, :-1].amax(dim=0).double()
