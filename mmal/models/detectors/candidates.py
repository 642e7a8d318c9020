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
"""
import torch
from torch import Tensor

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




