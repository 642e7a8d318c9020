"""The one IoU: torchvision's on ordinary boxes, 0 (not NaN) where the union is empty."""
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou as torchvision_iou

from mmal.utils.boxes import iou, paired_iou, pairwise_iou


def test_pairwise_matches_torchvision_on_ordinary_boxes():
    rng = np.random.default_rng(0)
    low = rng.uniform(0, 50, (7, 2))
    a = np.concatenate([low, low + rng.uniform(1, 30, (7, 2))], 1)
    low = rng.uniform(0, 50, (5, 2))
    b = np.concatenate([low, low + rng.uniform(1, 30, (5, 2))], 1)
    expected = torchvision_iou(torch.as_tensor(a), torch.as_tensor(b)).numpy()
    got = pairwise_iou(a, b)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    got_t = pairwise_iou(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b))
    assert isinstance(got_t, torch.Tensor)
    np.testing.assert_allclose(paired_iou(a[:5], b), np.diag(expected), rtol=1e-12)


def test_empty_and_degenerate_boxes():
    empty = [3.0, 3.0, 3.0, 3.0]
    assert torch.isnan(torchvision_iou(torch.tensor([empty]), torch.tensor([empty]))).all()
    assert iou(empty, empty) == 0.0
    assert iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0          # touching
    assert iou([10, 10, 0, 0], [0, 0, 10, 10]) == 0.0           # swapped corners: no area
    assert iou([0, 0, 10, 10], [0, 0, 10, 20]) == pytest.approx(0.5)
    assert pairwise_iou(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)
