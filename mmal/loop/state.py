"""``al_state.json``: the single source of truth of an experiment.

Written atomically (temporary file, fsync, rename) after every step that
changes it, so a run killed at any moment resumes from a consistent state.
"""
import hashlib
import json
import os
import tempfile
from pathlib import Path

#: The phases of one cycle, in order. A cycle's ``status`` is the last
#: phase it completed.
PHASES = ('started', 'trained', 'evaluated', 'selected')

STATE_FILE = 'al_state.json'
FORMAT_VERSION = 1


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` by ``text`` so that readers see the old or new file, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        except json.JSONDecodeError as err:
            raise ValueError(f'{path} is not valid JSON ({err}); it was not written by a '
                             'finished step. Move it away to start over') from err
        if data.get('format') != FORMAT_VERSION:
            raise ValueError(f'{path} has format {data.get("format")!r}; this MMAL reads '
                             f'format {FORMAT_VERSION}')
        return cls(work_dir, data)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=False) + '\n')

    # --------------------------------------------------------------- cycles
    @property
    def cycles(self) -> list[dict]:
        return self.data['cycles']

    def cycle(self, index: int) -> dict | None:
        return self.cycles[index] if index < len(self.cycles) else None

    def start_cycle(self, index: int, labeled: list[str]) -> dict:
        if index != len(self.cycles):
            raise RuntimeError(f'cycle {index} cannot start after {len(self.cycles)} cycles')
        entry = dict(cycle=index, status='started', num_labeled=len(labeled),
                     labeled=labeled, metrics={}, selected=[], timings={})
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

    def finish(self) -> None:
        self.data['status'] = 'finished'
        self.save()


def digest_ids(ids: list[str]) -> str:
    return hashlib.sha256('\n'.join(ids).encode()).hexdigest()[:16]


def phase_done(entry: dict | None, phase: str) -> bool:
    """Whether ``entry`` (a cycle record) has completed ``phase``."""
    return entry is not None and PHASES.index(entry['status']) >= PHASES.index(phase)
