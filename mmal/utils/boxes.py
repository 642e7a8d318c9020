"""Intersection over union of xyxy boxes: the one definition every part of MMAL uses.

Ours, not ``torchvision.ops.box_iou``: that gives NaN for two empty boxes
(0 / 0) and has no element-wise paired form. Here the IoU of boxes whose
union is empty is 0, and boxes with swapped corners have no area.
Arrays and tensors alike: numpy inputs come back as numpy (float64 stays
float64), tensors as tensors.
"""
import numpy as np
import torch
from torch import Tensor


def _iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of broadcast xyxy boxes ``(..., 4)``; 0 where the union is empty."""
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    low = torch.maximum(a[..., :2], b[..., :2])
    high = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (high - low).clamp(min=0).prod(dim=-1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny),
                       torch.zeros_like(union))


def _as_tensors(a, b) -> tuple[Tensor, Tensor, bool]:
    as_numpy = not isinstance(a, Tensor)
    a = torch.as_tensor(np.asarray(a, dtype=np.float64) if as_numpy else a)
    b = torch.as_tensor(np.asarray(b, dtype=np.float64) if as_numpy else b)
    return a.reshape(-1, 4), b.reshape(-1, 4), as_numpy


def pairwise_iou(a, b):
    """``(n, m)`` IoU of every box of ``a`` ``(n, 4)`` with every box of ``b`` ``(m, 4)``."""
    a, b, as_numpy = _as_tensors(a, b)
    out = _iou(a[:, None, :], b[None, :, :]) if len(a) and len(b) else a.new_zeros(len(a), len(b))
    return out.numpy() if as_numpy else out


def paired_iou(a, b):
    """``(n,)`` IoU of ``a[i]`` with ``b[i]``."""
    a, b, as_numpy = _as_tensors(a, b)
    out = _iou(a, b)
    return out.numpy() if as_numpy else out


def iou(a, b) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes."""
    return float(paired_iou([a], [b])[0])
