"""Per-sample losses by replaying a model's own loss calls, and the one way MMAL
reaches inside an mmdet / mmpose model to do it.

mmdet's and mmpose's heads return batch losses, averaged over the batch;
Learning Loss needs each sample's loss. The task wrappers record the calls
the head makes to its loss functions during the ordinary ``loss`` pass, then
replay them per sample (sliced, or vmapped), with the loss modules made to
sum instead of average.

One mechanism for every reach inside: :func:`patched` shadows one attribute
(a module's ``forward``, a head's method, a function of a Python module)
for a ``with`` block and restores it on exit, error or not; nothing is
changed on a class. Recording calls (:func:`recorded_calls`), summing a
loss (:func:`summed_losses`) and handing mmdet's ``loss`` features already
extracted (:func:`returning`) are such patches.
"""
import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

_ABSENT = object()


@contextlib.contextmanager
def patched(owner: Any, name: str, make: Callable[[Callable], Callable]) -> Iterator[None]:
    """``owner.<name>`` is ``make(original)`` inside the block.

    The replacement is an attribute of ``owner`` itself (an instance, or a
    Python module), so the class and every other instance are untouched;
    whatever ``owner`` held under that name before is put back on exit.
    """
    original = getattr(owner, name)
    before = vars(owner).get(name, _ABSENT)
    setattr(owner, name, make(original))
    try:
        yield
    finally:
        if before is _ABSENT:
            delattr(owner, name)
        else:
            setattr(owner, name, before)


class Call(NamedTuple):
    """One recorded call: who was called, with what, and what it returned."""
    owner: Any
    args: tuple
    kwargs: dict
    output: Any


@contextlib.contextmanager
def recorded_calls(owners: Iterable[Any], name: str = 'forward',
                   keep: Callable[[Any], Any] | None = None) -> Iterator[list[Call]]:
    """Every call of ``owner.<name>`` for each owner in the block, in call order.

    The calls run as before; each is recorded once it returns. ``keep``
    maps what is recorded (args, kwargs, output), e.g. :func:`detached`.
    An owner listed twice is patched once.
    """
    calls: list[Call] = []
    keep = keep or (lambda value: value)

    def recording(owner: Any) -> Callable[[Callable], Callable]:
        def make(original: Callable) -> Callable:
            def call(*args, **kwargs):
                output = original(*args, **kwargs)
                calls.append(Call(owner, keep(args), keep(kwargs), keep(output)))
                return output
            return call
        return make

    with contextlib.ExitStack() as stack:
        for owner in {id(o): o for o in owners}.values():
            stack.enter_context(patched(owner, name, recording(owner)))
        yield calls


def returning(owner: Any, name: str, value: Any):
    """A block in which ``owner.<name>(...)`` returns ``value`` (e.g. a detector's
    ``extract_feat`` the features the wrapper already extracted and tapped, so
    mmdet's own ``loss`` runs without a second backbone pass)."""
    return patched(owner, name, lambda _original: lambda *args, **kwargs: value)


@contextlib.contextmanager
def summed_losses(head: nn.Module) -> Iterator[None]:
    """Make the head's mmdet loss modules sum over their elements instead of averaging.

    mmdet's losses all take ``avg_factor`` and ``reduction_override``; the
    heads pass the batch's positive count as ``avg_factor``. Inside this
    block every loss module of ``head`` drops it and sums, so a batch of
    one image gives that image's summed objective.
    """
    def summing(original: Callable) -> Callable:
        def summed(*args, **kwargs):
            kwargs.pop('avg_factor', None)
            kwargs['reduction_override'] = 'sum'
            return original(*args, **kwargs)
        return summed

    modules = [m for m in head.modules()
               if m is not head and type(m).__module__.startswith('mmdet.models.losses')]
    with contextlib.ExitStack() as stack:
        for module in modules:
            stack.enter_context(patched(module, 'forward', summing))
        yield


def total_loss(terms) -> Tensor:
    """The sum of a loss function's outputs (tensors, possibly nested in lists)."""
    flat = [t for v in terms for t in (v if isinstance(v, (list, tuple)) else [v])]
    return torch.stack([t.sum() for t in flat]).sum() if flat else torch.zeros(())


@torch.no_grad()
def per_image_losses_by_slicing(head, outs: tuple, gt_instances: list, img_metas: list,
                                gt_ignore: list | None) -> Tensor:
    """Each image's head loss computed as a batch of one (any dense head)."""
    per_image = []
    for i in range(len(img_metas)):
        one = tuple([lvl[i:i + 1] for lvl in out] for out in outs)
        single = head.loss_by_feat(*one, [gt_instances[i]], [img_metas[i]],
                                   None if gt_ignore is None else [gt_ignore[i]])
        per_image.append(total_loss(single.values()))
    return torch.stack(per_image).detach()


def detached(value, copy: bool = False):
    """``value`` with every tensor in it (lists, tuples, dicts walked) detached, and
    with ``copy`` cloned too."""
    if isinstance(value, Tensor):
        return value.detach().clone() if copy else value.detach()
    if isinstance(value, (list, tuple)):
        return type(value)(detached(v, copy) for v in value)
    if isinstance(value, dict):
        return {k: detached(v, copy) for k, v in value.items()}
    return value


def map_batch_first(value, batch_size: int, fn):
    """``value`` with ``fn`` applied to every batch-first tensor in it.

    A tensor is batch-first when its first dimension is ``batch_size``;
    lists, tuples and dicts are walked, anything else is kept.
    """
    if isinstance(value, Tensor):
        return fn(value) if value.dim() > 0 and value.shape[0] == batch_size else value
    if isinstance(value, (list, tuple)):
        return type(value)(map_batch_first(v, batch_size, fn) for v in value)
    if isinstance(value, dict):
        return {k: map_batch_first(v, batch_size, fn) for k, v in value.items()}
    return value


def sample_slice(value, b: int, batch_size: int):
    """Sample ``b`` of every batch-first tensor in ``value``, as a batch of one."""
    return map_batch_first(value, batch_size, lambda t: t[b:b + 1])


def looped_sample_values(module: nn.Module, args: tuple, kwargs: dict,
                          batch_size: int) -> Tensor:
    """``(B,)``: ``module`` called on each sample's slice, one call per sample."""
    return torch.stack([module(*sample_slice(args, b, batch_size),
                               **sample_slice(kwargs, b, batch_size)).sum()
                        for b in range(batch_size)])


def batched_sample_values(module: nn.Module, args: tuple, kwargs: dict,
                           batch_size: int) -> Tensor:
    """``(B,)``: :func:`looped_sample_values` in one call, with :func:`torch.func.vmap`.

    vmap runs over dimension 0 of the batch-first tensors (those
    :func:`sample_slice` slices; every other argument is shared by all samples),
    and gives the module each sample's tensors with a batch dimension of
    one, as the loop does. Raises what vmap raises for a module it cannot
    run.
    """
    batched: list[Tensor] = []
    map_batch_first((args, kwargs), batch_size, batched.append)
    if not batched:  # nothing per sample: every sample gets the same value
        return module(*args, **kwargs).sum().expand(batch_size).clone()

    def one_sample(*tensors: Tensor) -> Tensor:
        sample = iter(tensors)
        sample_args, sample_kwargs = map_batch_first(
            (args, kwargs), batch_size, lambda _: next(sample).unsqueeze(0))
        return module(*sample_args, **sample_kwargs).sum()

    return torch.func.vmap(one_sample)(*batched)
