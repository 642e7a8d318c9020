"""Per-box features and the loaded ground truth, as task-normalised detection outputs.

``box_features``: per image, one vector per scored candidate box (the rows
of ``posteriors`` / ``boxes``): the feature pyramid's finest level
(``extract_feat``'s first map, what the head or the RoI head reads)
RoI-aligned over the box and averaged, so a box's vector describes the
whole region it covers. One level for every box, not the level the head
assigns a box to by its size: SSD's levels differ in width (the small SSD:
32 to 128 channels), and vectors from different levels would live in
different spaces, so two boxes could not be compared; the finest level
resolves the smallest boxes too. ``RoIAlign`` with ``aligned=True`` (pixel
centres at half-integers, as mmdet's RoI extractors use it) samples the map
bilinearly at ``ROI_SIZE`` x ``ROI_SIZE`` bins of ``SAMPLING_RATIO``
squared points each; their mean is the region's mean of the interpolated
map (exact for a map that is linear in x and y). Computed in float32,
outside autocast: mmcv's kernel has no bf16.

``gt_boxes`` / ``gt_labels``: the ground truth of each image as the
pipeline loaded it (boxes resized with the image, in network-input pixels
like ``boxes``; ignored instances left out), for strategies that measure the
model against the labeled set. Only a pass over a set loaded with its
labels has them (:data:`~mmal.models.learning_loss.LABEL_OUTPUTS`).
"""
import torch
from mmcv.ops import roi_align
from mmdet.structures.bbox import get_box_tensor
from torch import Tensor

#: Output bins per side and sampling points per bin side of the RoI average.
ROI_SIZE = 7
SAMPLING_RATIO = 2


def pooled_box_features(feature_map: Tensor, boxes: list[Tensor],
                        stride: float | tuple) -> list[Tensor]:
    """Each box's mean of ``feature_map`` over its region: ``(N_i, C)`` per image.

    Args:
        feature_map (Tensor): ``(B, C, H, W)``, one pyramid level.
        boxes (list[Tensor]): Per image ``(N_i, 4)`` xyxy boxes in
            network-input pixels.
        stride (float | tuple): The level's stride in input pixels (``(sx,
            sy)`` or one number).
    """
    sx, sy = (stride, stride) if isinstance(stride, (int, float)) else stride[:2]
    scale = torch.tensor([1.0 / sx, 1.0 / sy, 1.0 / sx, 1.0 / sy],
                         device=feature_map.device, dtype=torch.float32)
    counts = [len(b) for b in boxes]
    if sum(counts) == 0:
        return [feature_map.new_zeros((0, feature_map.shape[1]), dtype=torch.float32)
                for _ in boxes]
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i), device=feature_map.device),
                                 b.float().to(feature_map.device) * scale], dim=1)
                      for i, b in enumerate(boxes)])
    device = feature_map.device.type
    with torch.autocast(device, enabled=False):
        pooled = roi_align(feature_map.float(), rois, (ROI_SIZE, ROI_SIZE), 1.0,
                           SAMPLING_RATIO, 'avg', True)
    return list(pooled.mean(dim=(2, 3)).split(counts))


def ground_truth(data_samples: list, wanted: frozenset) -> dict:
    """``gt_boxes`` ``(M_i, 4)`` and ``gt_labels`` ``(M_i,)`` of each loaded sample.

    Raises:
        ValueError: A sample without ``gt_instances``: the set was loaded
            without its labels.
    """
    out: dict = {}
    for key in ('gt_boxes', 'gt_labels'):
        if key not in wanted:
            continue
        values = []
        for sample in data_samples:
            gt = sample.get('gt_instances', None)
            if gt is None or 'labels' not in gt:
                raise ValueError(
                    f'score output {key!r} reads the labels, and sample '
                    f'{sample.metainfo.get("img_path")!r} was loaded without them: score it '
                    'through the Scorer (a pass asking for a label output is loaded with the '
                    'training pipeline minus its random transforms), or add LoadAnnotations '
                    'to the pipeline that loads it')
            values.append(get_box_tensor(gt.bboxes).float().reshape(-1, 4)
                          if key == 'gt_boxes' else gt.labels.long().reshape(-1))
        out[key] = values
    return out


def level_stride(prior_generator, level: int) -> tuple:
    """``(sx, sy)`` of ``level`` from a head's prior generator (mmdet's ``strides``)."""
    stride = prior_generator.strides[level]
    return (stride, stride) if isinstance(stride, (int, float)) else tuple(stride[:2])
