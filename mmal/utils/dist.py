"""Process-group set-up that also works on CPU-only machines."""
import atexit
import contextlib
import gc
import os
import pickle
from collections.abc import Callable
from unittest import mock

import torch
from mmengine.config import Config
from mmengine.dist import (
    all_gather_object,
    broadcast_object_list,
    get_rank,
    get_world_size,
    init_dist,
)

from .cli import LAUNCHERS

#: Seconds a collective waits for the other ranks (``env_cfg.dist_cfg.timeout``).
DEFAULT_TIMEOUT_S = 1800


def setup_distributed(launcher: str, cfg: Config) -> None:
    """Initialise the process group for ``launcher`` before any Runner exists.

    This is mmengine's ``init_dist(launcher, **env_cfg.dist_cfg)``, the
    timeout defaulting to :data:`DEFAULT_TIMEOUT_S`. Without a GPU the
    group uses gloo whatever the config's backend (see
    :func:`_without_cuda_device`), and ``model_wrapper_cfg`` asks for
    ``device_ids=None``: the default DDP wrapper passes
    ``device_ids=[LOCAL_RANK]``, which DDP rejects for CPU modules. The
    Runner then finds the group and skips ``init_dist``.
    """
    if launcher == 'none':
        return
    if launcher not in LAUNCHERS:
        raise ValueError(f"--launcher {launcher!r}: choose 'none', 'pytorch' or 'slurm'")
    atexit.register(_destroy_group)
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg') or {})
    # A collective that waits longer than this for a rank fails the run
    # instead of hanging (a rank killed, a node lost); --resume goes on.
    dist_cfg.setdefault('timeout', DEFAULT_TIMEOUT_S)
    if torch.cuda.is_available():
        init_dist(launcher, **dist_cfg)
        return
    dist_cfg['backend'] = 'gloo'  # configs name nccl, which needs GPUs
    with _without_cuda_device(launcher):
        init_dist(launcher, **dist_cfg)
    cfg.model_wrapper_cfg = dict(
        type='MMDistributedDataParallel', device_ids=None,
        find_unused_parameters=cfg.get('find_unused_parameters', False))


def _destroy_group() -> None:
    """Free DDP wrappers, then the group, before the interpreter tears down.

    A gloo group still alive at interpreter exit, or a DDP reducer freed
    after it, can abort a rank ("terminate called without an active
    exception", SIGABRT) after all its work is done, failing the run.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gc.collect()
        torch.distributed.destroy_process_group()


def _without_cuda_device(launcher: str) -> contextlib.AbstractContextManager:
    """What mmengine's ``init_dist`` needs to run unchanged on a CPU-only machine.

    mmengine 0.10.7 picks this process's GPU before creating the group:
    ``torch.cuda.set_device(local_rank)`` in ``_init_dist_pytorch`` and
    ``_init_dist_slurm`` (mmengine/dist/utils.py, lines 130 and 221), which
    raises without CUDA. With no GPU there is nothing to pick, so that call
    is a no-op here; the rest (SLURM variables to ``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``..., the timeout, ``init_process_group``) is mmengine's.
    Under Slurm, a task without ``SLURM_LOCALID`` gets local rank
    ``SLURM_PROCID % torch.cuda.device_count()`` (line 198), a division by
    zero without GPUs: such a task is local rank 0 here.
    """
    if launcher == 'slurm':
        os.environ.setdefault('SLURM_LOCALID', '0')
    return mock.patch.object(torch.cuda, 'set_device', lambda device: None)


def broadcast_from_rank0(obj):
    """Rank 0's ``obj`` on every rank (``obj`` itself when not distributed)."""
    holder = [obj]
    broadcast_object_list(holder, src=0)
    return holder[0]


def on_rank0(fn: Callable):
    """``fn()`` computed on rank 0 alone, its result (or its error) on every rank.

    The one way the experiment lets a single rank read or write shared
    files: any error raised there is re-raised on every rank, instead of
    leaving the others waiting in the broadcast until the process group's
    timeout. An error that cannot be pickled arrives as a RuntimeError
    with its type and message.
    """
    outcome = None
    if get_rank() == 0:
        try:
            outcome = fn()
        except Exception as err:  # noqa: BLE001 - every error must reach every rank
            outcome = _Raised(err)
    if get_world_size() > 1 and isinstance(outcome, _Raised) and not _picklable(outcome.error):
        outcome = _Raised(RuntimeError(f'{type(outcome.error).__name__} on rank 0: '
                                       f'{outcome.error}'))
    outcome = broadcast_from_rank0(outcome)
    if isinstance(outcome, _Raised):
        raise outcome.error
    return outcome


def differences_from_rank0(digest: dict) -> dict[int, list[str]]:
    """Every rank's ``digest`` compared with rank 0's: ``{rank: [differing keys]}``.

    Each rank passes a small picklable dict describing what it is about to
    run (digests, settings, versions). All of them are gathered with
    ``all_gather_object``, so every rank gets the same answer and can raise
    the same error, instead of one rank failing while the others wait in a
    later collective. Keys are listed in rank 0's order, then keys rank 0
    lacks. ``{}`` when every rank agrees, and when not distributed.
    """
    if get_world_size() == 1:
        return {}
    gathered = all_gather_object(digest)
    reference = gathered[0]
    missing = object()
    out = {}
    for rank, theirs in enumerate(gathered[1:], start=1):
        keys = list(reference) + [k for k in theirs if k not in reference]
        differ = [k for k in keys if reference.get(k, missing) != theirs.get(k, missing)]
        if differ:
            out[rank] = differ
    return out


def _picklable(obj) -> bool:
    try:
        pickle.dumps(obj)
        return True
    except Exception:  # noqa: BLE001 - whatever pickling raises, it cannot be sent
        return False


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error
