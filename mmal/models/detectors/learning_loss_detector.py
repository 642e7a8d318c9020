"""Learning Loss on any single-stage mmdet detector."""
import contextlib
from collections.abc import Sequence

from mmdet.models.detectors import SemiBaseDetector, SingleStageDetector
from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import MODELS
from torch import Tensor

from ..gradient_embeddings import dense_gradient_embeddings, final_cls_convs
from ..heads import with_per_image_loss_head
from ..learning_loss import LearningLossModel, UnsupportedScoreOutputError
from ..replay import per_image_losses_by_slicing, recorded_calls, summed_losses
from .box_outputs import ground_truth, level_stride, pooled_box_features
from .candidates import (
    check_score_cfg,
    dense_candidates,
    gradient_refusal,
    posterior_kind,
    posterior_refusal,
)
from .teacher_student import TeacherStudentMixin, check_score_on


@MODELS.register_module()
class LearningLossDetector(TeacherStudentMixin, LearningLossModel):
    """Adds a loss-prediction module to a single-stage detector.

    Args:
        detector (dict): Config of any mmdet :class:`SingleStageDetector`
            (SSD, RetinaNet, FCOS, RTMDet, YOLOX, ...), left as mmdet defines
            it; mmdet's ``SSDHead``, ``RTMDetHead``, ``RTMDetSepBNHead`` and
            ``YOLOXHead`` are built as our subclasses of them
            (:func:`~mmal.models.heads.with_per_image_loss_head`: the same
            weights and training loss). Or mmdet's mean teacher around one
            (``SemiBaseDetector``: semi-supervised training, pseudo-labels
            the teacher's detections above ``cls_pseudo_thr``; see
            :mod:`~mmal.models.detectors.teacher_student`).
        taps, loss_prediction, rank_loss, rank_loss_weight, init_cfg: See
            :class:`~mmal.models.LearningLossModel`.

    Per-image target losses come from the head's ``loss_by_feat_per_image``
    when it has one (SSD, RTMDet, YOLOX: :mod:`mmal.models.heads` computes
    them in the same pass as the batch loss); for other heads each image's loss is
    recomputed as a batch of one under ``no_grad``, which costs one more
    target assignment per image. That loss is the image's *summed*
    objective, as for SSD (``per_image_normalizer='none'``): mmdet's heads
    divide by the batch's positive count (``avg_factor``), and an image's
    own positives would rank a crowded, badly detected image below an easy
    one. The project measured the module's held-out Spearman correlation at
    0.36 on the summed SSD target against 0.12 on the normalised one.
    ``'positives'`` keeps mmdet's normalisation.

    Scoring outputs (``score_step``): the candidate boxes of
    :mod:`~mmal.models.detectors.candidates`, with posteriors from a
    softmax head (SSD; YOLOX's objectness and class shares) or a sigmoid
    head (RetinaNet, FCOS: per-class probabilities, see ``posterior_kind``),
    and their last-layer gradient embedding under argmax pseudo-labels
    (``grad_embedding``), and each candidate's pooled features
    (``box_features``, :mod:`~mmal.models.detectors.box_outputs`); on
    labeled batches the loaded ground truth (``gt_boxes``, ``gt_labels``).
    Heads whose class scores are IoU estimates (RTMDet's quality focal
    loss) refuse the posteriors and the embedding, and YOLOX the embedding,
    naming why.

    Args:
        per_image_normalizer (str): ``'none'`` (summed) or ``'positives'``,
            for heads without ``loss_by_feat_per_image`` (SSD's head takes
            its own; RTMDet's and YOLOX's give the summed objective only).
        score_cfg (dict, optional): ``num_boxes`` (candidate boxes per
            image, default 100) and ``score_thr`` (their minimum foreground
            confidence, default 0.05).
        score_on (str): With ``detector`` a teacher-student pair, the
            member scoring reads, ``'student'`` (default) or ``'teacher'``.
    """

    task_output_names = frozenset({'posteriors', 'boxes', 'grad_embedding', 'box_features',
                                   'gt_boxes', 'gt_labels'})

    @classmethod
    def output_refusals(cls, outputs, model_cfg: dict | None = None) -> dict[str, str]:
        """Also, given the model's config, the outputs its head refuses (RTMDet's
        posteriors, YOLOX's gradient embedding: see :mod:`.candidates`); the head alone is
        built to read them."""
        refusals = super().output_refusals(outputs)
        wanted = {'posteriors', 'grad_embedding'} & set(outputs)
        if model_cfg is not None and wanted and isinstance(model_cfg.get('detector'), dict):
            detector = with_per_image_loss_head(model_cfg['detector'])
            head_cfg = (detector.get('detector') or detector).get('bbox_head')  # pair or one
            head = MODELS.build(head_cfg)
            refusals.update({output: refusal for output, refusal in
                             (('posteriors', posterior_refusal(head)),
                              ('grad_embedding', gradient_refusal(head)))
                             if output in wanted and refusal})
        return refusals

    def __init__(self, detector: dict, taps: Sequence[str] | None = None,
                 loss_prediction: dict | None = None,
                 rank_loss: dict | None = None, rank_loss_weight: float = 1.0,
                 init_cfg: dict | None = None, per_image_normalizer: str = 'none',
                 score_cfg: dict | None = None, score_on: str = 'student') -> None:
        if per_image_normalizer not in ('none', 'positives'):
            raise ValueError(f'model.per_image_normalizer={per_image_normalizer!r}: choose '
                             "'none' (each image's summed loss) or 'positives'")
        built = MODELS.build(with_per_image_loss_head(detector))
        key, kind, plain = 'model.detector.type', detector.get('type'), built
        if isinstance(built, SemiBaseDetector):  # a mean teacher: its student is checked
            key, kind, plain = 'model.detector.detector.type', type(built.student).__name__, \
                built.student
        if not isinstance(plain, SingleStageDetector):
            raise TypeError(f'{key}={kind!r} is not a '
                            'single-stage detector; LearningLossDetector wraps '
                            'SingleStageDetector subclasses (SSD, RetinaNet, FCOS, ...). '
                            "Set model.type='LearningLossDETR' for DETR, DeformableDETR and "
                            "DINO, 'LearningLossTwoStageDetector' for Faster R-CNN and kin")
        head = plain.bbox_head
        if (per_image_normalizer != 'none' and hasattr(head, 'loss_by_feat_per_image')
                and not hasattr(head, 'per_image_normalizer')):
            raise ValueError(
                f'model.per_image_normalizer={per_image_normalizer!r}: '
                f"{type(head).__name__} gives each image's summed objective only; drop the key "
                "(the summed target ranked held-out images better: see PerImageLossSSDHead)")
        self.score_on = check_score_on(built, score_on)
        super().__init__(built, taps, loss_prediction, rank_loss, rank_loss_weight, init_cfg)
        self.per_image_normalizer = per_image_normalizer
        self.score_cfg = check_score_cfg(score_cfg)

    @property
    def detector(self) -> SingleStageDetector:
        """The detector read now: the wrapped one, or a member of its teacher-student
        pair. Also the name mmdet's wrapping models give it: mmdet's
        ``YOLOXModeSwitchHook`` switches on YOLOX's L1 loss through
        ``runner.model.detector.bbox_head`` when the model has a ``detector``."""
        return self.member

    def task_loss(self, feats: tuple, data_samples: list) -> tuple[dict, Tensor]:
        head = self.detector.bbox_head
        outs = head(feats)
        gt_instances, gt_ignore, img_metas = unpack_gt_instances(data_samples)
        if hasattr(head, 'loss_by_feat_per_image'):
            losses, per_image = head.loss_by_feat_per_image(
                *outs, gt_instances, img_metas, gt_ignore)
            return losses, per_image.detach()
        losses = head.loss_by_feat(*outs, gt_instances, img_metas, gt_ignore)
        summed = summed_losses(head) if self.per_image_normalizer == 'none' \
            else contextlib.nullcontext()
        with summed:
            per_image = per_image_losses_by_slicing(head, outs, gt_instances, img_metas,
                                                    gt_ignore)
        return losses, per_image

    @property
    def posterior_kind(self) -> str:
        """``'sigmoid'`` for heads with one independent score per class, else ``'softmax'``
        (YOLOX included: see :mod:`~mmal.models.detectors.candidates`)."""
        return posterior_kind(self.detector.bbox_head)

    def task_outputs(self, inputs: Tensor, feats: tuple, data_samples: list,
                     wanted: frozenset) -> dict:
        """``'posteriors'``, ``'boxes'``, ``'grad_embedding'`` and ``'box_features'`` of the
        candidate boxes; ``'gt_boxes'`` and ``'gt_labels'`` of a labeled batch.

        ``'grad_embedding'`` ``(B, E)``: see
        :func:`~mmal.models.gradient_embeddings.dense_gradient_embeddings`;
        the same head pass gives the candidates and, through the recorded
        calls of the class-logit conv(s), the features under each of them.
        ``'box_features'``: per image ``(N_i, C)``, the first map of
        ``feats`` averaged over each candidate box
        (:func:`~mmal.models.detectors.box_outputs.pooled_box_features`).
        """
        unsupported = wanted - self.task_output_names
        if unsupported:
            raise UnsupportedScoreOutputError(
                f'{type(self.detector).__name__} cannot give {sorted(unsupported)}: a '
                'single-stage detector has no proposals, and heatmaps are for pose; use a '
                'two-stage detector (LearningLossTwoStageDetector) for proposal-based strategies')
        head = self.detector.bbox_head
        for output, refusal in (('posteriors', posterior_refusal(head)),
                                ('grad_embedding', gradient_refusal(head))):
            if output in wanted and refusal:
                raise UnsupportedScoreOutputError(f'{output!r}: {refusal}')
        result = ground_truth(data_samples, wanted)
        if not wanted & {'posteriors', 'boxes', 'grad_embedding', 'box_features'}:
            return result
        img_shapes = [s.metainfo['img_shape'] for s in data_samples]
        with recorded_calls(final_cls_convs(head) if 'grad_embedding' in wanted else []) \
                as calls:
            outs = head(feats)
        posteriors, boxes, rows = dense_candidates(head, outs, img_shapes, self.posterior_kind,
                                                   self.score_cfg, return_rows=True)
        result.update(posteriors=posteriors, boxes=boxes)
        if 'grad_embedding' in wanted:
            result['grad_embedding'] = dense_gradient_embeddings(
                head, outs[0], calls, posteriors, rows, self.posterior_kind)
        if 'box_features' in wanted:
            result['box_features'] = pooled_box_features(
                feats[0], boxes, level_stride(head.prior_generator, 0))
        return {key: value for key, value in result.items() if key in wanted}

    def predict_from_feats(self, inputs: Tensor, feats: tuple, data_samples: list) -> list:
        head = self.detector.bbox_head
        img_metas = [sample.metainfo for sample in data_samples]
        results = head.predict_by_feat(*head(feats), batch_img_metas=img_metas, rescale=True)
        return self.detector.add_pred_to_datasample(data_samples, results)


