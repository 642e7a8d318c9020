"""Make mmengine 0.10 load its own checkpoints under torch >= 2.6.

torch 2.6 made ``torch.load(weights_only=True)`` the default, and mmengine
0.10.7's local loader does not pass ``weights_only``, so every checkpoint
that mmengine writes (its ``message_hub`` holds ``HistoryBuffer`` objects and
numpy arrays) fails to load: resuming, ``load_from`` and testing break
(open-mmlab/mmengine issue 1655; fix PR 1650 not merged). We re-register the
local-file scheme through mmengine's own ``CheckpointLoader.register_scheme``
with the pre-2.6 behaviour; the files are the ones the user's runs wrote.
"""
import os.path as osp

import torch
from mmengine.runner.checkpoint import CheckpointLoader


def load_from_local(filename: str, map_location=None) -> dict:
    """mmengine's ``load_from_local`` with ``weights_only=False``."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)


def patch_mmengine_checkpoint_loading() -> None:
    """Install :func:`load_from_local` for local paths (idempotent)."""
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
