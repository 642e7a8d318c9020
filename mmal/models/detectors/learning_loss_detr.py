"""Learning Loss on mmdet's set-prediction detectors: DETR, Deformable DETR, DINO."""
import contextlib
import inspect
from collections.abc import Iterator, Sequence

import torch
from mmdet.models.detectors import DetectionTransformer
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from torch import Tensor, nn

from ..gradient_embeddings import outer_sums_per_image, pseudo_label_residual
from ..learning_loss import LearningLossModel, UnsupportedScoreOutputError
from ..replay import recorded_calls, returning, summed_losses, total_loss
from .box_outputs import ground_truth, pooled_box_features
from .candidates import (
    IOU_QUALITY_CLASS_LOSSES,
    check_score_cfg,
    posteriors_from_logits,
    top_candidates,
)

#: What :meth:`LearningLossDETR.task_outputs` can return.
TASK_OUTPUTS = frozenset({'posteriors', 'boxes', 'grad_embedding', 'box_features',
                          'gt_boxes', 'gt_labels'})

PROPOSALS_REFUSAL = (
    "'proposals' (localization tightness) is the RPN proposal each box was refined from; "
    'a DETR-family detector has no RPN: its queries start from learned embeddings (DETR) or '
    "the encoder's top-k boxes (two-stage Deformable DETR, DINO), which MMAL does not give "
    'as proposals; use a two-stage detector (LearningLossTwoStageDetector) for tightness')


def query_posterior_kind(head: nn.Module) -> str:
    """``'sigmoid'`` (focal-loss heads: Deformable DETR, DINO) or ``'softmax'`` (DETR's
    cross-entropy over the classes and the no-object class, which mmdet puts last)."""
    return 'sigmoid' if getattr(head.loss_cls, 'use_sigmoid', False) else 'softmax'


def query_posterior_refusal(loss_cls_type: str | None) -> str | None:
    """Why a DETR head's class scores are no posteriors (``QualityFocalLoss``, which
    mmdet's DETR heads accept), or ``None``."""
    if loss_cls_type not in IOU_QUALITY_CLASS_LOSSES:
        return None
    return (f'the head trains its class scores with {loss_cls_type} against the matched '
            "box's IoU (a classification-IoU joint score, Li et al., NeurIPS 2020): a score "
            'says how well the query fits an object of that class, not how likely the class '
            'is, so there is no class posterior to measure; use FocalLoss (mmdet\'s DINO '
            'config) or a strategy that reads no posteriors (Learning Loss, Core-Set)')


@MODELS.register_module()
class LearningLossDETR(LearningLossModel):
    """Adds a loss-prediction module to a DETR-family detector (set prediction).

    Args:
        detector (dict): Config of any mmdet :class:`DetectionTransformer`
            (``DINO``, ``DeformableDETR``, ``DETR``), left as mmdet defines it.
        taps, loss_prediction, rank_loss, rank_loss_weight, init_cfg: See
            :class:`~mmal.models.LearningLossModel`. Taps record
            ``extract_feat``: the backbone's stages or the neck's maps (the
            default), what the transformer's encoder reads. The encoder's
            memory cannot be tapped: mmdet runs the encoder in
            ``forward_transformer``, after ``extract_feat``, with the batch's
            padding masks.
        score_cfg (dict, optional): ``num_boxes`` (queries per image, default
            100) and ``score_thr`` (their least foreground confidence, 0.05).

    **Per-image target loss.** The image's share of the detector's own
    matching objective, summed: for every decoder layer and, on two-stage
    detectors (Deformable DETR, DINO), the encoder's proposals, the
    classification loss (DINO: sigmoid focal) over all of its queries and the
    L1 and GIoU losses of its Hungarian-matched queries, each summed over the
    image instead of divided by the batch's number of boxes (mmdet's
    ``avg_factor``). mmdet matches each image on its own, so while mmdet
    computes the batch loss the inputs of the head's
    ``loss_by_feat_single`` (one call per decoder layer and one for the
    encoder) are recorded, and each image's terms are those same inputs
    restricted to the image, with the loss modules summing
    (:func:`~mmal.models.replay.summed_losses`); the per-image losses add up
    to each term times the batch's box count. The batch loss, which trains
    the detector, is mmdet's own and unchanged.

    **Denoising queries are left out of the target** (DINO's ``dn_loss_*``,
    DN-DETR's contrastive denoising): they are noised copies of the
    ground-truth boxes and labels, drawn at random each forward
    (``CdnQueryGenerator``: label flips, box jitter, a group count set by the
    batch's largest image), so their loss is the image's loss under one
    random draw and would rank the same image differently every time. The
    target is the matching part only, deterministic for a given image and
    weights; training keeps the denoising terms, as mmdet has them. The
    matching queries do not see the denoising ones (DINO's attention mask),
    so their outputs, and the target, do not depend on the draw.

    **Scoring outputs** (:meth:`task_outputs`), from the last decoder layer
    in test mode (no denoising queries): per image the ``num_boxes``
    queries of highest foreground confidence (at least ``score_thr``), each
    one row: one candidate box with its C sigmoid class probabilities and
    ``prod(1 - p_c)`` (``posterior_kind`` ``'sigmoid'``, as RetinaNet's), or
    DETR's softmax over the classes and no-object (``'softmax'``). No NMS:
    set prediction has none, the matching loss trains duplicates away.
    mmdet's own ``predict`` takes the top scores over queries x classes, so
    one query can appear there once per class; here a query is one
    candidate. Boxes are the queries' boxes in network-input pixels.
    ``grad_embedding``: the last decoder layer's class-logit ``Linear``
    (``cls_branches[-1]`` of the decoder's, DETR's ``fc_cls``), ``(p -
    pseudo-label) ⊗ h`` summed over the same queries, ``h`` the layer's
    input (the decoder's last hidden state). ``box_features``: the first
    map of ``feats`` averaged over each box.

    **No committee of decoder layers.** Each layer refines the previous
    layer's box (box refinement) and all are trained towards the same
    matched targets (deep supervision), so their disagreement measures how
    far the last layers still move a box, not how far models that fit the
    labels differ. Query by committee with ``committee='dropout'`` or
    ``'snapshots'`` reads the posteriors as on any detector.
    """

    task_output_names = TASK_OUTPUTS

    @classmethod
    def output_refusals(cls, outputs, model_cfg: dict | None = None) -> dict[str, str]:
        """The base refusals with ``proposals`` named, and, from the config's head, the
        posteriors and embedding of quality-focal heads."""
        refusals = super().output_refusals(outputs)
        if 'proposals' in refusals:
            refusals['proposals'] = PROPOSALS_REFUSAL
        detector = (model_cfg or {}).get('detector')
        head = detector.get('bbox_head') if isinstance(detector, dict) else None
        loss_cls = head.get('loss_cls') if isinstance(head, dict) else None
        refusal = query_posterior_refusal(
            loss_cls.get('type') if isinstance(loss_cls, dict) else None)
        if refusal:
            refusals.update({output: refusal for output in ('posteriors', 'grad_embedding')
                             if output in outputs})
        return refusals

    def __init__(self, detector: dict, taps: Sequence[str] | None = None,
                 loss_prediction: dict | None = None,
                 rank_loss: dict | None = None, rank_loss_weight: float = 1.0,
                 init_cfg: dict | None = None, score_cfg: dict | None = None) -> None:
        score_cfg = check_score_cfg(score_cfg)
        built = MODELS.build(detector)
        if not isinstance(built, DetectionTransformer):
            raise TypeError(f'model.detector.type={detector.get("type")!r} is not a '
                            'DETR-family detector; LearningLossDETR wraps '
                            'DetectionTransformer subclasses (DINO, DeformableDETR, DETR). '
                            "Set model.type='LearningLossDetector' for a single-stage and "
                            "'LearningLossTwoStageDetector' for a two-stage detector")
        head = built.bbox_head
        if not callable(getattr(head, 'loss_by_feat_single', None)):
            raise TypeError(f'model.detector.bbox_head.type={type(head).__name__!r} has no '
                            "loss_by_feat_single (DETRHead's per-layer matching loss), which "
                            "the per-image target replays; use mmdet's DETRHead, "
                            'DeformableDETRHead or DINOHead')
        super().__init__(built, taps, loss_prediction, rank_loss, rank_loss_weight, init_cfg)
        self.score_cfg = score_cfg

    @property
    def posterior_kind(self) -> str:
        return query_posterior_kind(self.task_model.bbox_head)

    # ------------------------------------------------------------ target losses
    def task_loss(self, feats: tuple, data_samples: list) -> tuple[dict, Tensor]:
        detector = self.task_model
        head = detector.bbox_head
        # mmdet's own loss on the features already extracted (and tapped), recording each
        # matching-loss call: one per decoder layer, one for the encoder's proposals
        with recorded_calls([head], 'loss_by_feat_single') as calls, \
                returning(detector, 'extract_feat', feats), loss_outputs_in_eval(detector):
            losses = detector.loss(None, data_samples)
        return losses, self.per_image_losses(calls, len(data_samples), feats[0])

    @torch.no_grad()
    def per_image_losses(self, calls: list, num_imgs: int, like: Tensor) -> Tensor:
        """Each image's summed matching loss over the recorded ``loss_by_feat_single``
        calls (the denoising part is not among them: see the class docstring)."""
        head = self.task_model.bbox_head
        signature = inspect.signature(head.loss_by_feat_single)
        per_image = like.new_zeros(num_imgs, dtype=torch.float32)
        with summed_losses(head):
            for call in calls:
                inputs = signature.bind(*call.args, **call.kwargs).arguments
                for i in range(num_imgs):
                    one = dict(inputs,
                               cls_scores=inputs['cls_scores'][i:i + 1],
                               bbox_preds=inputs['bbox_preds'][i:i + 1],
                               batch_gt_instances=[inputs['batch_gt_instances'][i]],
                               batch_img_metas=[inputs['batch_img_metas'][i]])
                    per_image[i] += total_loss(head.loss_by_feat_single(**one)).float()
        return per_image

    # ------------------------------------------------------------ scoring outputs
    def head_outputs(self, feats: tuple, data_samples: list) -> tuple[Tensor, Tensor, Tensor]:
        """Test-mode class logits ``(B, Q, C')`` and boxes ``(B, Q, 4)`` (normalised
        cxcywh) of the last decoder layer, and its hidden states ``(B, Q, D)``."""
        detector = self.task_model
        head = detector.bbox_head
        head_inputs = detector.forward_transformer(feats, data_samples)
        wanted = inspect.signature(head.forward).parameters
        cls_scores, bbox_preds = head(**{k: v for k, v in head_inputs.items() if k in wanted})
        return cls_scores[-1], bbox_preds[-1], head_inputs['hidden_states'][-1]

    def class_layer(self) -> nn.Linear:
        """The Linear whose outputs are the last decoder layer's class logits."""
        head = self.task_model.bbox_head
        branches = getattr(head, 'cls_branches', None)
        if branches is not None:
            # the decoder's layers come first; a two-stage head's last branch is the encoder's
            return branches[self.task_model.decoder.num_layers - 1]
        return head.fc_cls

    def task_outputs(self, inputs: Tensor, feats: tuple, data_samples: list,
                     wanted: frozenset) -> dict:
        """Per query outputs for the scoring strategies, in network-input pixels.

        Returns, for each wanted key, a list with one tensor per image whose
        rows are the queries chosen by ``score_cfg`` (highest foreground
        confidence first): ``posteriors`` ``(N_i, C + 1)``, ``boxes``
        ``(N_i, 4)`` xyxy, ``box_features`` ``(N_i, D)``;
        ``grad_embedding`` one ``(B, C' * D)`` tensor; ``gt_boxes`` /
        ``gt_labels`` the batch's loaded ground truth.
        """
        unsupported = set(wanted) - TASK_OUTPUTS
        if unsupported:
            raise UnsupportedScoreOutputError(
                f'{type(self.task_model).__name__} cannot give {sorted(unsupported)}: '
                + (PROPOSALS_REFUSAL if 'proposals' in unsupported else
                   f'a DETR-family detector gives {sorted(TASK_OUTPUTS)}'))
        refusal = query_posterior_refusal(type(self.task_model.bbox_head.loss_cls).__name__)
        if refusal and wanted & {'posteriors', 'grad_embedding'}:
            raise UnsupportedScoreOutputError(f"'posteriors': {refusal}")
        result = ground_truth(data_samples, wanted)
        if not wanted & {'posteriors', 'boxes', 'grad_embedding', 'box_features'}:
            return result
        logits, boxes_cxcywh, hidden = self.head_outputs(feats, data_samples)
        img_shapes = [s.metainfo['img_shape'] for s in data_samples]
        posteriors, boxes, rows = query_candidates(logits, boxes_cxcywh, img_shapes,
                                                   self.posterior_kind, self.score_cfg)
        result.update(posteriors=posteriors, boxes=boxes)
        if 'grad_embedding' in wanted:
            residual = torch.cat([pseudo_label_residual(p, self.posterior_kind)
                                  for p in posteriors])
            h = torch.cat([hidden[i][r] for i, r in enumerate(rows)])
            image = torch.cat([torch.full_like(r, i) for i, r in enumerate(rows)])
            result['grad_embedding'] = outer_sums_per_image(
                residual, h, image, len(rows)).view(len(rows), -1)
        if 'box_features' in wanted:
            stride = (inputs.shape[-1] / feats[0].shape[-1], inputs.shape[-2] / feats[0].shape[-2])
            result['box_features'] = pooled_box_features(feats[0], boxes, stride)
        return {key: value for key, value in result.items() if key in wanted}

    # ------------------------------------------------------------ predictions
    def predict_from_feats(self, inputs: Tensor, feats: tuple, data_samples: list) -> list:
        """mmdet's post-processed predictions, rescaled to the original image."""
        detector = self.task_model
        head_inputs = detector.forward_transformer(feats, data_samples)
        results = detector.bbox_head.predict(**head_inputs, batch_data_samples=data_samples,
                                             rescale=True)
        return detector.add_pred_to_datasample(data_samples, results)


@contextlib.contextmanager
def loss_outputs_in_eval(detector: DetectionTransformer) -> Iterator[None]:
    """A block in which an eval-mode detector's ``loss`` runs (the target losses of
    scoring: the ranking evaluation, the oracle).

    mmdet's Deformable DETR and DINO hand the head the encoder's proposals
    (and DINO its denoising queries) only when the detector's own
    ``training`` flag is set (``pre_decoder``); in eval mode ``loss`` fails
    ("DINOHead.loss() missing 3 required positional arguments"). Only that
    flag is set here: the backbone, encoder and decoder stay in eval mode
    (BatchNorm's running statistics, no dropout). The denoising queries
    drawn meanwhile take their noise from a forked random state, so scoring
    leaves the global streams as it found them; their loss is no part of
    the target, and the matching queries cannot see them.
    """
    if detector.training:
        yield
        return
    device = next(detector.parameters()).device
    cuda = [device.index or 0] if device.type == 'cuda' else []
    with torch.random.fork_rng(devices=cuda):
        detector.training = True
        try:
            yield
        finally:
            detector.training = False


def query_candidates(logits: Tensor, boxes_cxcywh: Tensor, img_shapes: list, kind: str,
                     score_cfg: dict) -> tuple[list, list, list]:
    """Per image, the chosen queries' posteriors ``(N_i, C+1)``, xyxy boxes ``(N_i, 4)`` in
    network-input pixels and query indices ``(N_i,)``, most confident first.

    A query is one row, whatever its number of confident classes: its
    foreground confidence is its largest class probability, so a query
    confident in two classes is one candidate with two high columns (where
    mmdet's ``predict`` would list it once per class).
    """
    posteriors, boxes, rows = [], [], []
    for i, (h, w) in enumerate(shape[:2] for shape in img_shapes):
        probs = posteriors_from_logits(logits[i], kind)
        keep = top_candidates(probs, score_cfg['num_boxes'], score_cfg['score_thr'])
        scale = boxes_cxcywh.new_tensor([w, h, w, h])
        xyxy = bbox_cxcywh_to_xyxy(boxes_cxcywh[i][keep].float()) * scale
        xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, w)
        xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, h)
        posteriors.append(probs[keep])
        boxes.append(xyxy)
        rows.append(keep)
    return posteriors, boxes, rows
