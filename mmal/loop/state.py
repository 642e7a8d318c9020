"""``al_state.json``: the single source of truth of an experiment.

Written atomically (temporary file, fsync, rename) after every step that
changes it, so a run killed at any moment resumes from a consistent state.

Each cycle's labeled set is the previous one plus what that cycle added:
on disk a cycle after the first stores only ``labeled_added`` (format 2),
so the file holds each sample id at most twice (labeled, selected) however
many cycles run, and the write per phase stays bounded by the pool size.
In memory every cycle has its whole ``labeled`` list; format 1 files (the
whole list per cycle) are still read.
"""
import hashlib
import json
import os
from pathlib import Path

from ..utils import ConfigError
from ..utils.atomic import atomic_write_text

#: The phases of one cycle, in order. A cycle's ``status`` is the last
#: phase it completed.
PHASES = ('started', 'trained', 'evaluated', 'selected')

STATE_FILE = 'al_state.json'
#: The state as it was before the last write: the copy to recover from if
#: the state file is damaged by hand or by a failing disk.
PREVIOUS_STATE_FILE = 'al_state.prev.json'
FORMAT_VERSION = 2
#: Formats this code reads: 1 stored every cycle's whole labeled list.
READABLE_FORMATS = (1, 2)


class ExperimentState:
    """The experiment's record: settings, pool, and one entry per cycle.

    Args:
        work_dir (str | PathLike): Where ``al_state.json`` lives.
        data (dict): The state as stored.
    """

    def __init__(self, work_dir: str | os.PathLike, data: dict) -> None:
        self.path = Path(work_dir) / STATE_FILE
        self.data = data

    @classmethod
    def create(cls, work_dir: str | os.PathLike, *, settings: dict, config_digests: dict,
               versions: dict, pool_ids: list[str]) -> 'ExperimentState':
        return cls(work_dir, dict(
            format=FORMAT_VERSION, status='running', settings=settings,
            seed=settings['seed'], config_digests=config_digests, versions=versions,
            pool=dict(size=len(pool_ids), ids_digest=digest_ids(pool_ids)), cycles=[]))

    @classmethod
    def load(cls, work_dir: str | os.PathLike) -> 'ExperimentState | None':
        path = Path(work_dir) / STATE_FILE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            previous = path.with_name(PREVIOUS_STATE_FILE)
            fix = (f'the state before the last step is kept in {previous}: restore it with '
                   f'`cp {previous} {path}` and resume (that step is redone)'
                   if _readable_json(previous) else 'move it away to start over')
            raise ConfigError(f'{path} is damaged, not valid JSON ({err}); the loop never '
                              f'writes it half, so it was changed outside the loop: {fix}'
                              ) from err
        if data.get('format') not in READABLE_FORMATS:
            raise ConfigError(f'{path} has format {data.get("format")!r}; this MMAL reads '
                              f'formats {READABLE_FORMATS}: resume it with the MMAL that '
                              'wrote it, or start in another --work-dir')
        data['format'] = FORMAT_VERSION
        _expand_labeled(data['cycles'], path)
        return cls(work_dir, data)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Copy, never move: a kill between the two writes leaves both files whole.
        if _readable_json(self.path):
            atomic_write_text(self.path.with_name(PREVIOUS_STATE_FILE), self.path.read_text())
        atomic_write_text(self.path, _to_json(self.data))

    # --------------------------------------------------------------- cycles
    @property
    def cycles(self) -> list[dict]:
        return self.data['cycles']

    def cycle(self, index: int) -> dict | None:
        return self.cycles[index] if 0 <= index < len(self.cycles) else None

    def start_cycle(self, index: int, labeled: list[str], **fields) -> dict:
        """Record cycle ``index`` with its labeled set (``fields``: more to record, e.g.
        how an initial set was chosen)."""
        if index != len(self.cycles):
            raise RuntimeError(f'cycle {index} cannot start after {len(self.cycles)} cycles')
        entry = dict(cycle=index, status='started', num_labeled=len(labeled),
                     labeled=labeled, metrics={}, selected=[], timings={}, **fields)
        self.cycles.append(entry)
        self.save()
        return entry

    def mark(self, index: int, phase: str, **fields) -> None:
        if phase not in PHASES:
            raise ValueError(f'unknown phase {phase!r}')
        entry = self.cycles[index]
        entry.update(fields)
        entry['status'] = phase
        self.save()

    def fail(self, index: int, failure: dict) -> None:
        """Record that cycle ``index`` failed (e.g. its training diverged): the
        experiment's status is ``'failed'`` and the cycle keeps its last
        completed phase, so no metric is ever recorded for it."""
        self.cycles[index]['failure'] = failure
        self.data['status'] = 'failed'
        self.save()

    def retry(self, index: int) -> dict:
        """Start cycle ``index`` again after a failure; the failure moves to the
        cycle's ``failures`` history. Returns the failure."""
        entry = self.cycles[index]
        failure = entry.pop('failure')
        entry.setdefault('failures', []).append(failure)
        self.data['status'] = 'running'
        self.save()
        return failure

    def finish(self) -> None:
        self.data['status'] = 'finished'
        self.save()


def _to_json(data: dict) -> str:
    """The state as stored: indented, except one line per cycle.

    json's indenting encoder is pure Python, several times slower than the
    compact C one; the cycles hold nearly all the bytes (ids, scores), so
    they are written compact, a cycle per line, and the rest stays easy to
    read. Any JSON reader (``jq .``) shows it indented.
    """
    head = json.dumps({k: v for k, v in data.items() if k != 'cycles'}, indent=1)
    lines = ['  ' + json.dumps(c) for c in _compact_labeled(data['cycles'])]
    cycles = '[\n' + ',\n'.join(lines) + '\n ]' if lines else '[]'
    return f'{head[:-2]},\n "cycles": {cycles}\n}}\n'  # head[:-2] drops its closing "\n}"


def _compact_labeled(cycles: list[dict]) -> list[dict]:
    """The cycles as stored: after the first, ``labeled_added`` instead of ``labeled``."""
    stored, previous = [], None
    for entry in cycles:
        labeled = entry['labeled']
        if previous is not None and labeled[:len(previous)] == previous:
            entry = _replace_key(entry, 'labeled', 'labeled_added', labeled[len(previous):])
        stored.append(entry)
        previous = labeled
    return stored


def _expand_labeled(cycles: list[dict], path: Path) -> None:
    """Give every stored cycle its whole ``labeled`` list again, in place."""
    previous = None
    for index, entry in enumerate(cycles):
        if 'labeled_added' in entry:
            if previous is None:
                raise ConfigError(f'{path}: cycle {entry.get("cycle")} stores only the samples '
                                  'it added, but no earlier cycle lists its labeled set; the '
                                  f'file was edited by hand: restore {PREVIOUS_STATE_FILE}')
            entry = cycles[index] = _replace_key(entry, 'labeled_added', 'labeled',
                                                 previous + entry['labeled_added'])
        previous = entry['labeled']


def _replace_key(entry: dict, old: str, new: str, value) -> dict:
    """``entry`` with ``old: ...`` replaced by ``new: value`` at the same place (keeps the
    file's key order readable)."""
    return {(new if k == old else k): (value if k == old else v) for k, v in entry.items()}


def _readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False


def digest_ids(ids: list[str]) -> str:
    return hashlib.sha256('\n'.join(ids).encode()).hexdigest()[:16]


def phase_done(entry: dict | None, phase: str) -> bool:
    """Whether ``entry`` (a cycle record) has completed ``phase``."""
    return entry is not None and PHASES.index(entry['status']) >= PHASES.index(phase)
