"""mmpose's HourglassNet with a configurable stem width, for small models."""
import copy

from mmcv.cnn import ConvModule
from mmpose.models.backbones import HourglassNet
from mmpose.models.backbones.resnet import BasicBlock, ResLayer
from mmpose.registry import MODELS
from torch import nn


@MODELS.register_module()
class CompactHourglassNet(HourglassNet):
    """:class:`mmpose.models.HourglassNet` whose stem width is a parameter.

    mmpose's stem is fixed at 3 -> 128 -> 256 channels (stride 4), so the
    first hourglass level always runs at 256 channels; at 64x64 inputs that
    alone costs ~3 s per training batch of 32 on 2 CPU cores. Here the stem
    is ``3 -> stem_channels -> stage_channels[0]``; everything after it (the
    stacked hourglass modules, intermediate supervision, module names and
    therefore tap paths) is mmpose's own. With ``stem_channels=128`` and
    ``stage_channels[0]=256`` it is exactly ``HourglassNet``.

    Args:
        stem_channels (int): Width of the stem's 7x7 convolution.
        **kwargs: The arguments of :class:`mmpose.models.HourglassNet`.
    """

    def __init__(self, stem_channels: int = 128, **kwargs) -> None:
        super().__init__(**kwargs)
        norm_cfg = copy.deepcopy(kwargs.get('norm_cfg', dict(type='BN', requires_grad=True)))
        stage_channels = kwargs.get('stage_channels', (256, 256, 384, 384, 384, 512))
        self.stem = nn.Sequential(
            ConvModule(3, stem_channels, 7, padding=3, stride=2, norm_cfg=norm_cfg),
            ResLayer(BasicBlock, 1, stem_channels, stage_channels[0], stride=2,
                     norm_cfg=norm_cfg))
