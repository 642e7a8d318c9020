"""Localization tightness: label the images whose box refinement disagrees with its confidence."""
import numpy as np

from ..models.learning_loss import UnsupportedScoreOutputError
from ..registry import STRATEGIES
from ..utils.boxes import paired_iou
from .base import BaseStrategy, require
from .box_views import (
    DEFAULT_NMS_IOU,
    DEFAULT_SCORE_THR,
    check_detection_cfg,
    check_empty_score,
    detections,
    foreground,
    rows,
)


@STRATEGIES.register_module()
class LocalizationTightnessStrategy(BaseStrategy):
    """Tightness and confidence that disagree mark an informative image (Kao et al., ACCV 2018).

    Kao, Lee, Sen & Liu, *Localization-Aware Active Learning for Object
    Detection*, ACCV 2018. A two-stage detector refines each RoI
    proposal ``R^j`` into a box ``B^j``; the refinement's size is a
    localization cue the first stage gives for free. The *tightness* of a
    detection is the overlap of the two,

        ``T(B^j) = IoU(B^j, R^j)``,

    close to 1 when the proposal already fit the object. A box the
    detector is sure about should be tight, and a box it doubts should have
    moved; the informative boxes are those where the two cues disagree.
    The paper's tightness/classification consistency (its LT/C criterion)
    measures the agreement:

        ``J(B^j) = |T(B^j) + P_max(B^j) - 1|``

    (``P_max``: the largest class probability, background excluded), and an
    image is as informative as its least consistent detection, ``min_j
    J(B^j)``: the smaller, the earlier labeled. The score is ``1 - min_j
    J(B^j)``, in ``[0, 1]``, so that higher is labeled first. This follows
    the paper as re-implemented in CALD's public code (``lt_c_train.py``,
    github.com/we1pingyu/CALD).

    The detections are the RoIs with ``P_max >= score_thr`` after
    class-aware NMS (see :mod:`~mmal.strategies.box_views`), each box paired
    with the proposal it was refined from (the model's ``'proposals'``
    output, row-aligned with its ``'boxes'``).

    **Two-stage detectors only.** A single-stage detector (SSD,
    RetinaNet, FCOS) refines fixed anchors, not proposals of an earlier
    stage, so it has no tightness: its wrapper
    (:class:`~mmal.models.LearningLossDetector`) refuses the
    ``'proposals'`` output when the loop scores, and :meth:`scores` refuses
    outputs without them. Use :class:`~mmal.models.LearningLossTwoStageDetector`
    (``configs/learning_loss/faster-rcnn-tiny_ll_synthetic-voc.py``).

    **Images with no detection** get ``empty_score``; ``'max'`` (the
    default, 1) labels them first, as for every detection strategy here:
    the detector either faces an empty image or misses every object.

    Args:
        task (str): ``'detection'``.
        score_thr (float): Least ``P_max`` of a detection.
        nms_iou (float | None): IoU of the class-aware NMS; None keeps
            every RoI the model returns.
        empty_score (float | str): Score of an image with no detection.
    """

    outputs = ('boxes', 'proposals', 'posteriors')
    tasks = ('detection',)
    task_reason = ('it measures how far a two-stage detector moves its RoI proposals, and a '
                   'pose estimator has neither proposals nor boxes; use '
                   'MultiPeakEntropyStrategy or EntropyStrategy for pose')

    def __init__(self, task: str | None = None, score_thr: float = DEFAULT_SCORE_THR,
                 nms_iou: float | None = DEFAULT_NMS_IOU,
                 empty_score: float | str = 'max') -> None:
        super().__init__(task)
        name = type(self).__name__
        self.score_thr, self.nms_iou = check_detection_cfg(name, score_thr, nms_iou)
        self.empty_score = check_empty_score(name, empty_score)

    def scores(self, candidate_outputs: dict, labeled_outputs: dict) -> np.ndarray:
        if 'proposals' not in candidate_outputs:
            raise UnsupportedScoreOutputError(
                f'{type(self).__name__} needs the RoI proposals each box was refined from '
                "(score output 'proposals'), which only a two-stage detector has; a "
                'single-stage detector (SSD, RetinaNet, FCOS) refines anchors, so its boxes have '
                "no tightness. Use model.type='LearningLossTwoStageDetector' (e.g. "
                'configs/learning_loss/faster-rcnn-tiny_ll_synthetic-voc.py) or another strategy')
        require(self, candidate_outputs, *self.outputs)
        out = np.empty(candidate_outputs['num_samples'], dtype=np.float64)
        for i in range(len(out)):
            boxes = rows(candidate_outputs, 'boxes', i, 4)
            proposals = rows(candidate_outputs, 'proposals', i, 4)
            posteriors = rows(candidate_outputs, 'posteriors', i)
            if len(proposals) != len(boxes):
                raise ValueError(f'{type(self).__name__}: image {i} has {len(boxes)} boxes but '
                                 f'{len(proposals)} proposals; they must be row-aligned')
            keep = detections(boxes, posteriors, self.score_thr, self.nms_iou)
            if len(keep) == 0:
                out[i] = 1.0 if self.empty_score == 'max' else float(self.empty_score)
                continue
            out[i] = 1.0 - float(consistency(paired_iou(boxes[keep], proposals[keep]),
                                             foreground(posteriors[keep])).min())
        return out


def consistency(tightness, confidence):
    """The paper's ``J = |T + P_max - 1|`` per detection; small = the cues disagree."""
    return (tightness + confidence - 1.0).abs()
