"""The runs of a comparison: one experiment per (strategy, seed), resumable.

``DIR/<name>/seed<k>/`` is one ordinary ``al_train`` experiment (its own
``al_state.json``); ``DIR/_shared/seed<k>/`` holds the cycle 0 that every
strategy of seed k shares (``DIR/_shared/initial_<Type>_<digest>/seed<k>/``
when ``active_learning.initial_strategy`` chooses the initial set, so runs
with different initial strategies never share one). A run is its work dir,
so runs made elsewhere can be copied in (or named with ``--merge``) and
compared.
"""
import ast
import copy
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mmengine.config import Config

from ..loop.state import ExperimentState
from ..strategies import check_strategy_type
from ..utils import ConfigError

SHARED_DIR = '_shared'
#: Strategies that read labels and exist only as benchmark diagnostics; a
#: comparison is a benchmark, so it asks for them explicitly.
DIAGNOSTIC_STRATEGIES = ('OracleLossStrategy',)


@dataclass(frozen=True)
class RunSpec:
    """One experiment of the comparison."""

    name: str
    strategy: dict
    seed: int

    def work_dir(self, root: Path) -> Path:
        return Path(root) / self.name / f'seed{self.seed}'


def parse_strategy(text: str) -> tuple[str, dict]:
    """``[NAME=]Type[:key=value,...]`` -> (name, strategy config).

    Examples: ``RandomStrategy``; ``entropy_sum=EntropyStrategy:aggregation=sum``;
    ``LearningLossDiversityStrategy:pool_factor=5``. Values are Python
    literals where they parse as one, else strings. The name (default: the
    type) names the runs' folder and the curve.
    """
    head, _, options = text.partition(':')
    name, _, type_name = head.rpartition('=')
    if not type_name.isidentifier():
        raise ConfigError(f'--strategies {text!r}: expected [NAME=]Type[:key=value,...], e.g. '
                          "'entropy_sum=EntropyStrategy:aggregation=sum'")
    strategy = dict(type=type_name)
    for item in filter(None, options.split(',')):
        key, sep, value = item.partition('=')
        if not sep or not key.isidentifier():
            raise ConfigError(f'--strategies {text!r}: option {item!r} is not key=value')
        try:
            strategy[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            strategy[key] = value
    if type_name in DIAGNOSTIC_STRATEGIES:
        strategy.setdefault('diagnostic', True)
    name = name or type_name
    if not name.replace('-', '_').isidentifier():
        raise ConfigError(f'--strategies {text!r}: the name {name!r} must be a plain word '
                          '(it names a folder)')
    return name, strategy


def plan_runs(strategies: list[str], seeds: list[int]) -> list[RunSpec]:
    """Every (strategy, seed) run, seed-major so each seed's cycle 0 is trained first."""
    parsed = [parse_strategy(text) for text in strategies]
    names = [name for name, _ in parsed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f'--strategies names {duplicates} more than once; name variants, '
                          "e.g. 'entropy_sum=EntropyStrategy:aggregation=sum'")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f'--seeds {seeds} repeats a seed')
    for text, (_, strategy) in zip(strategies, parsed):
        check_strategy_type(strategy['type'], key=f'--strategies {text!r}: type')
    return [RunSpec(name, strategy, seed) for seed in seeds for name, strategy in parsed]


def run_config(cfg: Config, spec: RunSpec) -> Config:
    """The experiment config of one run: the strategy and seed set."""
    cfg = copy.deepcopy(cfg)
    section = dict(cfg.get('active_learning') or {})
    section.update(strategy=copy.deepcopy(spec.strategy), seed=spec.seed)
    cfg.active_learning = section
    return cfg


def shared_initial_dir(root: Path, cfg: Config, seed: int) -> Path:
    """The folder of the cycle 0 that the runs of ``seed`` with ``cfg``'s initial strategy
    share."""
    initial = (cfg.get('active_learning') or {}).get('initial_strategy', 'random')
    folder = Path(root) / SHARED_DIR
    if isinstance(initial, dict) and initial.get('type'):
        digest = hashlib.sha256(json.dumps(dict(initial), sort_keys=True, default=str)
                                .encode()).hexdigest()[:8]
        folder = folder / f'initial_{initial["type"]}_{digest}'
    return folder / f'seed{seed}'


def is_finished(work_dir: Path) -> bool:
    """Whether the run in ``work_dir`` finished (a damaged state is refused, naming the fix)."""
    state = ExperimentState.load(work_dir)
    return state is not None and state.data.get('status') == 'finished'


def run_one(cfg: Config, spec: RunSpec, root: Path, launcher: str = 'none') -> str:
    """Run, resume or reuse one experiment; returns ``'reused'`` or ``'ran'``.

    A finished run is still opened (cheap), so a run made with other
    settings is refused rather than reused.
    """
    from ..loop import ActiveLearningExperiment
    work_dir = spec.work_dir(root)
    finished = is_finished(work_dir)
    experiment = ActiveLearningExperiment(
        run_config(cfg, spec), str(work_dir), resume=True, launcher=launcher,
        shared_initial_dir=str(shared_initial_dir(root, cfg, spec.seed)))
    experiment.run()
    return 'reused' if finished else 'ran'


def run_in_parallel(specs: list[RunSpec], jobs: int, argv: list[str], root: Path,
                    log=print) -> list[str]:
    """Run each spec in its own process, ``jobs`` at a time; returns the failed runs.

    Each child is this same command restricted to one run (``--run-index``),
    so a child runs exactly the in-process code path. Children share the
    CPU threads evenly unless ``OMP_NUM_THREADS`` is set.
    """
    env = dict(os.environ)
    env.setdefault('OMP_NUM_THREADS', str(max(1, (os.cpu_count() or 1) // jobs)))
    pending = list(enumerate(specs))
    running: list[tuple[RunSpec, subprocess.Popen]] = []
    failed: list[str] = []
    while pending or running:
        while pending and len(running) < jobs:
            index, spec = pending.pop(0)
            work_dir = spec.work_dir(root)
            work_dir.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, *argv, '--run-index', str(index), '--jobs', '1',
                   '--no-report']
            with open(work_dir / 'al_compare_run.log', 'a') as out:
                running.append((spec, subprocess.Popen(cmd, stdout=out,
                                                       stderr=subprocess.STDOUT, env=env)))
            log(f'started {spec.name} seed {spec.seed} (log: {work_dir}/al_compare_run.log)')
        done = [item for item in running if item[1].poll() is not None]
        if not done:
            time.sleep(1.0)
            continue
        spec, proc = done[0]
        running.remove(done[0])
        if proc.returncode:
            failed.append(f'{spec.name} seed {spec.seed} (exit {proc.returncode}, see '
                          f'{spec.work_dir(root)}/al_compare_run.log)')
        log(f'{"FAILED" if proc.returncode else "done"}: {spec.name} seed {spec.seed}')
    return failed
