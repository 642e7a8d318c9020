"""Snapshot committees: the last checkpoints of a cycle's training as committee members.

A snapshot ensemble (Huang et al., *Snapshot Ensembles: Train 1, get M for
free*, ICLR 2017) takes its members from one training run: the weights
saved at its last M checkpoints. For active learning they are a committee
that costs no extra training (query by committee, Seung et al., 1992;
Beluch et al., *The power of ensembles for active learning in image
classification*, CVPR 2018 compare such committees with Monte-Carlo
dropout ones).

The scoring loop (:class:`~mmal.scoring.ScoreLoop`) reads a batch once and
runs every pass on it, so a snapshot pass swaps the members' weights in
per batch. Each snapshot is read from disk once, at the start of scoring,
and kept as a state dict on the model's device (M copies of the weights:
the models here are small); a swap is then an in-place device copy,
cheap beside the member's forward pass. The other way, running each
member over the whole loader, would load each snapshot once but read and
transform the data M times and break the one-read-per-batch contract the
other passes rely on.
"""
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from mmengine.runner.checkpoint import load_checkpoint

#: mmengine's ``CheckpointHook`` names: ``epoch_N.pth`` (by epoch) or ``iter_N.pth``.
CHECKPOINT_NAME = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


def find_snapshots(folder, count: int, upto=None) -> list[Path]:
    """The last ``count`` training checkpoints in ``folder``, oldest first.

    Args:
        folder (str | Path): Where the training saved its checkpoints (a
            cycle's work dir).
        count (int): How many.
        upto (str | Path, optional): The checkpoint the scored model was
            loaded from: only checkpoints of its kind (epoch or iteration)
            and no later than it are snapshots. Without it, epoch
            checkpoints if there are any, else iteration ones.

    Raises:
        ValueError: Fewer than ``count`` checkpoints, naming the
            ``default_hooks.checkpoint`` settings that keep them.
    """
    folder = Path(folder)
    numbered: dict[str, list[tuple[int, Path]]] = {'epoch': [], 'iter': []}
    for path in folder.glob('*.pth'):
        match = CHECKPOINT_NAME.match(path.name)
        if match:
            numbered[match.group(1)].append((int(match.group(2)), path))
    kind, limit = ('epoch' if numbered['epoch'] or not numbered['iter'] else 'iter'), None
    if upto is not None:
        match = CHECKPOINT_NAME.match(Path(upto).name)
        if match:
            kind, limit = match.group(1), int(match.group(2))
    found = sorted((n, p) for n, p in numbered[kind] if limit is None or n <= limit)
    if len(found) < count:
        names = ', '.join(p.name for _, p in found) or 'none'
        raise ValueError(
            f'a snapshot committee of {count} members needs the last {count} training '
            f'checkpoints, but {folder} holds {len(found)} ({names}); keep them with '
            f'default_hooks.checkpoint = dict(type=\'CheckpointHook\', interval=1, '
            f'max_keep_ckpts={count}) (max_keep_ckpts >= {count}; interval is the spacing '
            f'between snapshots) and train for at least {count} intervals')
    return [p for _, p in found[-count:]]


class SnapshotWeights:
    """The snapshots' weights, cached, swapped into ``model`` member by member.

    Args:
        model (nn.Module): The scored model (unwrapped); its current
            weights are kept and put back by :meth:`restore`.
        paths (Sequence[str | Path]): Checkpoints, oldest first. Each is
            loaded strictly (a snapshot must be the whole model) through
            mmengine's loader, as the Runner loads ``load_from``; its
            ``state_dict`` entry is used (an ``EMAHook``'s averaged weights
            are not).
    """

    def __init__(self, model: torch.nn.Module, paths: Sequence) -> None:
        self.model = model
        self.paths = [Path(p) for p in paths]
        self.original = _copy_state(model)
        self.states = []
        try:
            for path in self.paths:
                try:
                    load_checkpoint(model, str(path), map_location='cpu', strict=True)
                except RuntimeError as err:
                    raise RuntimeError(f'snapshot {path} is not a checkpoint of the scored '
                                       f'model: {err}') from err
                self.states.append(_copy_state(model))
        finally:
            self.restore()

    def __len__(self) -> int:
        return len(self.states)

    def load(self, member: int, count: int) -> None:
        """Put in the weights of member ``member`` of the committee of the last ``count``."""
        if not 0 < count <= len(self.states) or not 0 <= member < count:
            raise ValueError(f'snapshot member {member} of {count}: only {len(self.states)} '
                             'snapshots were loaded')
        self.model.load_state_dict(self.states[len(self.states) - count + member])

    def restore(self) -> None:
        """Put the model's own weights back."""
        self.model.load_state_dict(self.original)


def _copy_state(model: torch.nn.Module) -> dict:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}
