"""A pool-based active-learning experiment on mmengine's Runner.

One cycle: train on the labeled set with a fresh Runner, evaluate with the
config's test evaluator, score a random candidate subset of the unlabeled
pool with the strategy, and add the K it selects (top K, or a diverse K for
core-set-like strategies) to the labeled set (the oracle is
the dataset's own annotations). Every completed step is recorded in
``al_state.json`` before the next starts, so ``resume`` never redoes a
finished step and never draws a selection twice.
"""
import contextlib
import copy
import gc
import time
from pathlib import Path

import numpy as np
from mmengine.config import Config
from mmengine.dist import get_rank, get_world_size, master_only
from mmengine.logging import MMLogger, print_log
from mmengine.registry import MODELS, DefaultScope, init_default_scope
from mmengine.runner import Runner, find_latest_checkpoint

from ..datasets import Pool, build_pool, subset_config
from ..hooks import EpochSeedHook
from ..registry import STRATEGIES
from ..utils import ConfigError, check_data_paths
from ..utils.dist import broadcast_from_rank0, differences_from_rank0, on_rank0
from . import reporting
from .human import HumanOracle, prediction_pass
from .resume import check_writable, config_digests, open_state, versions
from .runner import CycleRunner
from .selection import CycleSelection, elapsed, write_scores
from .settings import ActiveLearningSettings
from .shared_initial import SharedInitialCycle
from .state import ExperimentState, digest_ids, phase_done

_TASKS = {'mmdet': 'detection', 'mmpose': 'pose'}


class ActiveLearningExperiment:
    """Runs every cycle of the experiment described by ``cfg``.

    Args:
        cfg (Config): A training config with an ``active_learning`` section.
        work_dir (str): Experiment folder: state, metrics, curve, cycle dirs.
        resume (bool): Continue the experiment in ``work_dir``.
        launcher (str): ``'none'``, ``'pytorch'`` or ``'slurm'``; the process
            group must already be initialised for the latter two.
        shared_initial_dir (str, optional): A folder where cycle 0 is trained
            once and shared with other runs of the same config and seed (see
            :mod:`mmal.loop.shared_initial`); None trains it in this run.
    """

    def __init__(self, cfg: Config, work_dir: str, resume: bool = False,
                 launcher: str = 'none', shared_initial_dir: str | None = None) -> None:
        self.cfg = cfg
        self.work_dir = Path(work_dir)
        self.resume = resume
        self.launcher = launcher
        self.shared_initial_dir = shared_initial_dir
        self.settings = ActiveLearningSettings.from_config(cfg.get('active_learning'))
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        self.task = task_of(cfg)
        # Strategies live in mmal's own registry: build them in its scope, not the
        # task's (which would warn that 'mmdet'/'mmpose' is not in its tree).
        with DefaultScope.overwrite_default_scope('mmal'):
            self.strategy = STRATEGIES.build(copy.deepcopy(self.settings.strategy),
                                             default_args=dict(task=self.task))
        self.strategy.check_config(cfg)
        _check_model_outputs(cfg, self.strategy)
        self.strategy_name = self.settings.strategy['type']
        for key in ('train_dataloader', 'test_dataloader', 'test_evaluator', 'test_cfg'):
            # `test_cfg = dict()` is mmengine's (and mmpose's) spelling of the default loop.
            if cfg.get(key) is None or (key != 'test_cfg' and not cfg.get(key)):
                raise ConfigError(f'the config has no `{key}`; an experiment trains on '
                                  'train_dataloader and evaluates with the test loop')
        check_data_paths(cfg, ('train_dataloader', 'test_dataloader'))
        self.pool: Pool = build_pool(cfg.train_dataloader.dataset)
        self.human = None
        if self.settings.oracle == 'human':
            HumanOracle.check_config(self.strategy)
            self.human = HumanOracle(cfg, self.pool, self.task, self.settings.annotation)
        if self.human is None:
            self.settings.check_plan(len(self.pool))
        self.position = {sample_id: i for i, sample_id in enumerate(self.pool.ids)}
        _check_same_experiment_on_every_rank(cfg, self.settings, self.pool)
        check_writable(self.work_dir)
        self.logger = MMLogger.get_instance(
            f'mmal_{self.work_dir.name}_{time.time_ns()}', logger_name='mmal',
            log_file=str(self.work_dir / 'al_train.log'), log_level='INFO')
        # Rank 0 alone reads or creates the record and the others take its copy:
        # a rank that looked later would find rank 0's new file and refuse it.
        self.state: ExperimentState = on_rank0(
            lambda: open_state(self.work_dir, cfg, self.settings, self.pool, resume, self._log),
            ConfigError)
        self.state.save = master_only(self.state.save)  # rank 0 alone writes the record
        if self.human is not None:
            # Labels on disk grow with every ingest: the plan counts from cycle 0's.
            start = self.state.cycle(0)
            self.settings.check_plan(len(self.pool), labeled_on_disk=(
                start['num_labeled'] if start else sum(self.pool.has_labels)))

    # ------------------------------------------------------------------ run
    def run(self) -> ExperimentState:
        """Run (or finish) every cycle and write the outputs.

        With people as the oracle, the run returns early when a batch waits
        for its labels (``self.waiting`` is then the waiting message).
        """
        s = self.settings
        initial = s.initial_size if self.human is None else (
            f'{sum(self.pool.has_labels)} labeled on disk')
        self.waiting = None
        self._log(f'{self.task} experiment, strategy {self.strategy_name}: pool '
                  f'{len(self.pool)}, initial {initial}, K={s.budget_per_cycle}, '
                  f'{s.num_cycles} cycles, candidates {s.candidate_pool}, '
                  f'model_init={s.model_init}, work dir {self.work_dir}')
        for c in range(s.num_cycles):
            entry = self.state.cycle(c) or self.state.start_cycle(c, self._labeled_ids(c))
            self._check_disjoint(entry)
            if c == 0 and self.shared_initial_dir and not phase_done(entry, 'evaluated'):
                self._adopt_shared_initial(entry)
            if not phase_done(entry, 'trained'):
                self._train(c, entry)
            if not phase_done(entry, 'evaluated'):
                self._evaluate(c, entry)
            if c < s.num_cycles - 1 and not phase_done(entry, 'selected'):
                self._select(c, entry)
            if self.human is not None and c < s.num_cycles - 1 and HumanOracle.waiting(entry):
                self.waiting = self.human.waiting_message(
                    c, entry, self.work_dir, self.cfg.filename or 'CONFIG')
                self._log(self.waiting)
                return self.state
        self.state.finish()
        self._log('\n' + reporting.summary_table(self.state.cycles, self.strategy_name))
        self._log(f'outputs: {self.work_dir / reporting.METRICS_FILE}, '
                  f'{self.work_dir / reporting.CURVE_FILE}, {self.state.path}')
        return self.state

    # --------------------------------------------------------------- phases
    def _train(self, c: int, entry: dict, cycle_dir: Path | None = None) -> dict:
        cycle_dir = cycle_dir or self._cycle_dir(c)
        resume = find_latest_checkpoint(str(cycle_dir)) is not None
        load_from = None
        if not resume and c > 0 and self.settings.model_init == 'continue':
            load_from = self.state.cycle(c - 1)['checkpoint']
        self._log(f'cycle {c}: training on {entry["num_labeled"]} labeled samples'
                  + (' (resuming from its last checkpoint)' if resume else ''))
        start = time.perf_counter()
        runner = self._runner(c, entry, phase='train', resume=resume, load_from=load_from,
                              cycle_dir=cycle_dir)
        runner.train()
        checkpoint = find_latest_checkpoint(str(cycle_dir))
        del runner
        gc.collect()
        timings = dict(entry['timings'], train_s=round(time.perf_counter() - start, 2))
        self.state.mark(c, 'trained', checkpoint=checkpoint, timings=timings)
        return dict(checkpoint=checkpoint, timings=timings)

    def _evaluate(self, c: int, entry: dict, cycle_dir: Path | None = None) -> dict:
        start = time.perf_counter()
        runner = self._runner(c, entry, phase='test', load_from=entry['checkpoint'],
                              cycle_dir=cycle_dir)
        metrics = {k: float(v) for k, v in runner.test().items()}
        del runner
        gc.collect()
        timings = dict(entry['timings'], eval_s=round(time.perf_counter() - start, 2))
        self.state.mark(c, 'evaluated', metrics=metrics, timings=timings)
        self._write_reports()
        self._log_metrics(c, entry)
        return dict(metrics=metrics, timings=timings)

    def _adopt_shared_initial(self, entry: dict) -> None:
        """Reference the cycle 0 shared by this seed's runs, training it first if nobody has.

        Rank 0 alone holds the folder's lock and reads and writes its record;
        every rank trains and evaluates together when the shared cycle is not
        done yet (a distributed Runner needs all of them).
        """
        shared = SharedInitialCycle(self.shared_initial_dir, key=dict(
            config_digests=config_digests(self.cfg), seed=self.settings.seed,
            initial_ids=digest_ids(entry['labeled'])))
        write = master_only(shared.write)
        with shared.locked() if get_rank() == 0 else contextlib.nullcontext():
            record = on_rank0(shared.read, ConfigError)
            entry['shared_from'] = str(shared.folder)
            if 'checkpoint' not in record:
                self._log(f'cycle 0: training the shared initial model in {shared.folder}')
                write()  # the key first: a killed training is not another's
                record.update(self._train(0, entry, cycle_dir=shared.cycle_dir))
                write(**record)
            if 'metrics' not in record:
                self.state.mark(0, 'trained', checkpoint=record['checkpoint'],
                                timings=record['timings'])
                record.update(self._evaluate(0, entry, cycle_dir=shared.cycle_dir))
                write(**record)
                return
        self.state.mark(0, 'evaluated', checkpoint=record['checkpoint'],
                        metrics=record['metrics'], timings=record['timings'])
        self._write_reports()
        self._log_metrics(0, entry, note=f' (shared: {shared.folder})')

    def _select(self, c: int, entry: dict) -> None:
        s = self.settings
        rng = np.random.default_rng([s.seed, c, 1])
        selection = self._selection(c, entry)
        labeled = sorted(self.position[i] for i in entry['labeled'])
        # People could not settle these last time: they go first, not as candidates.
        requeued = [] if self.human is None else HumanOracle.requeued(self.state.cycle(c - 1))
        candidates = selection.candidates(set(labeled) | {self.position[i] for i in requeued},
                                          rng)
        self._log(f'cycle {c}: scoring {len(candidates)} of {len(self.pool) - len(labeled)} '
                  f'unlabeled samples with {self.strategy_name}')
        start = time.perf_counter()
        order, scores = selection.select(candidates, labeled, rng)
        picked = broadcast_from_rank0(None if order is None else [
            dict(id=self.pool.ids[candidates[i]], score=float(scores[i])) for i in order])
        master_only(write_scores)(self._cycle_dir(c), [self.pool.ids[p] for p in candidates],
                                  scores)
        timings = dict(entry['timings'], score_s=elapsed(start))
        self._log(f'cycle {c}: selected {len(picked)} samples (top score '
                  f'{picked[0]["score"]:.4f}, K-th {picked[-1]["score"]:.4f})')
        fields = {}
        if self.human is not None:
            before = {p['id']: p['score'] for p in self.state.cycle(c - 1)['selected']
                      } if requeued else {}
            picked = [dict(id=i, score=before[i], requeued=True) for i in requeued] + picked
            fields['annotation'] = self.human.write(
                picked, self._cycle_dir(c), self.strategy_name, c,
                lambda ids: self._predictions(selection, ids), previous=self.state.cycle(c - 1))
        elif s.ranking_eval_size:  # needs the candidates' labels, which people have not given
            start = time.perf_counter()
            fields['ranking_accuracy'] = result = selection.ranking_accuracy(
                candidates, scores, np.random.default_rng([s.seed, c, 2]))
            timings['ranking_eval_s'] = elapsed(start)
            self._log(f'cycle {c}: ranking accuracy on {result["num_samples"]} candidates: '
                      + ', '.join(f'{k}={v:.3f}' for k, v in result.items()
                                  if k != 'num_samples'))
        self.state.mark(c, 'selected', selected=picked, num_candidates=int(len(candidates)),
                        timings=timings, **fields)
        self._write_reports()

    def _predictions(self, selection: CycleSelection, ids: list[str]) -> list | None:
        """The model's predictions of ``ids``, in that order, on rank 0 (None elsewhere)."""
        positions = [self.position[i] for i in ids]
        outputs = selection.score(sorted(positions), prediction_pass(), phase='predict')
        if outputs is None:
            return None
        by_position = dict(zip(sorted(positions), outputs['predictions']))
        return [by_position[p] for p in positions]

    def _selection(self, c: int, entry: dict) -> CycleSelection:
        def make_runner(phase: str, test_dataloader: dict, test_cfg: dict) -> Runner:
            return self._runner(c, entry, phase=phase, load_from=entry['checkpoint'],
                                test_dataloader=test_dataloader, test_cfg=test_cfg)
        return CycleSelection(self.cfg, self.settings, self.pool, self.strategy, self.task,
                              make_runner, lambda msg: self._log(f'cycle {c}: {msg}'),
                              self._cycle_dir(c))

    # -------------------------------------------------------------- helpers
    def _runner(self, c: int, entry: dict, phase: str, resume: bool = False,
                load_from: str | None = None, cycle_dir: Path | None = None,
                test_dataloader: dict | None = None, test_cfg: dict | None = None) -> Runner:
        cfg = copy.deepcopy(self.cfg)
        if test_cfg is not None:  # a scoring pass: the test loop is ScoreLoop
            cfg.test_dataloader, cfg.test_cfg = test_dataloader, test_cfg
        positions = [self.position[i] for i in entry['labeled']]
        cfg.train_dataloader.dataset = subset_config(cfg.train_dataloader.dataset, self.pool,
                                                     positions)
        if phase == 'train':
            # The experiment evaluates once, after training, with the test
            # loop: a validation at the end of training would repeat it.
            cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
            reproducible_training(cfg)
            if no_single_sample_batch(cfg, len(positions)):
                self._log(f'cycle {c}: {len(positions)} labeled samples would leave a last '
                          'training batch of one, which BatchNorm refuses: it is dropped')
        cfg.work_dir = str(cycle_dir or self._cycle_dir(c))
        cfg.launcher = self.launcher
        cfg.resume = resume
        cfg.load_from = load_from
        randomness = dict(cfg.get('randomness') or {})
        randomness['seed'] = self.settings.seed
        cfg.randomness = randomness
        cfg.experiment_name = f'cycle{c:02d}_{phase}_{time.time_ns()}'
        cfg.pop('active_learning', None)
        return CycleRunner.from_cfg(cfg)

    def _labeled_ids(self, c: int) -> list[str]:
        if self.human is not None:
            if c == 0:
                return self.human.initial_labeled()
            previous = self.state.cycle(c - 1)
            return previous['labeled'] + HumanOracle.accepted(previous)
        if c == 0:
            rng = np.random.default_rng([self.settings.seed, 0])
            picks = rng.choice(len(self.pool), size=self.settings.initial_size, replace=False)
            return [self.pool.ids[p] for p in sorted(picks)]
        previous = self.state.cycle(c - 1)
        return previous['labeled'] + [p['id'] for p in previous['selected']]

    def _check_disjoint(self, entry: dict) -> None:
        labeled = set(entry['labeled'])
        if len(labeled) != len(entry['labeled']):
            raise RuntimeError(f'cycle {entry["cycle"]}: the labeled set has duplicates')
        overlap = labeled & {p['id'] for p in entry['selected']}
        if overlap:
            raise RuntimeError(f'cycle {entry["cycle"]}: selected samples already labeled: '
                               f'{sorted(overlap)[:5]}')

    def _cycle_dir(self, c: int) -> Path:
        return self.work_dir / f'cycle_{c:02d}'

    @master_only
    def _write_reports(self) -> None:
        reporting.write_metrics_csv(self.work_dir, self.state.cycles, self.strategy_name)
        reporting.write_curve(self.work_dir, self.state.cycles, self.strategy_name)

    def _log_metrics(self, c: int, entry: dict, note: str = '') -> None:
        shown = ', '.join(f'{k}={v:.4f}' for k, v in entry['metrics'].items())
        self._log(f'cycle {c}: {entry["num_labeled"]} labeled -> {shown}{note}')

    def _log(self, msg: str) -> None:
        print_log(msg, logger=self.logger)


def reproducible_training(cfg: Config) -> None:
    """Make a training resumed from a checkpoint repeat the uninterrupted one.

    :class:`~mmal.hooks.EpochSeedHook` makes each epoch's random streams a
    function of (seed, epoch, rank); it needs the data workers started anew
    each epoch, so persistent workers are turned off (their start costs a
    moment per epoch).
    """
    cfg.train_dataloader.persistent_workers = False
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') in ('EpochSeedHook', EpochSeedHook) for h in hooks):
        cfg.custom_hooks = hooks + [dict(type='EpochSeedHook')]


def no_single_sample_batch(cfg: Config, num_samples: int) -> bool:
    """Drop a last training batch of one sample; whether it had to.

    A labeled set grows by any number (people accept what they accept),
    and a batch of one fails in BatchNorm ("Expected more than 1 value per
    channel when training"). Only then is the last batch dropped, so other
    sizes train exactly as configured.
    """
    loader = cfg.train_dataloader
    per_rank = -(-num_samples // get_world_size())
    if per_rank <= 1 or per_rank % loader.batch_size != 1:
        return False
    if loader.get('batch_sampler'):
        loader.batch_sampler['drop_last'] = True
    else:
        loader['drop_last'] = True
    return True


def task_of(cfg: Config) -> str:
    """``'detection'`` or ``'pose'``, from the config's ``default_scope``."""
    scope = cfg.get('default_scope', 'mmdet')
    return _TASKS.get(scope, scope)


def _check_model_outputs(cfg: Config, strategy) -> None:
    """Refuse, before any training, a strategy asking for outputs the model cannot give."""
    model_type = (cfg.get('model') or {}).get('type')
    if not isinstance(model_type, str):
        return
    with MODELS.switch_scope_and_registry(cfg.get('default_scope')) as registry:
        model_cls = registry.get(model_type)
    if model_cls is None or not hasattr(model_cls, 'unsupported_outputs'):
        return
    wanted = {out for passes in (strategy.candidate_passes(), strategy.labeled_passes())
              for p in passes.values() for out in p.outputs}
    missing = model_cls.unsupported_outputs(wanted)
    if missing:
        raise ConfigError(
            f'{type(strategy).__name__} needs the score outputs {missing}, which '
            f'model.type={model_type!r} does not give (it gives '
            f'{sorted(model_cls.task_output_names)}); choose a strategy that applies to this '
            'model (README, Strategies) or another model')


def _check_same_experiment_on_every_rank(cfg: Config, settings: ActiveLearningSettings,
                                         pool: Pool) -> None:
    """Refuse, on every rank, ranks that would run different experiments (no-op alone).

    Ranks that read other data, another config or other code would score
    different samples or models and silently mix them in one selection.
    """
    digest = {'pool (the data under train_dataloader.dataset.data_root)': digest_ids(pool.ids)}
    digest.update((f'config key `{k}`', v) for k, v in config_digests(cfg).items())
    digest.update((f'active_learning.{k}', v) for k, v in settings.to_dict().items())
    digest.update((f'{name} version', v) for name, v in versions().items())
    differences = differences_from_rank0(digest)
    if differences:
        raise ConfigError(
            'the ranks do not run the same experiment: '
            + '; '.join(f'rank {rank} differs from rank 0 in: {", ".join(keys)}'
                        for rank, keys in differences.items())
            + '. Every node needs the same data, the same config and the same code '
            '(mmal and its packages at the same versions)')
