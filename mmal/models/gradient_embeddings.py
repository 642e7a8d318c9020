"""Gradient embeddings: a task model's last-layer gradient under its own most likely labels.

BADGE (Ash et al., ICLR 2020) embeds each sample as the gradient of the
loss it would have under the model's most likely ("hypothetical") labels,
with respect to the last layer's weights. The gradient of a loss with
respect to a layer's weights is the outer product of the gradient at the
layer's output with the layer's input, so each embedding here is computed
in closed form from the input recorded (:func:`~mmal.models.replay.recorded_calls`)
in the scoring pass that also gives the outputs:

- dense detector heads: the class-logit conv's center tap
  (:func:`dense_gradient_embeddings`);
- two-stage detectors: the box head's ``fc_cls`` (:func:`roi_gradient_embeddings`);
- heatmap pose heads: the conv that outputs the heatmaps
  (:func:`heatmap_gradient_embedding`).
"""
import weakref

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from .learning_loss import UnsupportedScoreOutputError
from .replay import Call, recorded_calls


def center_tap(conv: nn.Module, owner: str) -> tuple[int, int]:
    """The kernel position that reads the input pixel under each output pixel.

    Only a plain stride-1, 'same'-padded conv puts output ``(y, x)`` on
    input ``(y, x)``; anything else is refused, naming what differs.
    """
    if not isinstance(conv, nn.Conv2d):
        raise UnsupportedScoreOutputError(
            f'{owner}: the last layer is a {type(conv).__name__}, not an nn.Conv2d; the '
            'gradient embedding is written for a convolution')
    kh, kw = conv.kernel_size
    same = (kh % 2 == 1 and kw % 2 == 1 and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding == (kh // 2, kw // 2))
    if not same:
        raise UnsupportedScoreOutputError(
            f'{owner}: the last conv has kernel {conv.kernel_size}, stride {conv.stride}, '
            f'padding {conv.padding}, dilation {conv.dilation}, groups {conv.groups}; the '
            'gradient embedding needs an odd kernel, stride 1, same padding, no groups')
    return kh // 2, kw // 2


#: ``final_cls_convs`` per head: the probe's answer depends on the head's structure
#: only, and EGL / BADGE ask it on every scoring batch.
_CLS_CONVS: 'weakref.WeakKeyDictionary[nn.Module, list[nn.Module]]' = weakref.WeakKeyDictionary()


def final_cls_convs(head) -> list[nn.Module]:
    """The conv whose output is each level's class logits, in level order (found once
    per head).

    Found from the head itself: one forward of a blank 4x4 map per level
    (eval mode, no gradient) with every ``nn.Conv2d`` of the head recorded,
    and the conv whose output *is* a level's class-logit tensor kept. So any
    name serves: RetinaNet's ``retina_cls``, FCOS's ``conv_cls`` (one conv
    shared by every level), SSD's towers' last layers, RTMDet's ``rtm_cls``
    and YOLOX's ``multi_level_conv_cls`` (one per level).

    Raises:
        UnsupportedScoreOutputError: When a level's logits are not a conv's
            direct output (the head transforms them after it, as RTMDet does
            with an objectness), naming the level.
    """
    if head in _CLS_CONVS:
        return _CLS_CONVS[head]
    owner = type(head).__name__
    num_levels = len(head.prior_generator.strides)
    widths = head.in_channels
    widths = list(widths) if isinstance(widths, (list, tuple)) else [widths] * num_levels
    parameter = next(head.parameters())
    probe = tuple(parameter.new_zeros(1, width, 4, 4) for width in widths)
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    was_training = head.training
    head.eval()
    try:
        with torch.no_grad(), recorded_calls(convs) as calls:
            cls_scores = head(probe)[0]
    finally:
        head.train(was_training)
    found = []
    for level, score in enumerate(cls_scores):
        conv = next((c.owner for c in calls if c.output is score), None)
        if conv is None:
            raise UnsupportedScoreOutputError(
                f'{owner}: the class logits of level {level} are not the direct output of a '
                'conv (the head transforms them after it), so there is no last layer whose '
                'gradient the embedding could be')
        found.append(conv)
    _CLS_CONVS[head] = found
    return found


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



def dense_gradient_embeddings(head, cls_scores: list[Tensor], calls: list[Call],
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
        calls (list[Call]): The calls of :func:`final_cls_convs` recorded
            while the head produced ``cls_scores``.
        posteriors, rows: Per image, from :func:`dense_candidates` with
            ``return_rows=True``.
        kind (str): ``'softmax'`` or ``'sigmoid'``.
    """
    owner = type(head).__name__
    channels = head.cls_out_channels
    levels = []
    for level, score in enumerate(cls_scores):
        found = [(c.owner, c.args[0]) for c in calls if c.output is score]
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



def class_layer(bbox_head: nn.Module) -> nn.Linear:
    """The box head's layer whose outputs are the class logits (``fc_cls``).

    Refused, naming why, where the softmax over those logits is not the
    head's posterior (a loss with its own activation, such as Seesaw) or
    the layer is not a plain linear one.
    """
    owner = type(bbox_head).__name__
    fc_cls = getattr(bbox_head, 'fc_cls', None) if getattr(bbox_head, 'with_cls', True) \
        else None
    if not isinstance(fc_cls, nn.Linear):
        raise UnsupportedScoreOutputError(
            f'{owner}: fc_cls is {type(fc_cls).__name__}, not an nn.Linear; the gradient '
            'embedding is written for a linear class layer')
    if getattr(bbox_head, 'custom_cls_channels', False):
        raise UnsupportedScoreOutputError(
            f'{owner}: loss_cls {type(bbox_head.loss_cls).__name__} has its own activation '
            '(custom_cls_channels), so the posteriors are not a softmax of fc_cls; the '
            'gradient embedding is written for softmax cross-entropy')
    return fc_cls



def roi_gradient_embeddings(bbox_head: nn.Module, calls: list[Call],
                            posteriors: list[Tensor], rows: list[Tensor],
                            num_rois: list[int]) -> Tensor:
    """Per image, the box head's class-layer gradient under argmax pseudo-labels, ``(B, E)``.

    The definition is the single-stage one
    (:func:`dense_gradient_embeddings`)
    with RoIs for anchor locations: the loss of image ``i`` is the sum, over
    its scored RoIs (the rows of ``posteriors``, the candidates the
    uncertainty strategies read), of each RoI's softmax cross-entropy over
    the C classes and background against its own most likely label
    (BADGE's hypothetical labels). ``fc_cls`` maps a RoI's feature ``h``
    (``D`` values, the output of the head's shared and class fcs) to its
    logits, so that RoI's gradient with respect to ``fc_cls.weight`` is
    ``(p - onehot(argmax p)) ⊗ h``, ``(C + 1, D)``, and the image's
    embedding sums its RoIs' and is flattened row by row. The bias is left
    out, as the convs' are in the single-stage case. Exact: it equals
    autograd's gradient of that loss (``tests/test_gradient_strategies.py``).
    ``E = (C + 1) * D``: 6 * 128 = 768 for the small Faster R-CNN, 21 * 1024
    = 21504 for Faster R-CNN on VOC. An image with no scored RoI gets zeros.

    Args:
        bbox_head: The RoI head's ``BBoxHead``.
        calls (list[Call]): The calls of ``bbox_head`` and its
            :func:`class_layer` recorded while ``predict_bbox`` ran.
        posteriors, rows: Per image, the scored RoIs' posteriors and their
            row indices among the image's proposals.
        num_rois (list[int]): Proposals per image, in the batch's order (the
            order of the rows of the box head's input).
    """
    owner = type(bbox_head).__name__
    fc_cls = class_layer(bbox_head)
    num_images = len(num_rois)
    device = fc_cls.weight.device
    if sum(len(r) for r in rows) == 0:   # mmdet skips the box head without proposals
        return torch.zeros(num_images, fc_cls.out_features * fc_cls.in_features, device=device)
    head_calls = [c.output for c in calls if c.owner is bbox_head]
    layer_calls = [(c.args[0], c.output) for c in calls if c.owner is fc_cls]
    if len(head_calls) != 1 or len(layer_calls) != 1 or head_calls[0][0] is not layer_calls[0][1]:
        raise UnsupportedScoreOutputError(
            f'{owner}: its class logits are not the direct output of one fc_cls call (the '
            'head transforms them after fc_cls, or runs more than once), so the weights\' '
            'gradient cannot be read from the layer\'s input')
    features, logits = layer_calls[0]
    if features.dim() != 2 or len(features) != sum(num_rois) \
            or logits.shape[-1] != bbox_head.num_classes + 1:
        raise UnsupportedScoreOutputError(
            f'{owner}: fc_cls maps {tuple(features.shape)} to {tuple(logits.shape)}, not '
            f'one row per proposal ({sum(num_rois)}) to {bbox_head.num_classes + 1} '
            'class logits')
    counts = torch.as_tensor([len(r) for r in rows], device=device)
    image = torch.repeat_interleave(torch.arange(num_images, device=device), counts)
    starts = torch.as_tensor([0, *num_rois[:-1]], device=device).cumsum(0)
    h = features[torch.cat(list(rows)).to(device) + starts[image]]            # (M, D)
    residual = pseudo_label_residual(torch.cat(list(posteriors)).to(device), 'softmax')
    return outer_sums_per_image(residual, h, image, num_images).view(num_images, -1)



def final_heatmap_conv(head: nn.Module) -> nn.Module:
    """The conv that outputs the (final stage's) heatmaps."""
    if hasattr(head, 'multi_final_layers'):      # CPMHead: one per stage
        final = head.multi_final_layers[-1]
    else:                                        # HeatmapHead and its subclasses
        final = getattr(head, 'final_layer', None)
    if not isinstance(final, nn.Conv2d):
        raise UnsupportedScoreOutputError(
            f'{type(head).__name__}: its final layer is '
            f'{type(final).__name__ if final is not None else "missing"}, not a conv that '
            "outputs the heatmaps ('final_layer' / 'multi_final_layers'); the gradient "
            'embedding is that conv\'s gradient')
    center_tap(final, type(head).__name__)
    return final



def codec_gaussian(head: nn.Module) -> tuple[float, bool]:
    """``sigma`` and ``unbiased`` of the head's heatmap codec (MSRAHeatmap, UDPHeatmap)."""
    decoder = getattr(head, 'decoder', None)
    sigma = getattr(decoder, 'sigma', None)
    if not isinstance(sigma, (int, float)) or sigma <= 0:
        raise UnsupportedScoreOutputError(
            f'{type(head).__name__}: the head\'s decoder '
            f'({type(decoder).__name__ if decoder is not None else "none"}) has no Gaussian '
            "sigma; the pseudo-label heatmaps are drawn as the codec draws its targets, so "
            "give the head a Gaussian heatmap codec (head.decoder, e.g. MSRAHeatmap)")
    return float(sigma), bool(getattr(decoder, 'unbiased', False))



def pseudo_label_heatmaps(heatmaps: Tensor, sigma: float, unbiased: bool = False) -> Tensor:
    """A Gaussian target at each joint's most likely pixel, ``(B, K, H, W)``.

    The target mmpose's ``MSRAHeatmap`` would encode for a keypoint at the
    heatmap's argmax: ``exp(-d^2 / (2 sigma^2))``, 1 at the peak; cut to
    the ``2 * 3 sigma + 1`` square around it unless ``unbiased`` (DARK's
    encoding, which leaves the whole map).
    """
    batch, joints, height, width = heatmaps.shape
    peak = heatmaps.flatten(2).argmax(dim=-1)                       # (B, K)
    py, px = (peak // width).float(), (peak % width).float()
    ys = torch.arange(height, device=heatmaps.device, dtype=torch.float32)
    xs = torch.arange(width, device=heatmaps.device, dtype=torch.float32)
    dy = ys.view(1, 1, height, 1) - py[..., None, None]
    dx = xs.view(1, 1, 1, width) - px[..., None, None]
    target = torch.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2))
    if not unbiased:
        radius = 3 * sigma
        target = target * ((dx.abs() <= radius) & (dy.abs() <= radius)).float()
    return target



def heatmap_gradient_embedding(heatmaps: Tensor, features: Tensor, sigma: float,
                               unbiased: bool = False) -> Tensor:
    """The final conv's gradient under pseudo-label heatmaps, ``(B, K, D)``.

    BADGE's hypothetical label for a heatmap regressor (Ash et al., ICLR
    2020, take the model's most likely label): each joint's target is the
    codec's Gaussian at the joint's heatmap argmax
    (:func:`pseudo_label_heatmaps`). The loss is mmpose's heatmap MSE
    without its constant factor, ``1/2 sum_{k,pixels} (pred - target)^2``
    over all K joints (visibility is unknown without labels); its gradient
    with respect to the weights of the conv that outputs the heatmaps
    (1x1; a larger kernel's center tap) is, for joint ``k``,
    ``sum_pixels (pred - target)[k, pixel] * h[:, pixel]``, with ``h`` the
    conv's input ``(B, D, H, W)``. mmpose's ``KeypointMSELoss`` averages
    over the ``K*H*W`` elements, a factor common to every sample, which
    changes neither a ranking nor k-means++ seeding. ``D`` is the head's
    input width: 64 for the small hourglass, so ``K * D = 1024``.
    """
    target = pseudo_label_heatmaps(heatmaps.float(), sigma, unbiased)
    residual = (heatmaps.float() - target).flatten(2)               # (B, K, HW)
    with torch.autocast(heatmaps.device.type, enabled=False):    # fp16 scoring: sum in float32
        return torch.einsum('bkp,bdp->bkd', residual, features.float().flatten(2))
