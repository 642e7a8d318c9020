"""Task-normalised candidate boxes: class posteriors with an explicit background.

Strategies read every detector the same way, whatever its head: per image,
the ``num_boxes`` candidate boxes with the highest foreground confidence
(at least ``score_thr``), before NMS, each with its posterior over the C
classes and background (background last). Why before NMS: NMS keeps the
locally most confident box and drops the competing ones, and the score
threshold of ``test_cfg`` drops the unsure ones, so the detections that
survive are the ones the model is sure about; the doubt lives in what they
suppress. The cut is mmdet's ``nms_pre`` one.

Heads with a score factor (FCOS's centerness, ATSS's too) are ranked by
their class probabilities alone, centerness ignored, because that is
where mmdet cuts them: in mmdet 3.x, ``BaseDenseHead._predict_by_feat_single``
keeps the ``nms_pre`` best by ``sigmoid(cls)``, applies ``score_thr`` to
the same, and only then multiplies each kept score by
``sigmoid(centerness)`` for NMS and the final detection scores (the
product; the square root its TODO mentions would not change the order).
So the candidates are the boxes mmdet hands to NMS. Centerness predicts
how well a location's box will fit, not which class is there, and it
stays out of the posteriors too: a posterior row is the classifier's,
read by the uncertainty measures as it was trained.

Heads whose class scores are not class probabilities:

* YOLOX (Ge et al., 2021, arXiv:2107.08430) predicts an objectness per
  location and, separately, per-class scores; mmdet 3.3.0 trains the
  objectness with binary cross-entropy against 1 at SimOTA's positives and
  the class scores, on the positives only, against ``onehot * IoU``
  (``YOLOXHead._get_targets_single``). So ``sigmoid(obj)`` is P(object), and
  a class score is the box's IoU for its class, ~0 for the others: the
  classes' shares ``q_c = s_c / sum s`` estimate P(class | object), the IoU
  factor cancelling. The posterior row is the distribution
  ``(sigmoid(obj) * q_c ..., 1 - sigmoid(obj))`` (``posterior_kind``
  ``'softmax'``: it sums to one), and the candidates are cut where mmdet's
  ``predict_by_feat`` cuts them, by ``max_c s_c * sigmoid(obj)``, boxes
  decoded by the head's own ``_bbox_decode``.
* RTMDet, GFL, VFNet train their class scores with quality focal or
  varifocal loss against IoU-valued soft labels (Li et al., NeurIPS 2020,
  "Generalized Focal Loss": the classification-IoU joint score) and have
  no objectness: a score is how well the box would fit an object of that
  class, and a low one does not separate background from a poor box. No
  probability of background, or of a class, can be read from it, so
  ``posteriors`` (and the gradient embedding under pseudo-labels drawn
  from them) are refused for such heads (:func:`posterior_refusal`).
"""
import torch
from mmdet.models.dense_heads import YOLOXHead
from torch import Tensor

#: Class losses whose targets are IoU-valued soft labels: their scores are not probabilities.
IOU_QUALITY_CLASS_LOSSES = ('QualityFocalLoss', 'VarifocalLoss')

DEFAULT_SCORE_CFG = dict(num_boxes=100, score_thr=0.05)


def check_score_cfg(score_cfg: dict | None) -> dict:
    """``score_cfg`` with defaults filled in; a clear error for a wrong key or value."""
    cfg = dict(DEFAULT_SCORE_CFG)
    if score_cfg is not None and not isinstance(score_cfg, dict):
        raise TypeError(f'model.score_cfg={score_cfg!r} must be a dict with keys {sorted(cfg)}')
    unknown = set(score_cfg or {}) - set(cfg)
    if unknown:
        raise ValueError(f'model.score_cfg: unknown keys {sorted(unknown)}; it takes '
                         f'{sorted(cfg)}')
    cfg.update(score_cfg or {})
    num_boxes, score_thr = cfg['num_boxes'], cfg['score_thr']
    if not isinstance(num_boxes, int) or isinstance(num_boxes, bool) or num_boxes < 1:
        raise ValueError(f'model.score_cfg.num_boxes={num_boxes!r} must be an integer >= 1')
    if not isinstance(score_thr, (int, float)) or not 0.0 <= score_thr <= 1.0:
        raise ValueError(f'model.score_cfg.score_thr={score_thr!r} must lie in [0, 1] (the '
                         'least foreground confidence of a kept box)')
    cfg['score_thr'] = float(score_thr)
    return cfg


def has_objectness(head) -> bool:
    """Whether the head is YOLOX's: class scores and a separate objectness (third output)."""
    return isinstance(head, YOLOXHead)


def posterior_kind(head) -> str:
    """How a posterior row of ``head`` reads: ``'softmax'`` (a distribution over the
    classes and background: SSD, YOLOX) or ``'sigmoid'`` (C independent class
    probabilities: RetinaNet, FCOS)."""
    if has_objectness(head):
        return 'softmax'
    return 'sigmoid' if getattr(head, 'use_sigmoid_cls', False) else 'softmax'


def posterior_refusal(head) -> str | None:
    """Why ``head``'s class scores cannot be read as posteriors (see the module docstring),
    or ``None`` when they can. Reads the head's class loss, not the detector's type."""
    loss = type(getattr(head, 'loss_cls', None)).__name__
    if has_objectness(head) or loss not in IOU_QUALITY_CLASS_LOSSES:
        return None
    return (f'{type(head).__name__} trains its class scores with {loss} against IoU-valued '
            'soft labels (the classification-IoU joint score of Generalized Focal Loss, Li '
            'et al., NeurIPS 2020) and has no objectness: a score says how well the box fits '
            'an object of that class, not how likely the class is, and a low one does not '
            'tell background from a poor box, so there is no class posterior or background '
            'probability to measure; choose a strategy that reads no posteriors (Learning '
            'Loss, Core-Set, random) or a detector with probability scores (SSD, RetinaNet, '
            'FCOS, YOLOX)')


def gradient_refusal(head) -> str | None:
    """Why BADGE / EGL's pseudo-label gradient is not defined on ``head``, or ``None``."""
    refusal = posterior_refusal(head)
    if refusal or not has_objectness(head):
        return refusal
    return (f'{type(head).__name__} trains its class logits, on the positives only, against '
            "onehot * IoU (the predicted box's IoU with its object), so the pseudo-label "
            "loss of a box the model only predicts has no target, and the row's background "
            'column comes from the objectness conv, not from the class layer; choose a '
            'strategy that reads the posteriors (entropy, margin, least confidence) or none')


def posteriors_from_logits(logits: Tensor, kind: str) -> Tensor:
    """``(..., C')`` class logits as ``(..., C+1)`` posteriors, background last.

    ``'softmax'``: the head's own ``C+1`` logits, background last (mmdet's
    SSD and RoI heads). ``'sigmoid'``: C independent class logits
    (RetinaNet, FCOS); the background column is ``prod(1 - p_c)``, the
    probability that no class fires under the head's own independence
    assumption. Those rows do not sum to one; strategies measure them
    class by class (see :mod:`mmal.strategies.uncertainty`).
    """
    if kind == 'softmax':
        return logits.float().softmax(dim=-1)
    if kind == 'sigmoid':
        probs = logits.float().sigmoid()
        background = (1.0 - probs).clamp(min=0.0).prod(dim=-1, keepdim=True)
        return torch.cat([probs, background], dim=-1)
    raise ValueError(f"posterior kind {kind!r}: 'softmax' or 'sigmoid'")


def top_candidates(posteriors: Tensor, num_boxes: int, score_thr: float) -> Tensor:
    """Row indices of the most confident candidates, by foreground confidence, best first.

    Foreground confidence is the largest class probability (background
    excluded), never scaled by a head's centerness or other score factor;
    at most ``num_boxes`` rows, each at least ``score_thr``.
    """
    foreground = posteriors[:, :-1].amax(dim=-1)
    top, index = foreground.topk(min(num_boxes, len(foreground)))
    return index[top >= score_thr]


def dense_candidates(head, outs: tuple, img_shapes: list, kind: str,
                     score_cfg: dict, return_rows: bool = False) -> tuple:
    """Per image, the candidates' posteriors ``(N_i, C+1)`` and boxes ``(N_i, 4)``.

    Works on any mmdet dense head with a ``prior_generator`` and a
    ``bbox_coder`` (SSD, RetinaNet, FCOS, ...): priors and box decoding
    are the head's own, as in ``BaseDenseHead.predict_by_feat``. Boxes are
    in network-input pixels (not rescaled to the original image), so views
    of one input compare directly.

    Only the head's class logits and box regressions (its first two
    outputs) are read; a third, FCOS's centerness, is left out on purpose
    (see the module docstring).

    With ``return_rows``, a third list gives each image's ``(N_i,)`` row
    indices into the head's outputs flattened over levels, locations and
    anchors (the order of the priors), which place each candidate on its
    feature map (see :func:`dense_gradient_embeddings`).
    """
    if has_objectness(head):
        return _objectness_candidates(head, outs, score_cfg, return_rows)
    cls_scores, bbox_preds = outs[0], outs[1]
    num_images = cls_scores[0].shape[0]
    featmap_sizes = [c.shape[-2:] for c in cls_scores]
    priors = torch.cat(head.prior_generator.grid_priors(
        featmap_sizes, dtype=bbox_preds[0].dtype, device=bbox_preds[0].device))
    channels = head.cls_out_channels
    box_size = getattr(head.bbox_coder, 'encode_size', 4)
    logits = torch.cat([c.permute(0, 2, 3, 1).reshape(num_images, -1, channels)
                        for c in cls_scores], dim=1)
    deltas = torch.cat([b.permute(0, 2, 3, 1).reshape(num_images, -1, box_size)
                        for b in bbox_preds], dim=1)
    if logits.shape[1] != len(priors) or deltas.shape[1] != len(priors):
        raise ValueError(f'{type(head).__name__}: {len(priors)} priors but {logits.shape[1]} '
                         f'class rows and {deltas.shape[1]} box rows')
    posteriors, boxes, rows = [], [], []
    for i in range(num_images):
        probs = posteriors_from_logits(logits[i], kind)
        keep = top_candidates(probs, score_cfg['num_boxes'], score_cfg['score_thr'])
        posteriors.append(probs[keep])
        boxes.append(head.bbox_coder.decode(priors[keep], deltas[i][keep],
                                            max_shape=img_shapes[i]).float())
        rows.append(keep)
    if return_rows:
        return posteriors, boxes, rows
    return posteriors, boxes


def objectness_posteriors(class_logits: Tensor, objectness_logits: Tensor) -> Tensor:
    """``(N, C)`` class and ``(N,)`` objectness logits of YOLOX as ``(N, C+1)`` distributions.

    ``(sigmoid(obj) * q_c ..., 1 - sigmoid(obj))`` with ``q_c`` the class's
    share of the sigmoid class scores (see the module docstring).
    """
    scores = class_logits.float().sigmoid()
    objectness = objectness_logits.float().sigmoid().unsqueeze(-1)
    shares = scores / scores.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(scores.dtype).tiny)
    return torch.cat([objectness * shares, 1.0 - objectness], dim=-1)


def _objectness_candidates(head, outs: tuple, score_cfg: dict, return_rows: bool) -> tuple:
    """:func:`dense_candidates` for YOLOX: mmdet's ``predict_by_feat`` priors, decoding and
    ranking score, with the rows of :func:`objectness_posteriors`."""
    cls_scores, bbox_preds, objectnesses = outs[0], outs[1], outs[2]
    num_images = cls_scores[0].shape[0]
    priors = torch.cat(head.prior_generator.grid_priors(
        [c.shape[-2:] for c in cls_scores], dtype=cls_scores[0].dtype,
        device=cls_scores[0].device, with_stride=True))

    def flat(maps: list, width: int) -> Tensor:
        return torch.cat([m.permute(0, 2, 3, 1).reshape(num_images, -1, width) for m in maps], 1)

    logits = flat(cls_scores, head.cls_out_channels)
    objectness = flat(objectnesses, 1).squeeze(-1)
    boxes_all = head._bbox_decode(priors, flat(bbox_preds, 4))
    posteriors, boxes, rows = [], [], []
    for i in range(num_images):
        # mmdet's detection score: the best class score times the objectness
        score = (logits[i].float().sigmoid() * objectness[i].float().sigmoid()[:, None]).amax(-1)
        top, index = score.topk(min(score_cfg['num_boxes'], len(score)))
        keep = index[top >= score_cfg['score_thr']]
        posteriors.append(objectness_posteriors(logits[i][keep], objectness[i][keep]))
        boxes.append(boxes_all[i][keep].float())
        rows.append(keep)
    if return_rows:
        return posteriors, boxes, rows
    return posteriors, boxes
