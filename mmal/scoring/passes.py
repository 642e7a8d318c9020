"""What a strategy asks of the scoring loop: passes over a set, and their views.

A strategy never runs the model. It declares, per set (candidates,
labeled), the passes it needs: which outputs of the model's scoring API
(:data:`~mmal.models.learning_loss.SCORE_OUTPUTS`), on which view of the
input (the image itself, a noisy or flipped copy), how many committee
members (Monte-Carlo dropout). The scoring loop runs every declared pass on
each batch it loads, so the data is read once whatever the strategy.
"""
from dataclasses import dataclass, field

import torch
from mmengine.registry import DefaultScope
from torch import Tensor

from ..registry import SCORE_TRANSFORMS


@dataclass(frozen=True)
class ScorePass:
    """One pass of the model over a set.

    Attributes:
        outputs (tuple[str]): What ``score_step`` computes.
        transform (dict, optional): Config of an input transform in
            ``SCORE_TRANSFORMS`` (:class:`GaussianNoise`,
            :class:`HorizontalFlip`): the view the pass sees. Boxes come
            back in the original image's frame.
        members (int): Forward passes whose outputs are stacked per sample
            (a committee); > 1 needs ``dropout`` > 0, or the members agree.
        dropout (float): Monte-Carlo dropout rate on the task head's input
            features, kept active in test mode (Gal & Ghahramani, 2016).
        image_size (int, optional): Side of ``'images'`` outputs.
        snapshots (int): 0, or S >= 2: the committee is the last S
            checkpoints of the training the scored model comes from
            (snapshot ensembles; see :mod:`mmal.scoring.snapshots`),
            member m having the m-th oldest's weights; ``members`` is then
            S (left at 1, it is set to S). With ``dropout`` > 0 each
            snapshot also drops features.
    """

    outputs: tuple[str, ...]
    transform: dict | None = None
    members: int = 1
    dropout: float = 0.0
    image_size: int | None = None
    snapshots: int = 0
    seed: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.members, int) or self.members < 1:
            raise ValueError(f'ScorePass: members={self.members!r} must be an integer >= 1')
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f'ScorePass: dropout={self.dropout!r} must lie in [0, 1)')
        if (not isinstance(self.snapshots, int) or isinstance(self.snapshots, bool)
                or self.snapshots < 0 or self.snapshots == 1):
            raise ValueError(f'ScorePass: snapshots={self.snapshots!r} must be 0 (no snapshot '
                             'committee) or an integer >= 2 (the last checkpoints)')
        if self.snapshots:
            if self.members == 1:
                object.__setattr__(self, 'members', self.snapshots)
            elif self.members != self.snapshots:
                raise ValueError(f'ScorePass: members={self.members} with '
                                 f'snapshots={self.snapshots}: a snapshot committee has one '
                                 'member per snapshot; leave members at 1 or equal')
        elif self.members > 1 and self.dropout == 0.0:
            raise ValueError('ScorePass: members > 1 with dropout=0 gives identical members; '
                             'set dropout > 0 or snapshots')


def build_transform(cfg: dict | None):
    """The input transform of a pass (None: the image itself)."""
    if cfg is None:
        return None
    with DefaultScope.overwrite_default_scope('mmal'):
        return SCORE_TRANSFORMS.build(dict(cfg))


@SCORE_TRANSFORMS.register_module()
class GaussianNoise:
    """Adds ``N(0, std^2)`` to the preprocessed (normalised) input, seeded.

    Args:
        std (float): Noise standard deviation, in units of the normalised
            input (mmdet / mmpose preprocessors divide by the pixel std, so
            ``std=0.1`` is about a tenth of the images' own spread).
        seed (int): Seed of the noise. Each sample draws its own stream from
            ``(seed, the sample's id)`` (``sample_seeds``, set by the scoring
            loop per batch), so a sample gets the same noise whatever batch
            or rank scores it. Padding added to batch the inputs stays
            noise-free when the sample's ``img_shape`` is known.
    """

    def __init__(self, std: float, seed: int = 0) -> None:
        if not isinstance(std, (int, float)) or std <= 0:
            raise ValueError(f'GaussianNoise: std={std!r} must be a number > 0')
        self.std = float(std)
        self.seed = int(seed)
        self.sample_seeds: list[int] | None = None
        self.sample_shapes: list[tuple | None] | None = None

    def __call__(self, inputs: Tensor) -> Tensor:
        seeds = self.sample_seeds or [self.seed + i for i in range(len(inputs))]
        shapes = self.sample_shapes or [None] * len(inputs)
        noise = torch.zeros_like(inputs, dtype=torch.float32)
        for i, (seed, shape) in enumerate(zip(seeds, shapes)):
            h, w = shape[:2] if shape else inputs.shape[-2:]
            generator = torch.Generator(device=inputs.device).manual_seed(seed)
            noise[i, :, :h, :w] = torch.randn((inputs.shape[1], h, w), generator=generator,
                                              device=inputs.device)
        return inputs + self.std * noise.to(inputs.dtype)

    def invert(self, key: str, value):
        """Outputs on the noisy input already are in the input's frame."""
        return value


@SCORE_TRANSFORMS.register_module()
class HorizontalFlip:
    """Mirrors the (padded) input batch left-right; boxes are mirrored back."""

    def __init__(self) -> None:
        self.width: int | None = None

    def __call__(self, inputs: Tensor) -> Tensor:
        self.width = inputs.shape[-1]
        return inputs.flip(-1)

    def invert(self, key: str, value):
        """Map an output of the flipped input back to the input's frame."""
        if key in ('boxes', 'proposals'):
            width = self.width
            return [torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1)
                    for b in value]
        if key in ('heatmaps', 'grad_embedding'):
            raise ValueError(f'HorizontalFlip cannot map {key} back: left and right joints '
                             'swap, and a gradient embedding has rows per joint or class '
                             'location; use GaussianNoise for such views')
        return value


class FeatureDropout:
    """Monte-Carlo dropout on the task head's input features, one seeded stream per sample.

    Args:
        p (float): Dropout rate.
        seeds (list[int]): One seed per sample of the batch, so a sample's
            masks do not depend on its batch or rank.
    """

    def __init__(self, p: float, seeds: list[int]) -> None:
        self.p = p
        self.seeds = seeds

    def __call__(self, feats):
        generators = None

        def drop(x):
            nonlocal generators
            if not isinstance(x, Tensor) or not x.is_floating_point():
                return x
            if generators is None:
                generators = [torch.Generator(device=x.device).manual_seed(s)
                              for s in self.seeds]
            keep = torch.stack([torch.rand(x.shape[1:], generator=g, device=x.device)
                                for g in generators]) >= self.p
            return x * keep.to(x.dtype) / (1.0 - self.p)

        if isinstance(feats, (list, tuple)):
            return type(feats)(drop(f) for f in feats)
        return drop(feats)
