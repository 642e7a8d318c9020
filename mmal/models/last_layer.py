"""Reading a task model's last layer: its inputs in a forward pass, and where its taps look.

Shared by the task wrappers' gradient embeddings (``'grad_embedding'``):
the gradient of a loss with respect to a layer's weights is the outer
product of the gradient at the layer's output with the layer's input, so
a wrapper needs that input, recorded with a forward hook during the pass
that also gives the outputs.
"""
from torch import Tensor, nn

from .learning_loss import UnsupportedScoreOutputError


class ModuleCalls:
    """Records ``(module, input, output)`` of every call of ``modules`` inside a block."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.modules = {id(m): m for m in modules}.values()
        self.records: list[tuple[nn.Module, Tensor, Tensor]] = []
        self._handles: list = []

    def __enter__(self) -> 'ModuleCalls':
        def hook(module, args, output):
            self.records.append((module, args[0], output))
        self._handles = [m.register_forward_hook(hook) for m in self.modules]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def center_tap(conv: nn.Module, owner: str) -> tuple[int, int]:
    """The kernel position that reads the input pixel under each output pixel.

    Only a plain stride-1, 'same'-padded conv puts output ``(y, x)`` on
    input ``(y, x)``; anything else is refused, naming what differs.
    """
    if not isinstance(conv, nn.Conv2d):
        raise UnsupportedScoreOutputError(
            f'{owner}: the last layer is a {type(conv).__name__}, not an nn.Conv2d; the '
            'gradient embedding is written for a convolution')
    kh, kw = conv.kernel_size
    same = (kh % 2 == 1 and kw % 2 == 1 and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding == (kh // 2, kw // 2))
    if not same:
        raise UnsupportedScoreOutputError(
            f'{owner}: the last conv has kernel {conv.kernel_size}, stride {conv.stride}, '
            f'padding {conv.padding}, dilation {conv.dilation}, groups {conv.groups}; the '
            'gradient embedding needs an odd kernel, stride 1, same padding, no groups')
    return kh // 2, kw // 2
