"""Opening an experiment's record: create it, or resume it only if nothing changed."""
import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from mmengine.config import Config

from ..datasets import Pool
from ..utils import ConfigError
from ..utils.env import package_versions
from .settings import ActiveLearningSettings
from .state import STATE_FILE, ExperimentState, digest_ids, phase_done

#: Config keys that do not change what an experiment computes. ``model_wrapper_cfg``
#: is how the model is wrapped for DDP; a CPU process group sets it (``setup_distributed``),
#: and a run on 1 process must match the same run on N (resume, shared cycle 0).
NEUTRAL_KEYS = ('work_dir', 'launcher', 'resume', 'load_from', 'active_learning',
                'experiment_name', 'env_cfg', 'log_level', 'visualizer', 'default_hooks',
                'model_wrapper_cfg')


def open_state(work_dir: Path, cfg: Config, settings: ActiveLearningSettings, pool: Pool,
               resume: bool, log: Callable[[str], None]) -> ExperimentState:
    """The experiment's state in ``work_dir``: a new one, or the recorded one on resume.

    Raises:
        ConfigError: A record exists without ``resume``, or the recorded
            experiment differs from this one (each difference named).
    """
    digests = config_digests(cfg)
    existing = ExperimentState.load(work_dir)
    if existing is not None and not resume:
        raise ConfigError(f'{existing.path} exists: pass --resume to continue that '
                          'experiment, or choose another --work-dir')
    if existing is None:
        if resume:
            log(f'--resume: no experiment in {work_dir}, starting a new one')
        state = ExperimentState.create(
            work_dir, settings=settings.to_dict(), config_digests=digests,
            versions=package_versions(), pool_ids=pool.ids)
        state.save()
        return state
    problems = settings.differences(existing.data['settings'])
    recorded = {k: v for k, v in existing.data['config_digests'].items()
                if k not in NEUTRAL_KEYS}  # recorded before a key was counted neutral
    problems += [f'config key `{key}` changed since the experiment started'
                 for key in sorted(set(recorded) | set(digests))
                 if recorded.get(key) != digests.get(key)]
    recorded_pool = existing.data['pool']
    if recorded_pool['size'] != len(pool):
        problems.append(f'the pool has {len(pool)} samples, the state {recorded_pool["size"]}')
    elif recorded_pool['ids_digest'] != digest_ids(pool.ids):
        problems.append('the pool holds other samples than when the experiment started')
    if problems:
        raise ConfigError(f'cannot resume {existing.path}: the experiment differs:\n  - '
                          + '\n  - '.join(problems)
                          + '\nRestore those settings or start in another --work-dir')
    log(f'resuming {existing.path}: {len(existing.cycles)} cycle(s) recorded')
    return existing


def interrupted_cycle(work_dir: Path, checkpoint: str) -> int:
    """The cycle whose training ``--resume CHECKPOINT`` resumes from ``checkpoint``.

    That is the recorded cycle whose training started and neither ended
    nor failed: the one a killed run left. Nothing else may take a
    checkpoint, since mmengine resumes whatever it is given (the epoch,
    the optimizer, the weights) and a later cycle, or another cycle's
    checkpoint, would train on the wrong start without a word.

    Raises:
        ConfigError: Naming the checkpoint, what the record holds, and what
            to do instead.
    """
    state = ExperimentState.load(work_dir)
    if state is None:
        raise ConfigError(f'--resume {checkpoint}: {work_dir} holds no experiment to resume '
                          f'({STATE_FILE} not found); give the --work-dir of the interrupted '
                          'experiment')
    last = state.cycles[-1] if state.cycles else None
    if last is None or phase_done(last, 'trained'):
        raise ConfigError(f'--resume {checkpoint}: no training of {work_dir} was interrupted '
                          '(every recorded cycle finished training); --resume alone goes on '
                          'with the next step')
    cycle = len(state.cycles) - 1
    if 'failure' in last:
        raise ConfigError(f'--resume {checkpoint}: cycle {cycle} failed '
                          f'({last["failure"].get("kind")}), and resumed from one of its '
                          'checkpoints it would repeat the same training; --resume alone '
                          'trains it again from its start')
    owner = _cycle_of(Path(checkpoint), work_dir)
    if owner is not None and owner != cycle:
        raise ConfigError(f'--resume {checkpoint}: that is cycle {owner}\'s checkpoint, and the '
                          f'interrupted training is cycle {cycle}\'s (its checkpoints: '
                          f'{work_dir / f"cycle_{cycle:02d}"}/*.pth)')
    return cycle


def _cycle_of(checkpoint: Path, work_dir: Path) -> int | None:
    """The cycle whose folder in ``work_dir`` holds ``checkpoint``, None if none does."""
    try:
        folder = checkpoint.resolve().relative_to(work_dir.resolve()).parts[0]
    except (ValueError, IndexError):
        return None
    prefix, _, number = folder.partition('_')
    return int(number) if prefix == 'cycle' and number.isdigit() else None


def config_digests(cfg: Config) -> dict[str, str]:
    """A short digest per top-level config key that affects the results."""
    out = {}
    for key in sorted(cfg.keys()):
        if key in NEUTRAL_KEYS:
            continue
        text = json.dumps(cfg._to_lazy_dict()[key] if hasattr(cfg, '_to_lazy_dict') else
                          cfg[key], sort_keys=True, default=str)
        out[key] = hashlib.sha256(text.encode()).hexdigest()[:12]
    return out


def check_writable(work_dir: Path) -> None:
    """Refuse a work dir that cannot be written before any work, naming it."""
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=work_dir, prefix='.write_check.'):
            pass
    except OSError as err:
        raise ConfigError(f'the work dir {work_dir} cannot be written ({err.strerror}); '
                          'choose another --work-dir or fix its permissions') from err
