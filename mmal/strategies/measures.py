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


#: What a pose strategy reads, by its ``pose_output`` argument: a heatmap head's joint
#: heatmaps, or a SimCC head's (RTMPose) per-joint x and y distributions.
POSE_OUTPUTS = {'heatmaps': ('heatmaps',), 'simcc': ('simcc_x', 'simcc_y')}


def check_pose_output(owner: str, task: str | None, pose_output: str) -> None:
    """``pose_output`` is one of :data:`POSE_OUTPUTS`, and only pose reads anything but
    the default."""
    check_choice(owner, 'pose_output', pose_output, POSE_OUTPUTS)
    if task == 'detection' and pose_output != 'heatmaps':
        raise ValueError(f'{owner}: pose_output={pose_output!r} is for pose estimators; a '
                         'detector is read through its box posteriors, drop the key')


def simcc_entropy(simcc_x: Tensor, simcc_y: Tensor) -> Tensor:
    """Normalised entropy of each joint's 2-D location under SimCC, ``(..., Wx)``,
    ``(..., Wy)`` -> ``(...)``.

    SimCC models x and y as independent, so the joint's distribution over the
    ``Wx * Wy`` locations is their outer product, whose entropy is
    ``H(x) + H(y)``; divided by its maximum ``log(Wx * Wy)``, as a heatmap's
    entropy is divided by ``log(H * W)``.
    """
    entropy = (-torch.special.xlogy(simcc_x, simcc_x).sum(dim=-1)
               - torch.special.xlogy(simcc_y, simcc_y).sum(dim=-1))
    return entropy / math.log(simcc_x.shape[-1] * simcc_y.shape[-1])


def simcc_peak_probability(simcc_x: Tensor, simcc_y: Tensor) -> Tensor:
    """Probability of each joint's most likely location under SimCC, ``max p(x) * max p(y)``
    (x and y independent, as the head models them)."""
    return simcc_x.amax(dim=-1) * simcc_y.amax(dim=-1)


def pose_arrays(owner: str, candidate_outputs: dict, pose_output: str,
                dtype=np.float32) -> tuple[Tensor, ...]:
    """The candidates' pose outputs for ``pose_output`` as tensors, shapes checked:
    ``(N, K, H, W)`` heatmaps, or ``(N, K, Wx)`` and ``(N, K, Wy)`` SimCC distributions."""
    arrays = tuple(torch.as_tensor(np.asarray(candidate_outputs[key], dtype=dtype))
                   for key in POSE_OUTPUTS[pose_output])
    if pose_output == 'heatmaps':
        if arrays[0].dim() != 4:
            raise ValueError(f'{owner} expects pose heatmaps (N, K, H, W), got '
                             f'{tuple(arrays[0].shape)}')
    elif any(a.dim() != 3 for a in arrays) or arrays[0].shape[:2] != arrays[1].shape[:2]:
        raise ValueError(f'{owner} expects SimCC distributions (N, K, Wx) and (N, K, Wy), got '
                         f'{[tuple(a.shape) for a in arrays]}')
    return arrays
