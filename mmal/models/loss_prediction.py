"""The loss-prediction module of Learning Loss for Active Learning."""
from collections.abc import Sequence

import torch
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class LossPredictionModule(BaseModule):
    """Predicts the target model's loss from several of its feature maps.

    Per tapped map: global average pooling, a fully connected layer and a
    ReLU; the per-map vectors are concatenated and a last fully connected
    layer maps them to one scalar per sample (Yoo & Kweon, CVPR 2019, Fig. 2).

    Args:
        in_channels (Sequence[int]): Channels of each tapped feature map, in
            the order the taps deliver them.
        width (int): Output width of each per-map FC layer. The paper uses
            128.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self, in_channels: Sequence[int], width: int = 128,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        in_channels = list(in_channels)
        if not in_channels or any(int(c) <= 0 for c in in_channels):
            raise ValueError(
                f'loss_prediction.in_channels={in_channels!r}: give one positive '
                'channel count per tapped feature map')
        if width <= 0:
            raise ValueError(f'loss_prediction.width={width!r} must be positive')
        self.in_channels = in_channels
        self.width = width
        self.fcs = nn.ModuleList(nn.Linear(c, width) for c in in_channels)
        self.out = nn.Linear(width * len(in_channels), 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """Predict one loss per sample.

        Args:
            feats (Sequence[Tensor]): The tapped maps, each ``(B, C_i, ...)``
                with any number of spatial dims (or none).

        Returns:
            Tensor: Predicted losses, shape ``(B,)``.
        """
        self._check_inputs(feats)
        # Full precision under mixed-precision training: the module is a few
        # small layers, and in bf16 (8 bits of mantissa) close predictions
        # would tie, losing the order the ranking loss trains.
        with torch.autocast(feats[0].device.type, enabled=False):
            pooled = [fc(pool_features(f.float())).relu() for f, fc in zip(feats, self.fcs)]
            return self.out(torch.cat(pooled, dim=1)).squeeze(1)

    def _check_inputs(self, feats: Sequence[Tensor]) -> None:
        if len(feats) != len(self.in_channels):
            raise ValueError(
                f'the taps deliver {len(feats)} feature maps but '
                f'loss_prediction.in_channels has {len(self.in_channels)} entries '
                f'({self.in_channels}); give one channel count per tapped map')
        for i, (f, c) in enumerate(zip(feats, self.in_channels)):
            if f.dim() < 2 or f.shape[1] != c:
                raise ValueError(
                    f'loss_prediction.in_channels[{i}]={c} but tapped map {i} has '
                    f'shape {tuple(f.shape)} ({f.shape[1] if f.dim() > 1 else "no"} '
                    f'channels); set in_channels[{i}]={f.shape[1] if f.dim() > 1 else "?"}')


def pool_features(feat: Tensor) -> Tensor:
    """Global average pooling of a ``(B, C, ...)`` map to ``(B, C)``."""
    return feat.flatten(2).mean(dim=2) if feat.dim() > 2 else feat
