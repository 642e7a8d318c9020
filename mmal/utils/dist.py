"""Process-group set-up that also works on CPU-only machines."""
import datetime
import os
import subprocess
from collections.abc import Callable

import torch
from mmengine.config import Config
from mmengine.dist import (
    all_gather_object,
    broadcast_object_list,
    get_rank,
    get_world_size,
    init_dist,
)

#: Seconds a collective waits for the other ranks (``env_cfg.dist_cfg.timeout``).
DEFAULT_TIMEOUT_S = 1800


def setup_distributed(launcher: str, cfg: Config) -> None:
    """Initialise the process group for ``launcher`` before any Runner exists.

    On GPUs this is mmengine's ``init_dist``. On CPU, mmengine 0.10's
    ``init_dist`` calls ``torch.cuda.set_device`` and fails, and the default
    DDP wrapper passes ``device_ids=[LOCAL_RANK]``, which DDP rejects for CPU
    modules; so the group is created with gloo here (the Runner then skips
    ``init_dist``) and ``model_wrapper_cfg`` asks for ``device_ids=None``.
    """
    if launcher == 'none':
        return
    if launcher not in ('pytorch', 'slurm'):
        raise ValueError(f"--launcher {launcher!r}: choose 'none', 'pytorch' or 'slurm'")
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg') or {})
    # A collective that waits longer than this for a rank fails the run
    # instead of hanging (a rank killed, a node lost); --resume goes on.
    dist_cfg.setdefault('timeout', DEFAULT_TIMEOUT_S)
    if torch.cuda.is_available():
        init_dist(launcher, **dist_cfg)
        return
    if launcher == 'slurm':
        _slurm_env_to_torch_env()
    torch.distributed.init_process_group(
        backend='gloo', timeout=datetime.timedelta(seconds=dist_cfg['timeout']))
    cfg.model_wrapper_cfg = dict(
        type='MMDistributedDataParallel', device_ids=None,
        find_unused_parameters=cfg.get('find_unused_parameters', False))


def _slurm_env_to_torch_env() -> None:
    """Translate SLURM's variables to the ``env://`` ones, as mmengine does.

    mmengine's ``_init_dist_slurm`` does this too, but also picks a GPU with
    ``proc_id % torch.cuda.device_count()``, which divides by zero on CPU;
    with GPUs ``init_dist('slurm')`` above is used instead.
    """
    nodes = os.environ['SLURM_NODELIST']
    addr = subprocess.getoutput(f'scontrol show hostname {nodes} | head -n1')
    os.environ.setdefault('MASTER_ADDR', addr)
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')


def broadcast_from_rank0(obj):
    """Rank 0's ``obj`` on every rank (``obj`` itself when not distributed)."""
    holder = [obj]
    broadcast_object_list(holder, src=0)
    return holder[0]


def on_rank0(fn: Callable, *catch: type[BaseException]):
    """``fn()`` computed on rank 0 alone, its result (or one of ``catch``) on every rank.

    The one way the experiment lets a single rank read or write shared
    files: an error in ``catch`` raised on rank 0 is re-raised on every
    rank instead of leaving the others waiting in the broadcast.
    """
    outcome = None
    if get_rank() == 0:
        try:
            outcome = fn()
        except catch as err:
            outcome = _Raised(err)
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


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error
