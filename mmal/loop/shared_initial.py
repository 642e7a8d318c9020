"""Cycle 0 trained once per seed and shared by every strategy's run.

Cycle 0 trains on the seeded initial draw whatever the strategy, so a
comparison of S strategies would train the same model S times. A shared
folder (``al_compare`` uses ``<work dir>/_shared/seed<k>``) holds that one
training and its evaluation; every run that is given the folder references
its checkpoint (never copies it) and its metrics. ``initial_cycle.json``
records what was trained, and a run whose config, seed, initial set or
initial strategy differs is refused instead of silently reusing another
experiment's model. An exclusive lock on the folder makes concurrent runs
wait for the one that trains, so it is trained once even when runs start
together.

An initial set chosen by a strategy (``active_learning.initial_strategy``)
is chosen once per folder as well (``initial_set.json``): the scores of
two runs can differ in their last bits (another thread count), which could
tip a k-means or a tie, and the runs must share one cycle 0.
"""
import contextlib
import fcntl
import json
from collections.abc import Callable
from pathlib import Path

from mmengine.config import Config
from mmengine.dist import get_rank

from ..utils import ConfigError
from ..utils.dist import on_rank0
from .resume import check_writable, config_digests
from .state import ExperimentState, atomic_write_text, digest_ids

RECORD_FILE = 'initial_cycle.json'
INITIAL_SET_FILE = 'initial_set.json'


class SharedInitialCycle:
    """The shared cycle-0 folder of one seed.

    Args:
        folder (str | Path): Where the cycle is trained (``cycle_00/``) and
            recorded (``initial_cycle.json``).
        key (dict): What makes two cycle-0 trainings the same: config
            digests, seed, initial-set digest (and the initial strategy
            unless it is ``'random'``). Compared on every use.
    """

    def __init__(self, folder: str | Path, key: dict) -> None:
        self.folder = Path(folder)
        self.key = key
        self.cycle_dir = self.folder / 'cycle_00'
        self.record_path = self.folder / RECORD_FILE

    @classmethod
    def of_experiment(cls, folder: str | Path, cfg: Config, seed: int,
                      initial_ids: list[str],
                      initial_strategy: str | dict = 'random') -> 'SharedInitialCycle':
        """The shared cycle 0 of the experiment ``cfg`` with ``seed`` and that initial set."""
        key = dict(config_digests=config_digests(cfg), seed=seed,
                   initial_ids=digest_ids(initial_ids))
        if initial_strategy != 'random':  # so the records of random draws stay valid
            key['initial_strategy'] = initial_strategy
        return cls(folder, key=key)

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

    def adopt(self, entry: dict, state: ExperimentState, *,
              train: Callable[[Path], dict], evaluate: Callable[[Path], dict],
              log: Callable[[str], None]) -> bool:
        """Make this folder's cycle 0 the experiment's, training it first if nobody has.

        ``entry`` is the experiment's cycle 0 in ``state``. ``train(cycle_dir)``
        and ``evaluate(cycle_dir)`` are the experiment's own phases run in this
        folder: each records its step in ``state`` and returns the fields it
        recorded (``checkpoint``, ``metrics``, ``timings``). A finished record
        is marked in ``state`` as it stands.

        Rank 0 alone holds the lock and reads and writes the record; every
        rank trains and evaluates together when the cycle is not done yet (a
        distributed Runner needs all of them). Call it on every rank.

        Returns:
            bool: Whether this run evaluated the cycle (``evaluate`` ran);
            False when it took a finished evaluation from the record.
        """
        # Checked before the lock, so a folder rank 0 cannot write stops every rank.
        on_rank0(lambda: check_writable(self.folder))
        with self.locked() if get_rank() == 0 else contextlib.nullcontext():
            record = on_rank0(self.read)
            entry['shared_from'] = str(self.folder)
            if 'checkpoint' not in record:
                log(f'cycle 0: training the shared initial model in {self.folder}')
                self._write_on_rank0(record)  # the key first: a killed training is not another's
                record.update(train(self.cycle_dir))
                self._write_on_rank0(record)
            if 'metrics' not in record:
                state.mark(0, 'trained', checkpoint=record['checkpoint'],
                           timings=record['timings'])
                record.update(evaluate(self.cycle_dir))
                self._write_on_rank0(record)
                return True
        state.mark(0, 'evaluated', checkpoint=record['checkpoint'], metrics=record['metrics'],
                   timings=record['timings'])
        return False

    def _write_on_rank0(self, record: dict) -> None:
        """:meth:`write` ``record`` on rank 0; its error on every rank. Call it on every rank."""
        on_rank0(lambda: self.write(**record))


def shared_initial_set(folder: str | Path, cfg: Config, seed: int, initial_strategy: dict,
                       choose: Callable[[], tuple[list[str], dict]],
                       log: Callable[[str], None]) -> tuple[list[str], dict]:
    """The initial set ``initial_strategy`` chose for this seed in ``folder``, chosen
    first (``choose()``: the ids and how they were chosen) if no run has.

    Rank 0 holds the lock and reads and writes ``initial_set.json``; every
    rank chooses together (the scoring needs all of them). Call it on every
    rank.

    Raises:
        ConfigError: The folder holds the initial set of another experiment.
    """
    folder = Path(folder)
    path = folder / INITIAL_SET_FILE
    key = dict(config_digests=config_digests(cfg), seed=seed,
               initial_strategy=initial_strategy)

    def read() -> dict | None:
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f'{path} is not valid JSON ({err}); start the comparison in '
                              'another --work-dir') from err
        if record.get('key') != key:
            diff = sorted(k for k in set(record.get('key', {})) | set(key)
                          if record.get('key', {}).get(k) != key.get(k))
            raise ConfigError(f'{path} holds the initial set of another experiment (differs '
                              f'in {diff}); use another --work-dir for this experiment')
        return record

    on_rank0(lambda: check_writable(folder))
    shared = SharedInitialCycle(folder, key)
    with shared.locked() if get_rank() == 0 else contextlib.nullcontext():
        record = on_rank0(read)
        if record is None:
            ids, how = choose()
            record = dict(key=key, ids=ids, how=how)
            on_rank0(lambda: atomic_write_text(path, json.dumps(record, indent=1) + '\n'))
        else:
            log(f'initial set: the one chosen before in {path}')
    return record['ids'], dict(record['how'], shared_from=str(folder))
