"""The strategies' math, in one place: entropies, KL to the mean, heatmaps as
distributions, and the reduction of a sample's box / joint values to one score.

Torch for what runs on model outputs (the uncertainty family), numpy for
the committee's tables; each quantity has one definition here. IoU lives
in :mod:`mmal.utils.boxes` (the annotation tools need it too).
"""
import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.special import xlogy
from torch import Tensor

#: How a sample's values (one per box or joint) become its score. ``mean`` is
#: the sum over the count, the same for numpy arrays and tensors.
AGGREGATIONS = {
    'max': lambda values: values.max(),
    'mean': lambda values: values.sum() / len(values),
    'sum': lambda values: values.sum(),
}


def aggregate(values, how: str):
    """Reduce one sample's ``(N,)`` box or joint values (array or tensor) to one number."""
    return AGGREGATIONS[how](values)


def check_choice(owner: str, key: str, value, choices: Sequence) -> None:
    """A strategy argument that must be one of ``choices``: the error names both."""
    if value not in choices:
        raise ValueError(f'{owner}: {key}={value!r} must be one of {tuple(choices)}')


def heatmap_distribution(heatmaps: Tensor) -> Tensor:
    """``(..., H, W)`` heatmaps -> ``(..., H*W)`` distributions over the pixels.

    Clipped at 0 and normalised to sum 1 (a softmax would flatten a
    ``[0, 1]``-valued heatmap into near-uniform); an all-zero heatmap, a
    joint the model places nowhere, becomes uniform.
    """
    mass = heatmaps.flatten(-2).clamp(min=0.0)
    total = mass.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(mass, 1.0 / mass.shape[-1])
    return torch.where(total > 0, mass / total.clamp(min=torch.finfo(mass.dtype).tiny), uniform)


def normalised_entropy(probs: Tensor) -> Tensor:
    """Entropy over the last dim divided by its maximum ``log(n)`` (0 when ``n == 1``)."""
    n = probs.shape[-1]
    entropy = -torch.special.xlogy(probs, probs).sum(dim=-1)
    return entropy / math.log(n) if n > 1 else torch.zeros_like(entropy)


def binary_entropy(p: Tensor) -> Tensor:
    """Entropy of Bernoulli(p), in nats."""
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))


def sum_normalised(values: Tensor, columns: int) -> Tensor:
    """Sum over the last dim divided by ``columns * log 2``: binary entropies into [0, 1]."""
    return values.sum(dim=-1) / (columns * math.log(2))


def entropy(p: np.ndarray) -> np.ndarray:
    """Entropy over the last dim, in nats (``0 log 0 = 0``)."""
    return -xlogy(p, p).sum(axis=-1)


def kl_to_mean(probs: np.ndarray) -> np.ndarray:
    """``(..., M, n)`` -> ``(...)``: ``1/M sum_m KL(P_m || mean_m P_m)``."""
    mean = probs.mean(axis=-2, keepdims=True)
    kl = (xlogy(probs, probs) - xlogy(probs, mean)).sum(axis=-1)
    return np.clip(kl.mean(axis=-1), 0.0, None)
