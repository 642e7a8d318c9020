"""The uncertainty family's shared part: per-box / per-joint measures, aggregated per sample.

Not a strategy itself: :class:`LeastConfidenceStrategy`,
:class:`MarginStrategy` and :class:`EntropyStrategy` each register one
measure on top of it.
"""
from abc import ABCMeta, abstractmethod

import numpy as np
import torch
from torch import Tensor

from ..scoring import POSTERIOR_KIND
from .base import BaseStrategy, require
from .measures import (
    AGGREGATIONS,
    POSE_OUTPUTS,
    aggregate,
    check_choice,
    check_pose_output,
    pose_arrays,
)


class UncertaintyStrategy(BaseStrategy, metaclass=ABCMeta):
    """Score = how unsure the model is, from its task-normalised outputs (one pass).

    **Detection**: the model's candidate boxes (``posteriors``: per image,
    before NMS, the most confident boxes with their class posteriors,
    background last; see :mod:`mmal.models.detectors.candidates` and the
    model's ``score_cfg``). A box's uncertainty is measured on its full
    posterior, so "object or background?" doubt counts as well as "which
    class?" doubt. How a posterior is read depends on the head:

    - softmax heads (SSD, the RoI head of Faster R-CNN): the measure of the
      distribution over the C classes and background;
    - sigmoid heads (RetinaNet, FCOS): each class is its own binary
      decision ``(p_c, 1 - p_c)``, as the head is trained (one-vs-all, the
      reading of Brust et al., *Active Learning for Deep Object
      Detection*, VISAPP 2019); least confidence and margin take the box's
      least sure decision (the maximum over classes), entropy the entropy
      of the independent decisions together (the sum over classes of the
      binary entropies, which is the joint entropy under the head's
      independence assumption), divided by ``C log 2``. Every measure
      stays in ``[0, 1]``. With ``p_c`` the sigmoid of class ``c``'s logit:

      - least confidence ``max_c (1 - max(p_c, 1 - p_c))``, in ``[0, 0.5]``;
      - margin ``max_c (1 - |p_c - (1 - p_c)|)``, in ``[0, 1]``;
      - entropy ``sum_c H(p_c) / (C log 2)``, ``H`` the binary entropy.

      One binary decision's margin uncertainty is twice its least
      confidence, so on a sigmoid head the two strategies rank images
      alike (unless ``empty_score`` is a number). The ``p_c`` are the
      classifier's own: FCOS's centerness neither ranks the candidates nor
      scales their posteriors, as mmdet cuts its candidates on class
      scores before centerness weighs in (reasons in
      :mod:`mmal.models.detectors.candidates`).

    **Images with no candidate box**: a detector that sees nothing in an
    image either faces an empty image or misses everything in it, and
    cannot tell which, so by default (``empty_score='max'``) the image
    counts as one box with the measure's maximum (a uniform posterior, or
    ``p_c = 0.5`` for sigmoid heads): such images are labeled first. Give
    a number (e.g. ``0.0``) to label them last instead.

    **Pose** (``heatmaps`` ``(K, H, W)`` per instance): each subclass
    measures every joint's heatmap, aggregated over the K joints. Joint
    visibility is unknown without labels, so every joint counts. A SimCC
    head (RTMPose) makes no heatmaps: with ``pose_output='simcc'`` the
    measure reads each joint's x and y distributions (``simcc_x``,
    ``simcc_y``: ``softmax(beta * logits)`` at the temperature the head's
    KL loss trains with) as the one distribution over 2-D locations they
    define, their outer product (SimCC models x and y as independent).

    Per box / joint, aggregated per sample by ``aggregation``: ``'max'``
    (the most uncertain box or joint), ``'mean'`` or ``'sum'`` (more
    uncertain boxes make a more informative image), as compared by Brust
    et al.

    Args:
        task (str): ``'detection'`` or ``'pose'``.
        aggregation (str): ``'max'``, ``'mean'`` or ``'sum'``.
        empty_score (float | str): Detection: the score of an image with no
            candidate box; ``'max'`` is the measure's maximum.
        pose_output (str): Pose: ``'heatmaps'`` (heatmap heads) or
            ``'simcc'`` (SimCC heads such as RTMPose's, which have no
            heatmaps); the experiment refuses, before any training, the one
            the model's head does not give.
    """

    tasks = ('detection', 'pose')

    def __init__(self, task: str | None = None, aggregation: str = 'max',
                 empty_score: float | str = 'max', pose_output: str = 'heatmaps') -> None:
        super().__init__(task)
        name = type(self).__name__
        check_choice(name, 'aggregation', aggregation, AGGREGATIONS)
        check_pose_output(name, task, pose_output)
        self.pose_output = pose_output
        if empty_score != 'max' and not isinstance(empty_score, (int, float)):
            raise ValueError(f"{name}: empty_score={empty_score!r} must be 'max' or a number")
        self.aggregation = aggregation
        self.empty_score = empty_score

    @property
    def outputs(self) -> tuple[str, ...]:
        if self.task is None:
            raise RuntimeError(f'{type(self).__name__}: build it with task=..., the outputs '
                               'differ between detection and pose')
        # the task may be set after __init__ (DensityWeightedStrategy's inner measure)
        check_pose_output(type(self).__name__, self.task, self.pose_output)
        return ('posteriors',) if self.task == 'detection' else POSE_OUTPUTS[self.pose_output]

    # ------------------------------------------------------------- measures
    @abstractmethod
    def box_uncertainty(self, probs: Tensor) -> Tensor:
        """Uncertainty of each softmax posterior ``(..., C + 1)`` -> ``(...)``."""

    @abstractmethod
    def class_uncertainty(self, probs: Tensor) -> Tensor:
        """Uncertainty of each sigmoid box ``(..., C)`` (class probabilities) -> ``(...)``."""

    def joint_uncertainty(self, heatmaps: Tensor) -> Tensor:
        """Uncertainty of each joint's heatmap ``(B, K, H, W)`` -> ``(B, K)``."""
        raise NotImplementedError(f'{type(self).__name__} has no heatmap measure')

    def simcc_uncertainty(self, simcc_x: Tensor, simcc_y: Tensor) -> Tensor:
        """Uncertainty of each joint's SimCC distributions ``(B, K, Wx)``, ``(B, K, Wy)``
        -> ``(B, K)``."""
        raise NotImplementedError(f'{type(self).__name__} has no SimCC measure')

    # ------------------------------------------------------------- scoring
    def scores(self, candidate_outputs: dict, labeled_outputs: dict) -> np.ndarray:
        require(self, candidate_outputs, *self.outputs)
        if self.task == 'detection':
            return self.detection_scores(candidate_outputs['posteriors'],
                                         candidate_outputs.get(POSTERIOR_KIND, 'softmax'))
        if self.pose_output == 'simcc':
            return self.simcc_scores(candidate_outputs)
        return self.pose_scores(candidate_outputs['heatmaps'])

    def per_box(self, probs: Tensor, kind: str) -> Tensor:
        """Each box's uncertainty, ``(N, C+1)`` posteriors -> ``(N,)``."""
        if kind == 'softmax':
            return self.box_uncertainty(probs)
        if kind == 'sigmoid':
            return self.class_uncertainty(probs[..., :-1])
        raise ValueError(f"posterior_kind {kind!r}: 'softmax' or 'sigmoid'")

    def detection_scores(self, posteriors: list, kind: str = 'softmax') -> np.ndarray:
        """Per-image scores ``(N,)`` from each image's ``(N_i, C+1)`` posteriors."""
        out = np.empty(len(posteriors), dtype=np.float64)
        for i, probs in enumerate(posteriors):
            probs = torch.as_tensor(np.asarray(probs, dtype=np.float32))
            if probs.dim() != 2 or probs.shape[1] < 2:
                raise ValueError(f'{type(self).__name__}: image {i} posteriors have shape '
                                 f'{tuple(probs.shape)}, expected (boxes, classes + 1)')
            if len(probs):
                out[i] = float(aggregate(self.per_box(probs, kind), self.aggregation))
            else:
                out[i] = self.empty_value(probs.shape[1], kind)
        return out

    def empty_value(self, columns: int, kind: str) -> float:
        """The score of an image with no candidate box."""
        if self.empty_score != 'max':
            return float(self.empty_score)
        if kind == 'softmax':
            uniform = torch.full((1, columns), 1.0 / columns)
        else:
            uniform = torch.cat([torch.full((1, columns - 1), 0.5), torch.zeros(1, 1)], dim=1)
        return float(self.per_box(uniform, kind)[0])

    def pose_scores(self, heatmaps) -> np.ndarray:
        """Per-instance scores ``(N,)`` from heatmaps ``(N, K, H, W)``."""
        heatmaps, = pose_arrays(type(self).__name__, dict(heatmaps=heatmaps), 'heatmaps')
        return self.aggregated(self.joint_uncertainty(heatmaps))

    def simcc_scores(self, candidate_outputs: dict) -> np.ndarray:
        """Per-instance scores ``(N,)`` from ``simcc_x`` ``(N, K, Wx)`` and ``simcc_y``."""
        # float64: a near-uniform untrained head's entropies differ below float32's resolution
        simcc_x, simcc_y = pose_arrays(type(self).__name__, candidate_outputs, 'simcc',
                                       dtype=np.float64)
        return self.aggregated(self.simcc_uncertainty(simcc_x, simcc_y))

    def aggregated(self, joint_values: Tensor) -> np.ndarray:
        """``(N, K)`` joint values -> ``(N,)`` scores."""
        return np.asarray([float(aggregate(u, self.aggregation)) for u in joint_values],
                          dtype=np.float64)
