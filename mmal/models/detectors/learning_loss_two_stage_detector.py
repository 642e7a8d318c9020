"""Learning Loss on any two-stage mmdet detector (Faster R-CNN and kin)."""
import contextlib
import copy
import inspect
from collections.abc import Iterator, Sequence

import torch
from mmdet.models.detectors import SemiBaseDetector, TwoStageDetector
from mmdet.models.roi_heads.bbox_heads import BBoxHead
from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures.bbox import get_box_tensor
from torch import Tensor, nn

from ..gradient_embeddings import class_layer, roi_gradient_embeddings
from ..learning_loss import LearningLossModel, UnsupportedScoreOutputError
from ..replay import (
    per_image_losses_by_slicing,
    recorded_calls,
    returning,
    summed_losses,
    total_loss,
)
from .box_outputs import ground_truth, pooled_box_features
from .candidates import check_score_cfg
from .teacher_student import TeacherStudentMixin, check_score_on

#: What :meth:`LearningLossTwoStageDetector.task_outputs` can return.
TASK_OUTPUTS = frozenset({'posteriors', 'boxes', 'proposals', 'grad_embedding', 'box_features',
                          'gt_boxes', 'gt_labels'})


@MODELS.register_module()
class LearningLossTwoStageDetector(TeacherStudentMixin, LearningLossModel):
    """Adds a loss-prediction module to a two-stage detector (RPN + RoI head).

    Args:
        detector (dict): Config of any mmdet :class:`TwoStageDetector`
            (Faster R-CNN, Cascade R-CNN, ...) without a mask branch, left as
            mmdet defines it.
        taps, loss_prediction, rank_loss, rank_loss_weight, init_cfg: See
            :class:`~mmal.models.LearningLossModel`.
        score_cfg (dict, optional): Which RoIs :meth:`task_outputs` returns:
            the ``num_boxes`` (default 100) with the highest foreground
            confidence per image, among those with at least ``score_thr``
            (default 0.05).
        score_on (str): With ``detector`` a teacher-student pair (mmdet's
            ``SoftTeacher`` around a two-stage detector: semi-supervised
            training), the member scoring reads, ``'student'`` (default) or
            ``'teacher'``; training reads the student (see
            :mod:`~mmal.models.detectors.teacher_student`).

    **Per-image target loss.** An image's target loss is its *summed*
    objective, as :class:`LearningLossDetector` has it by default
    (``per_image_normalizer='none'``): its RPN loss plus its RoI-head loss,
    each loss term summed over the image's elements instead of divided by
    the batch's ``avg_factor``. The batch loss dict is mmdet's own: mmdet's
    :meth:`TwoStageDetector.loss` runs on the features already extracted.

    Both stages *sample* randomly (the RPN's anchors, the RoI head's
    proposals with ``RandomSampler``), so recomputing an image's loss
    alone would draw other anchors and RoIs than the batch loss did, and the
    module would be trained against a noisier target than the one the
    detector optimises. Instead, while mmdet computes the batch loss, the
    inputs of the heads' loss functions are recorded: per level the RPN's
    ``loss_by_feat_single`` arguments (predictions and the sampled targets,
    all batch-first), and the box head's ``loss_and_target`` arguments (the
    batch's RoIs, their predictions and the sampling results). Each image's
    loss is then those same inputs restricted to the image (batch index
    ``i``, or the RoIs whose first column is ``i`` with ``sampling_results
    [i]``), computed with the loss modules summing
    (:func:`~mmal.models.replay.summed_losses`).
    Nothing is drawn again, so the random state is untouched and the batch
    loss is bit-for-bit what plain mmdet computes for the same seed, and the
    per-image losses add up to the batch's summed objective. Only an RPN
    head whose loss does not go through ``loss_by_feat_single`` falls back
    to recomputing each image as a batch of one
    (:func:`per_image_losses_by_slicing`), which redraws its anchor sample if
    it has a random sampler. With Cascade R-CNN each stage's box loss is
    weighted by ``stage_loss_weights`` as in mmdet.

    **Scoring outputs** (:meth:`task_outputs`): the RoI head's softmax class
    posteriors with the background last (mmdet's ``BBoxHead`` convention),
    the refined box of each RoI for its top foreground class and the RPN
    proposal it came from, all in network-input pixels; and the gradient
    embedding of the box head's class layer under argmax pseudo-labels
    (``grad_embedding``, see :func:`roi_gradient_embeddings`); each refined
    box's pooled features (``box_features``,
    :mod:`~mmal.models.detectors.box_outputs`); on labeled batches the
    loaded ground truth (``gt_boxes``, ``gt_labels``).
    """

    posterior_kind = 'softmax'
    #: The task outputs :meth:`task_outputs` gives.
    task_output_names = TASK_OUTPUTS

    def __init__(self, detector: dict, taps: Sequence[str] | None = None,
                 loss_prediction: dict | None = None,
                 rank_loss: dict | None = None, rank_loss_weight: float = 1.0,
                 init_cfg: dict | None = None, score_cfg: dict | None = None,
                 score_on: str = 'student') -> None:
        score_cfg = check_score_cfg(score_cfg)
        built = MODELS.build(detector)
        key, kind = 'model.detector.type', detector.get('type')
        plain = built
        if isinstance(built, SemiBaseDetector):
            # mmdet's teacher-student pair (SoftTeacher): its student is checked below
            key, kind, plain = 'model.detector.detector.type', type(built.student).__name__, \
                built.student
        if not isinstance(plain, TwoStageDetector):
            raise TypeError(f'{key}={kind!r} is not a '
                            'two-stage detector; LearningLossTwoStageDetector wraps '
                            'TwoStageDetector subclasses (FasterRCNN, CascadeRCNN, ...), '
                            'alone or as the detector of a SemiBaseDetector (SoftTeacher). '
                            'For a single-stage detector (SSD, RetinaNet, FCOS, ...) set '
                            "model.type='LearningLossDetector'")
        if not plain.with_roi_head:
            raise TypeError(f'{key}={kind!r} has no roi_head; '
                            'LearningLossTwoStageDetector needs one')
        if plain.roi_head.with_mask:
            raise TypeError(f'{key}={kind!r} has a mask branch '
                            '(roi_head.mask_head); the per-image target covers the RPN and the '
                            'box branch only, so its mask loss would be left out. Remove the '
                            'mask head or wrap a box-only detector')
        self.score_on = check_score_on(built, score_on)
        super().__init__(built, taps, loss_prediction, rank_loss, rank_loss_weight, init_cfg)
        self.score_cfg = score_cfg

    @property
    def detector(self) -> TwoStageDetector:
        """The detector read now: the wrapped one, or a member of its teacher-student pair."""
        return self.member

    # ------------------------------------------------------------ target losses
    def task_loss(self, feats: tuple, data_samples: list) -> tuple[dict, Tensor]:
        detector = self.detector
        rpn_head = detector.rpn_head if detector.with_rpn else None
        with contextlib.ExitStack() as stack:
            rpn_calls = stack.enter_context(recorded_calls(
                [] if rpn_head is None else [rpn_head], 'loss_by_feat_single'))
            roi_calls = [stack.enter_context(recorded_calls([head], 'loss_and_target'))
                         for head in self._bbox_heads()]
            stack.enter_context(returning(detector, 'extract_feat', feats))
            losses = detector.loss(None, data_samples)
        rpn = self._rpn_per_image(feats, data_samples, rpn_calls)
        roi = self._roi_per_image(len(data_samples), roi_calls, feats[0].device)
        return losses, (rpn + roi).detach()

    def _bbox_heads(self) -> list[nn.Module]:
        heads = self.detector.roi_head.bbox_head
        return list(heads) if isinstance(heads, nn.ModuleList) else [heads]

    @torch.no_grad()
    def _rpn_per_image(self, feats: tuple, data_samples: list, calls: list) -> Tensor:
        """Each image's summed RPN loss, from the batch's recorded targets."""
        num_imgs = len(data_samples)
        per_image = feats[0].new_zeros(num_imgs)
        if not self.detector.with_rpn:
            return per_image
        head = self.detector.rpn_head
        batch_first = all(a.shape[0] == num_imgs for call in calls
                          for a in call.args if isinstance(a, Tensor))
        if not calls or not batch_first:
            rpn_samples = copy.deepcopy(data_samples)  # as TwoStageDetector.loss has them
            for sample in rpn_samples:
                sample.gt_instances.labels = torch.zeros_like(sample.gt_instances.labels)
            gts, ignore, metas = unpack_gt_instances(rpn_samples)
            with summed_losses(head):
                return per_image_losses_by_slicing(head, head(feats), gts, metas, ignore)
        with summed_losses(head):
            for call in calls:  # one call per feature level
                for i in range(num_imgs):
                    one = [a[i:i + 1] if isinstance(a, Tensor) else a for a in call.args]
                    per_image[i] += total_loss(head.loss_by_feat_single(*one, **call.kwargs))
        return per_image

    @torch.no_grad()
    def _roi_per_image(self, num_imgs: int, calls: list[list], device) -> Tensor:
        """Each image's summed box-head loss, on the RoIs the batch sampled."""
        per_image = torch.zeros(num_imgs, device=device)
        weights = getattr(self.detector.roi_head, 'stage_loss_weights', None)
        for stage, (head, head_calls) in enumerate(zip(self._bbox_heads(), calls)):
            weight = 1.0 if weights is None else float(weights[stage])
            signature = inspect.signature(head.loss_and_target)
            for call in head_calls:
                inputs = signature.bind(*call.args, **call.kwargs).arguments
                rois = inputs['rois']
                with summed_losses(head):
                    for i in range(num_imgs):
                        rows = rois[:, 0] == i
                        one = dict(inputs, rois=rois[rows],
                                   sampling_results=[inputs['sampling_results'][i]])
                        for key in ('cls_score', 'bbox_pred'):
                            if isinstance(inputs.get(key), Tensor):
                                one[key] = inputs[key][rows]
                        terms = head.loss_and_target(**one)['loss_bbox']
                        per_image[i] += weight * total_loss(
                            [v for k, v in terms.items() if 'loss' in k])
        return per_image

    # ------------------------------------------------------------ scoring outputs
    def task_outputs(self, inputs: Tensor, feats: tuple, data_samples: list,
                     wanted: frozenset) -> dict:
        """Per-RoI outputs for the scoring strategies, in network-input pixels.

        Args:
            inputs (Tensor): The preprocessed batch (unused: the RoI head
                works on ``feats``).
            feats (tuple): The output of ``task_model.extract_feat``.
            data_samples (list): The batch's data samples (no labels needed).
            wanted (frozenset): Any of ``'posteriors'``, ``'boxes'``,
                ``'proposals'``, ``'grad_embedding'``, ``'box_features'``,
                ``'gt_boxes'`` and ``'gt_labels'``.

        Returns:
            dict: For each wanted key a list with one tensor per image, the
            rows being the RoIs chosen by ``score_cfg`` (highest foreground
            confidence first): ``posteriors`` ``(N_i, C + 1)`` softmax class
            probabilities, background last; ``boxes`` ``(N_i, 4)`` xyxy,
            each RoI refined for its top foreground class; ``proposals``
            ``(N_i, 4)`` xyxy, the RPN proposal each row was refined from.
            ``grad_embedding`` is one ``(B, (C + 1) * D)`` tensor over those
            same RoIs (:func:`roi_gradient_embeddings`); the box head's pass
            that gives the posteriors records its class layer's input.
            ``box_features`` ``(N_i, C)``: the first map of ``feats``
            averaged over each refined box (:func:`pooled_box_features`).
            ``gt_boxes`` / ``gt_labels``: the batch's loaded ground truth.
        """
        unsupported = set(wanted) - TASK_OUTPUTS
        if unsupported:
            raise UnsupportedScoreOutputError(
                f'{type(self.detector).__name__} cannot give {sorted(unsupported)}; a '
                f'two-stage detector gives {sorted(TASK_OUTPUTS)}')
        gt = ground_truth(data_samples, wanted)
        wanted = wanted - set(gt)
        if not wanted:
            return gt
        roi_head = self.detector.roi_head
        bbox_head = roi_head.bbox_head
        if not isinstance(bbox_head, BBoxHead):
            raise UnsupportedScoreOutputError(
                f'{type(roi_head).__name__} has {type(bbox_head).__name__} as bbox_head; '
                'task outputs need a single BBoxHead (a StandardRoIHead)')
        metas = [sample.metainfo for sample in data_samples]
        recorded = [bbox_head, class_layer(bbox_head)] if 'grad_embedding' in wanted else []
        with mmcv_ops_precision(feats) as feats, recorded_calls(recorded) as calls:
            rpn_results = self._rpn_results(feats, data_samples)
            # rcnn_test_cfg=None: mmdet's raw per-RoI scores and per-class boxes, no NMS
            raw = roi_head.predict_bbox(feats, metas, rpn_results, rcnn_test_cfg=None,
                                        rescale=False)
        proposals = [get_box_tensor(res.bboxes) for res in rpn_results]
        num_classes = bbox_head.num_classes
        result: dict = {key: [] for key in wanted if key != 'grad_embedding'}
        result.update(gt)
        refined = []
        kept_posteriors, kept_rows = [], []
        for res, props in zip(raw, proposals):
            scores = res.scores
            fg, label = scores[:, :num_classes].max(dim=1)
            order = fg.argsort(descending=True)[:self.score_cfg['num_boxes']]
            keep = order[fg[order] >= self.score_cfg['score_thr']]
            kept_posteriors.append(scores[keep])
            kept_rows.append(keep)
            if 'posteriors' in wanted:
                result['posteriors'].append(scores[keep])
            boxes = get_box_tensor(res.bboxes).reshape(len(scores), -1, 4)
            cls = label[keep] if boxes.shape[1] > 1 else torch.zeros_like(keep)
            refined.append(boxes[keep, cls])
            if 'proposals' in wanted:
                result['proposals'].append(props[keep])
        if 'boxes' in wanted:
            result['boxes'] = refined
        if 'box_features' in wanted:
            stride = roi_head.bbox_roi_extractor.featmap_strides[0]
            result['box_features'] = pooled_box_features(feats[0], refined, stride)
        if 'grad_embedding' in wanted:
            result['grad_embedding'] = roi_gradient_embeddings(
                bbox_head, calls, kept_posteriors, kept_rows, [len(p) for p in proposals])
        return result

    # ------------------------------------------------------------ predictions
    def predict_from_feats(self, inputs: Tensor, feats: tuple, data_samples: list) -> list:
        """mmdet's post-processed predictions, rescaled to the original image."""
        detector = self.detector
        with mmcv_ops_precision(feats) as feats:
            rpn_results = self._rpn_results(feats, data_samples)
            results = detector.roi_head.predict(feats, rpn_results, data_samples, rescale=True)
        return detector.add_pred_to_datasample(data_samples, results)

    def _rpn_results(self, feats: tuple, data_samples: list) -> list:
        """Proposals in network-input pixels, as ``TwoStageDetector.predict`` gets them."""
        if data_samples[0].get('proposals', None) is not None:
            return [sample.proposals for sample in data_samples]
        return self.detector.rpn_head.predict(feats, data_samples, rescale=False)


@contextlib.contextmanager
def mmcv_ops_precision(feats: tuple) -> Iterator[tuple]:
    """``feats`` as the RPN and RoI head can take them under autocast.

    Under bf16 autocast (a CPU's, or a GPU's ``AmpOptimWrapper(dtype=
    'bfloat16')``) mmcv's ``nms`` and ``RoIAlign`` get bf16 tensors, which
    their kernels refuse ("expected scalar type Float but found BFloat16",
    "ROIAlign_forward not implemented for 'BFloat16'"): the heads then run in
    float32, the backbone and neck keeping bf16. fp16 passes through as is.
    """
    device = feats[0].device.type
    if not (torch.is_autocast_enabled(device)
            and torch.get_autocast_dtype(device) == torch.bfloat16):
        yield feats
        return
    with torch.autocast(device, enabled=False):
        yield tuple(f.float() for f in feats)


# ------------------------------------------------------------------ gradient embeddings


