"""``tools/al_train.py`` in this process, SIGKILLed at a chosen point (tests of faults).

    MMAL_KILL_AT=KIND:N python tests/fault_child.py CONFIG [al_train args]
    MMAL_COUNT_EVENTS=FILE python tests/fault_child.py ...   # count the events instead

KIND is where the process dies at its N-th occurrence: ``train_iter``,
``eval_iter``, ``score_iter`` (before the iteration runs), ``select``
(after the strategy picked, before the state records it), ``state_write``
/ ``prev_write`` (the new ``al_state.json`` / ``al_state.prev.json`` is
written to its temporary file but not renamed yet), ``checkpoint`` (half
of a checkpoint file written). Under torchrun, ``MMAL_KILL_RANK=R`` kills
rank R alone.
"""
import atexit
import json
import os
import runpy
import signal
import sys
from pathlib import Path

KINDS = ('train_iter', 'eval_iter', 'score_iter', 'select', 'state_write', 'prev_write',
         'checkpoint')
counts = dict.fromkeys(KINDS, 0)
kill_kind, _, kill_n = os.environ.get('MMAL_KILL_AT', '::').partition(':')
if os.environ.get('MMAL_KILL_RANK', os.environ.get('RANK', '0')) != os.environ.get('RANK', '0'):
    kill_kind = ''  # another rank is the one to die


def hit(kind: str) -> bool:
    """Count an event; True when the process must die now."""
    counts[kind] += 1
    return kind == kill_kind and counts[kind] == int(kill_n)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def before(owner, name: str, kind: str) -> None:
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        if hit(kind):
            die()
        return original(*args, **kwargs)
    setattr(owner, name, wrapped)


def install() -> None:
    from mmengine.fileio.backends import local_backend
    from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop, TestLoop

    from mmal.loop.selection import CycleSelection
    from mmal.scoring.score_loop import ScoreLoop
    from mmal.utils import atomic

    before(EpochBasedTrainLoop, 'run_iter', 'train_iter')
    before(IterBasedTrainLoop, 'run_iter', 'train_iter')  # semi-supervised phases
    before(TestLoop, 'run_iter', 'eval_iter')  # ScoreLoop has its own run_iter
    before(ScoreLoop, 'run_iter', 'score_iter')

    select = CycleSelection.select

    def select_then_maybe_die(self, *args, **kwargs):
        result = select(self, *args, **kwargs)
        if hit('select'):
            die()
        return result
    CycleSelection.select = select_then_maybe_die

    replace = os.replace

    def replace_or_die(src, dst):
        kind = {'al_state.json': 'state_write', 'al_state.prev.json': 'prev_write'}.get(
            Path(dst).name)
        if kind and hit(kind):
            die()
        return replace(src, dst)
    atomic.os = _Os(replace_or_die)

    put = local_backend.LocalBackend.put

    def put_or_die(self, obj, filepath):
        if str(filepath).endswith('.pth') and hit('checkpoint'):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            die()
        return put(self, obj, filepath)
    local_backend.LocalBackend.put = put_or_die


class _Os:
    """``os`` for mmal.utils.atomic, with ``replace`` counted."""

    def __init__(self, replace) -> None:
        self.replace = replace

    def __getattr__(self, name):
        return getattr(os, name)


if __name__ == '__main__':
    install()
    if os.environ.get('MMAL_COUNT_EVENTS'):
        atexit.register(lambda: Path(os.environ['MMAL_COUNT_EVENTS']).write_text(
            json.dumps(counts)))
    tool = Path(__file__).resolve().parents[1] / 'tools' / 'al_train.py'
    sys.argv = [str(tool), *sys.argv[1:]]
    runpy.run_path(str(tool), run_name='__main__')
