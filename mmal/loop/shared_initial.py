"""Cycle 0 trained once per seed and shared by every strategy's run.

Cycle 0 trains on the seeded initial draw whatever the strategy, so a
comparison of S strategies would train the same model S times. A shared
folder (``al_compare`` uses ``<work dir>/_shared/seed<k>``) holds that one
training and its evaluation; every run that is given the folder references
its checkpoint (never copies it) and its metrics. ``initial_cycle.json``
records what was trained, and a run whose config, seed or initial set
differs is refused instead of silently reusing another experiment's model.
An exclusive lock on the folder makes concurrent runs wait for the one that
trains, so it is trained once even when runs start together.
"""
import contextlib
import fcntl
import json
from pathlib import Path

from ..utils import ConfigError
from .state import atomic_write_text

RECORD_FILE = 'initial_cycle.json'


class SharedInitialCycle:
    """The shared cycle-0 folder of one seed.

    Args:
        folder (str | Path): Where the cycle is trained (``cycle_00/``) and
            recorded (``initial_cycle.json``).
        key (dict): What makes two cycle-0 trainings the same: config
            digests, seed, initial-set digest. Compared on every use.
    """

    def __init__(self, folder: str | Path, key: dict) -> None:
        self.folder = Path(folder)
        self.key = key
        self.cycle_dir = self.folder / 'cycle_00'
        self.record_path = self.folder / RECORD_FILE

    @contextlib.contextmanager
    def locked(self):
        """Hold the folder exclusively (other runs wait) while checking or training."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / '.lock', 'w') as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield self
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> dict:
        """The record so far (``{}`` if none); refuses a record of another experiment."""
        if not self.record_path.exists():
            return {}
        try:
            record = json.loads(self.record_path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f'{self.record_path} is not valid JSON ({err}). Runs of this '
                              'comparison may reference its checkpoint: start the comparison '
                              'in another --work-dir') from err
        if record.get('key') != self.key:
            theirs = record.get('key', {})
            diff = sorted(k for k in set(theirs) | set(self.key)
                          if theirs.get(k) != self.key.get(k))
            raise ConfigError(
                f'{self.record_path} holds a cycle 0 of another experiment (differs in '
                f'{diff}); runs share cycle 0 only when config, seed and initial set are '
                'the same. Use another --work-dir for this experiment')
        return record

    def write(self, **fields) -> dict:
        """Add ``fields`` to the record (the key always), atomically."""
        record = {**self.read(), 'key': self.key, **fields}
        atomic_write_text(self.record_path, json.dumps(record, indent=1) + '\n')
        return record
