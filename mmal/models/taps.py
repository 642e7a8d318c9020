"""Forward hooks that tap intermediate feature maps of a target model."""
import difflib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

_SPEC = re.compile(r'^(?P<path>[A-Za-z0-9_.]*?)(\[(?P<index>-?\d+)\])?$')


class FeatureTaps:
    """Collects the outputs of named submodules during a forward pass.

    A tap is a dotted module path relative to the target model, optionally
    followed by ``[i]`` to keep one element of a tuple output:
    ``'neck'`` taps every map the neck returns, ``'neck[0]'`` its first,
    ``'backbone.layer2'`` one backbone stage. The model is not modified:
    hooks are registered with :meth:`torch.nn.Module.register_forward_hook`
    and removed by :meth:`remove`.

    Maps are only kept inside :meth:`record`, so evaluation forwards and
    anything outside that block hold no tensors.

    Args:
        model (nn.Module): The target model.
        taps (Sequence[str]): Tap specs, in the order the maps are wanted.
        cfg_key (str): The config key that holds ``taps``, named in errors.
    """

    def __init__(self, model: nn.Module, taps: Sequence[str],
                 cfg_key: str = 'taps') -> None:
        if isinstance(taps, str) or not taps:
            raise ValueError(f'{cfg_key} must be a non-empty list of module paths, '
                             f'got {taps!r}')
        modules = dict(model.named_modules())
        self._specs: list[tuple[str, int | None]] = []
        for n, spec in enumerate(taps):
            match = _SPEC.match(spec) if isinstance(spec, str) else None
            if match is None:
                raise ValueError(f"{cfg_key}[{n}]={spec!r} is not a tap: write a dotted "
                                 "module path such as 'neck' or 'backbone.layer2[0]'")
            path, index = match['path'], match['index']
            if path not in modules:
                close = difflib.get_close_matches(path, list(modules), n=3)
                hint = f' Did you mean {", ".join(map(repr, close))}?' if close else ''
                raise ValueError(f'{cfg_key}[{n}]={spec!r}: the model has no module '
                                 f'{path!r}.{hint}')
            self._specs.append((path, None if index is None else int(index)))
        self._outputs: dict[str, object] = {}
        self._recording = False
        self._handles = [
            modules[path].register_forward_hook(self._make_hook(path))
            for path in dict.fromkeys(path for path, _ in self._specs)
        ]

    def _make_hook(self, path: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if self._recording:
                self._outputs[path] = output
        return hook

    @contextmanager
    def record(self) -> Iterator['FeatureTaps']:
        """Keep tapped outputs for the forward passes run inside the block."""
        self._outputs.clear()
        self._recording = True
        try:
            yield self
        finally:
            self._recording = False

    def pop(self) -> list[Tensor]:
        """Return the recorded maps in tap order and forget them."""
        outputs, self._outputs = self._outputs, {}
        maps: list[Tensor] = []
        for path, index in self._specs:
            if path not in outputs:
                raise RuntimeError(
                    f'tapped module {path!r} did not run in this forward pass; tap a '
                    'module that the feature extractor calls')
            out = outputs[path]
            items = list(out) if isinstance(out, (tuple, list)) else [out]
            if index is not None:
                items = [items[index]]
            maps.extend(t for t in items if isinstance(t, Tensor))
        return maps

    def remove(self) -> None:
        """Detach every hook from the model and drop recorded maps."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._outputs.clear()

    @property
    def num_hooks(self) -> int:
        """Number of forward hooks currently registered."""
        return len(self._handles)


#: Side of the blank image :func:`tapped_channels` runs: large enough for every
#: stride the shipped backbones have (down to 1/64) and a few ms on a CPU.
PROBE_SIZE = 256


@torch.no_grad()
def tapped_channels(model: nn.Module, taps: FeatureTaps, size: int = PROBE_SIZE) -> list[int]:
    """Channels of each tapped map, read off one forward of a blank image.

    What a user would otherwise copy from the architecture by hand
    (``loss_prediction.in_channels``), and get wrong when the neck or the
    taps change. The model's train / eval mode is restored afterwards.

    Raises:
        ValueError: When the model cannot run a ``size`` squared image
            (a fixed-size transformer), naming the key to give instead.
    """
    was_training = model.training
    model.eval()
    try:
        with taps.record():
            model.extract_feat(torch.zeros(1, 3, size, size))
        maps = taps.pop()
    except Exception as err:  # any failure of a model we do not know
        raise ValueError(f'could not read the tapped maps\' channels from a {size}x{size} '
                         f'forward ({type(err).__name__}: {err}); give '
                         'model.loss_prediction.in_channels, one count per tapped map') from err
    finally:
        model.train(was_training)
    return [int(m.shape[1]) for m in maps]
