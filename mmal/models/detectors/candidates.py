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
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from ..last_layer import ModuleCalls, center_tap
from ..learning_loss import UnsupportedScoreOutputError

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


# ------------------------------------------------------------------ gradient embeddings
#: Names mmdet's dense heads give their one class-logit conv (shared over levels).
CLS_CONV_NAMES = ('retina_cls', 'atss_cls', 'gfl_cls', 'conv_cls')


def final_cls_convs(head) -> list[nn.Module]:
    """The conv(s) whose outputs are the head's class logits.

    RetinaNet (``retina_cls``), FCOS (``conv_cls``), ATSS, GFL: one conv
    shared by every level. SSD: one tower per level in ``cls_convs``, whose
    last layer gives the logits. (RetinaNet and FCOS also have a
    ``cls_convs`` tower, below their logit conv, hence the order.)
    """
    for name in CLS_CONV_NAMES:
        conv = getattr(head, name, None)
        if isinstance(conv, nn.Module):
            return [conv]
    towers = getattr(head, 'cls_convs', None)
    if isinstance(towers, nn.ModuleList) and len(towers):
        return [t[-1] if isinstance(t, nn.Sequential) else t for t in towers]
    raise UnsupportedScoreOutputError(
        f'{type(head).__name__}: no class-logit conv found (looked for {CLS_CONV_NAMES} and '
        "SSD's cls_convs), so there is no last layer to take the gradient of")


def pseudo_label_residual(posteriors: Tensor, kind: str) -> Tensor:
    """``dloss/dlogits`` of each box under its own most likely label, ``(N, C+1) -> (N, C')``.

    ``'softmax'``: cross-entropy against the argmax over the C classes and
    background, ``p - onehot(argmax p)``, ``C' = C + 1``. ``'sigmoid'``:
    each class's binary cross-entropy against its own most likely value,
    ``p_c - [p_c > 0.5]``, ``C' = C`` (the background column, derived, has
    no logit). These are the gradients of the log-likelihood losses the
    posteriors come from; a focal-loss head trains on a reweighted version,
    whose weights would only rescale each class's row.
    """
    posteriors = posteriors.float()
    if kind == 'softmax':
        onehot = F.one_hot(posteriors.argmax(dim=-1), posteriors.shape[-1])
        return posteriors - onehot.to(posteriors.dtype)
    if kind == 'sigmoid':
        probs = posteriors[..., :-1]
        return probs - (probs > 0.5).to(probs.dtype)
    raise ValueError(f"posterior kind {kind!r}: 'softmax' or 'sigmoid'")


def dense_gradient_embeddings(head, cls_scores: list[Tensor], calls: ModuleCalls,
                              posteriors: list[Tensor], rows: list[Tensor],
                              kind: str) -> Tensor:
    """Per image, the last classification layer's gradient under argmax pseudo-labels, ``(B, E)``.

    The loss of image ``i`` is the sum, over its candidate boxes (the rows
    of ``posteriors``), of each box's log-likelihood loss against its own
    most likely label (:func:`pseudo_label_residual`): BADGE's hypothetical
    labels (Ash et al., ICLR 2020), box by box. Its gradient is taken
    with respect to the *center tap* of the class-logit conv, with the
    anchors of one location tied: for a box at location ``(y, x)`` of a
    level, with ``h`` the conv's input there (``D`` channels) and ``r``
    its residual, that is ``r ⊗ h``, ``(C', D)``, and the image's
    embedding sums its boxes. Why these parameters:

    - center tap: the full 3x3 kernel would multiply the size by 9, with
      the features of the neighbouring locations, themselves other
      candidates' centers;
    - anchors tied: a conv's weights hold one ``(C', D)`` block per anchor
      shape; keeping them apart multiplies the size by the anchors per
      location (9 for RetinaNet) for mostly-empty blocks. Tied, the
      embedding is the gradient with respect to one offset added to every
      anchor's block, a direction in the real weight space.

    Exact, not approximate: it equals autograd's gradient of that loss
    with respect to the conv's center-tap weights summed over the anchor
    blocks (see ``tests/test_gradient_strategies.py``). Levels with their
    own conv (SSD) give their own block, concatenated in level order; a
    conv shared by every level (RetinaNet, FCOS) gives one, summed over
    levels. ``E = C' * sum(D)`` over the distinct convs: 6 * 480 = 2880 for
    the small SSD, 21 * 2816 = 59136 for SSD300 on VOC, 80 * 256 = 20480
    for RetinaNet on COCO. An image with no candidate box gets zeros.

    Args:
        head: The dense head.
        cls_scores (list[Tensor]): Its per-level class logits, as returned.
        calls (ModuleCalls): The calls of :func:`final_cls_convs` recorded
            while the head produced ``cls_scores``.
        posteriors, rows: Per image, from :func:`dense_candidates` with
            ``return_rows=True``.
        kind (str): ``'softmax'`` or ``'sigmoid'``.
    """
    owner = type(head).__name__
    channels = head.cls_out_channels
    levels = []
    for level, score in enumerate(cls_scores):
        found = [(conv, x) for conv, x, out in calls.records if out is score]
        if len(found) != 1:
            raise UnsupportedScoreOutputError(
                f'{owner}: the class logits of level {level} are not the direct output of '
                'its class-logit conv (the head transforms them after it), so the conv '
                "weights' gradient cannot be read from its input")
        levels.append(found[0])
    convs = list({id(conv): conv for conv, _ in levels}.values())
    for conv in convs:
        center_tap(conv, owner)
    num_images = cls_scores[0].shape[0]
    device = cls_scores[0].device
    blocks = {id(conv): torch.zeros(num_images * channels, conv.in_channels, device=device)
              for conv in convs}
    counts = torch.as_tensor([len(r) for r in rows], device=device)
    image = torch.repeat_interleave(torch.arange(num_images, device=device), counts)
    all_rows = torch.cat(list(rows)).to(device)
    residual = pseudo_label_residual(torch.cat(list(posteriors)).to(device), kind)
    start = 0
    for (conv, x), score in zip(levels, cls_scores):
        anchors, (height, width) = score.shape[1] // channels, score.shape[-2:]
        if x.shape[-2:] != score.shape[-2:] or anchors * channels != score.shape[1]:
            raise UnsupportedScoreOutputError(
                f'{owner}: the class-logit conv maps {tuple(x.shape[-2:])} to '
                f'{tuple(score.shape)}, not one location to {channels}-class rows per anchor')
        offset, start = start, start + anchors * height * width
        on = (all_rows >= offset) & (all_rows < start)
        if not bool(on.any()):
            continue
        # rows run over (y, x, anchor), as dense_candidates flattens the logits
        location = torch.div(all_rows[on] - offset, anchors, rounding_mode='floor')
        h = x[image[on], :, location // width, location % width]               # (M, D)
        blocks[id(conv)] += outer_sums_per_image(residual[on], h, image[on], num_images)
    return torch.cat([blocks[id(conv)].view(num_images, -1) for conv in convs], dim=1)


def outer_sums_per_image(residual: Tensor, h: Tensor, image: Tensor, num_images: int) -> Tensor:
    """``sum over rows r of image i of residual[r] ⊗ h[r]``, ``(num_images * K, D)``.

    The weight gradient of a linear class layer, summed over an image's
    boxes; rows of ``residual`` ``(M, K)`` and ``h`` ``(M, D)`` belong to
    the images ``image`` ``(M,)``. Each row's residual goes to its image's
    block, so the batch is one matmul, summed in float32 under autocast.
    """
    spread = residual.new_zeros(len(h), num_images, residual.shape[1])
    spread[torch.arange(len(h), device=h.device), image] = residual
    with torch.autocast(h.device.type, enabled=False):
        return spread.flatten(1).T.float() @ h.float()
