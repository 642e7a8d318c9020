"""A pool-based active-learning experiment on mmengine's Runner.

One cycle: train on the labeled set with a fresh Runner, evaluate with the
config's test evaluator, score a random candidate subset of the unlabeled
pool with the strategy, and hand the K it selects (top K, or a diverse K for
core-set-like strategies) to the oracle, whose labels grow the labeled set
(:mod:`mmal.loop.oracle`). Every completed step is recorded in
``al_state.json`` before the next starts, so ``resume`` never redoes a
finished step and never draws a selection twice.

Read in this order: the checks made before any work (:mod:`.checks`), the
Runner each phase builds (:mod:`.runner`), the phases below, the selection
(:mod:`.selection`), the record (:mod:`.state`, :mod:`.resume`).

Distributed, every rank runs this same code; rank 0 alone reads and writes
the shared files, through :func:`mmal.utils.dist.on_rank0`.
"""
import gc
import time
from pathlib import Path

import numpy as np
from mmengine.config import Config
from mmengine.logging import MMLogger, print_log
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, find_latest_checkpoint

from ..datasets import Pool, build_pool, subset_config, with_box_level_labels
from ..datasets.box_labels import read_box_labels
from ..hooks import TrainingDivergedError
from ..models import with_ignore_regions
from ..models.plain_models import is_teacher_student
from ..scoring import MAIN, ScorePass, Scorer, ScoringSettings
from ..strategies import build_strategy
from ..utils import ConfigError
from ..utils.config import task_of
from ..utils.dist import broadcast_from_rank0, on_rank0
from . import box_level, cost, reporting, stopping
from .checks import (
    check_disjoint,
    check_experiment_config,
    check_labels,
    check_model_outputs,
    check_same_experiment_on_every_rank,
    check_same_labeled_set_on_every_rank,
    model_refusals,
)
from .oracle import build_oracle
from .ranking import RankingEvaluation
from .resume import check_writable, interrupted_cycle, open_state
from .runner import CycleRunner, phase_config
from .selection import SCORES_FILE, CycleSelection, draw_candidates, elapsed, write_scores
from .semi_supervised import SemiSupervisedSettings
from .settings import ActiveLearningSettings
from .shared_initial import SharedInitialCycle, shared_initial_set
from .state import ExperimentState, phase_done

#: Where the scoring that chooses the initial set (``initial_strategy``) runs.
INITIAL_DIR = 'initial'
#: The random stream of that choice: ``(seed, 0, INITIAL_STREAM)`` (cycle c's
#: selection draws from ``(seed, c, 1)``, its ranking evaluation ``(seed, c, 2)``).
INITIAL_STREAM = 3


class ActiveLearningExperiment:
    """Runs every cycle of the experiment described by ``cfg``.

    Args:
        cfg (Config): A training config with an ``active_learning`` section.
        work_dir (str): Experiment folder: state, metrics, curve, cycle dirs.
        resume (bool): Continue the experiment in ``work_dir``.
        resume_checkpoint (str, optional): With ``resume``: the checkpoint
            the interrupted cycle's training resumes from, instead of the
            last one in its folder (``tools/al_train.py --resume PATH``);
            refused unless a cycle's training was interrupted (see
            :func:`~.resume.interrupted_cycle`).
        launcher (str): ``'none'``, ``'pytorch'`` or ``'slurm'``; the process
            group must already be initialised for the latter two.
        shared_initial_dir (str, optional): A folder where cycle 0 is trained
            once and shared with other runs of the same config and seed (see
            :mod:`mmal.loop.shared_initial`); None trains it in this run.
    """

    def __init__(self, cfg: Config, work_dir: str, resume: bool = False,
                 launcher: str = 'none', shared_initial_dir: str | None = None,
                 resume_checkpoint: str | None = None) -> None:
        self.cfg = cfg
        self.work_dir = Path(work_dir)
        self.resume = resume
        self.launcher = launcher
        self.shared_initial_dir = shared_initial_dir
        self._read_config(cfg)
        self._read_pool(cfg)
        self.resume_checkpoint = resume_checkpoint
        self.resumed_cycle = None if resume_checkpoint is None else on_rank0(
            lambda: interrupted_cycle(self.work_dir, resume_checkpoint))
        self.state: ExperimentState = self._open_record()

    def _read_config(self, cfg: Config) -> None:
        """What to run: settings, task, strategy; refused before any data is read."""
        self.settings = ActiveLearningSettings.from_config(cfg.get('active_learning'))
        self.scoring = ScoringSettings.from_config(cfg)
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        self.task = task_of(cfg)
        self.strategy = build_strategy(self.settings.strategy, self.task)
        self.strategy.check_config(cfg)
        check_model_outputs(cfg, self.strategy)
        self.strategy_name = self.settings.strategy['type']
        self.initial_strategy = self._build_initial_strategy(cfg)
        check_experiment_config(cfg)
        self.stopping = stopping.StoppingSettings.from_dict(self.settings.stopping)
        # The stop set's mean predicted loss is part of the signal when the model has a
        # loss-prediction module.
        self.stop_set_outputs = ('predictions',) + (
            ('pred_loss',) if model_refusals(cfg, {'pred_loss'}) == {} else ())
        self.cost = cost.AnnotationCost.from_config(self.settings.cost, self.task)
        self.semi = SemiSupervisedSettings.from_config(cfg.active_learning.get('semi_supervised'))
        if self.semi is not None:
            self.semi.check_config(cfg, self.task)
        elif self.task == 'detection' and is_teacher_student(cfg.model):
            raise ConfigError(
                f'model.detector.type={cfg.model.detector.type!r} is a teacher-student pair, '
                'which trains on the labeled set and the unlabeled rest of the pool: give '
                'active_learning.semi_supervised=dict(unlabeled_pipeline=[...]) (see '
                'docs/experiments.md), or set model.detector to the plain detector')
        self.box_level = box_level.BoxLevelSettings.from_config(self.settings.box_level)
        if self.box_level is not None:
            if self.task != 'detection':
                raise ConfigError('active_learning.box_level applies to detection (regions of '
                                  f'an image); this is a {self.task} config. Remove it')
            # Every Runner trains the ignore regions as ignored, none as background.
            cfg.model = with_ignore_regions(cfg.model, self.box_level.ignore_iof_thr)
        self.ranking = RankingEvaluation(self.settings.ranking_eval_size,
                                         self.settings.ranking_references, self.task
                                         ) if self.settings.ranking_eval_size else None
        for name, reference in (self.ranking.references if self.ranking else {}).items():
            try:  # refused now, not after cycle 0 has trained
                reference.check_config(cfg)
                check_model_outputs(cfg, reference)
            except ConfigError as err:
                raise ConfigError(
                    f'active_learning.ranking_references: {name} cannot score this model: '
                    f'{err}. List references the model gives (e.g. ranking_references='
                    "[dict(type='LearningLossStrategy')]) or set ranking_eval_size=0") from err

    def _build_initial_strategy(self, cfg: Config):
        """The strategy choosing the initial set (None: the seeded random draw), refused
        before any work when it needs something trained or labeled."""
        initial = self.settings.initial_strategy
        if initial == 'random':
            return None
        key = 'active_learning.initial_strategy'
        strategy = build_strategy(initial, self.task, key=key)
        why = strategy.initial_set_refusal()
        if why:
            raise ConfigError(
                f'{key}={initial!r} cannot choose the initial set: {why}. It is chosen before '
                "any training, with nothing labeled: use 'random' or a strategy reading "
                "features, e.g. dict(type='TypiClustStrategy'), "
                "dict(type='ProbCoverStrategy') or dict(type='CoreSetStrategy')")
        strategy.check_config(cfg)
        check_model_outputs(cfg, strategy)
        return strategy

    def _read_pool(self, cfg: Config) -> None:
        """The pool, its labels and who labels it; refused before anything is written."""
        self.pool: Pool = build_pool(cfg.train_dataloader.dataset, self.settings.label_tolerance)
        box_level.check_box_level_pool(self.box_level, self.pool.box_level)
        self.oracle = build_oracle(cfg, self.settings, self.pool, self.task, self.strategy)
        self.position = {sample_id: i for i, sample_id in enumerate(self.pool.ids)}
        check_same_experiment_on_every_rank(cfg, self.settings, self.pool)
        check_writable(self.work_dir)
        # appended to (mmengine's default 'w' would wipe the log of the cycles before a
        # resume, or of a finished run that al_compare reuses)
        self.logger = MMLogger.get_instance(
            f'mmal_{self.work_dir.name}_{time.time_ns()}', logger_name='mmal',
            log_file=str(self.work_dir / 'al_train.log'), log_level='INFO', file_mode='a')
        check_labels(cfg, self.settings, self.pool, self._log)
        self.oracle.check_plan(ExperimentState.load(self.work_dir) if self.resume else None)

    def _open_record(self) -> ExperimentState:
        """al_state.json created, or the recorded one on resume.

        Rank 0 alone reads or creates the record and the others take its
        copy: a rank that looked later would find rank 0's new file and
        refuse it.
        """
        state = on_rank0(lambda: open_state(self.work_dir, self.cfg, self.settings, self.pool,
                                            self.resume, self._log))
        saved_on_rank0(state)
        return state

    # ------------------------------------------------------------------ run
    def run(self) -> ExperimentState:
        """Run (or finish) every cycle and write the outputs.

        With people as the oracle, the run returns early when a batch waits
        for its labels (``self.waiting`` is then the waiting message).
        """
        s = self.settings
        self.waiting = None
        initial = self.oracle.initial_description + (
            '' if self.initial_strategy is None else
            f' chosen by {s.initial_strategy["type"]}')
        self._log(f'{self.task} experiment, strategy {self.strategy_name}: pool '
                  f'{len(self.pool)}, initial {initial}, '
                  f'budget {s.budget_per_cycle} {self.cost.unit} per cycle, '
                  f'{s.num_cycles} cycles, candidates '
                  f'{s.candidate_pool}, model_init={s.model_init}, work dir {self.work_dir}')
        for c in range(s.num_cycles):
            entry = self.state.cycle(c)
            if entry is None:
                labeled, how = self._labeled_set(c)
                check_same_labeled_set_on_every_rank(c, labeled)
                entry = self.state.start_cycle(c, labeled, cost=self._labeled_cost(c, labeled),
                                               **how)
            check_disjoint(entry)
            if 'failure' in entry:
                self._retry(c)
            if c == 0 and self.shared_initial_dir and not phase_done(entry, 'evaluated'):
                self._adopt_shared_initial(entry)
            if not phase_done(entry, 'trained'):
                self._train(c, entry)
            if not phase_done(entry, 'evaluated'):
                self._evaluate(c, entry)
            if c < s.num_cycles - 1 and not phase_done(entry, 'selected'):
                self._select(c, entry)
            if c < s.num_cycles - 1 and self.oracle.waiting(entry):
                self.waiting = self.oracle.waiting_message(
                    c, entry, self.work_dir, self.cfg.filename or 'CONFIG')
                self._log(self.waiting)
                return self.state
        self.state.finish()
        self._log('\n' + reporting.summary_table(self.state.cycles, self.strategy_name,
                                                  self.cost.unit))
        self._log(f'outputs: {self.work_dir / reporting.METRICS_FILE}, '
                  f'{self.work_dir / reporting.CURVE_FILE}, {self.state.path}')
        return self.state

    # --------------------------------------------------------------- phases
    def _labeled_set(self, c: int) -> tuple[list[str], dict]:
        """Cycle ``c``'s labeled set, and what to record of how a strategy chose it."""
        if c > 0 or self.initial_strategy is None:
            return self.oracle.labeled_ids(c, self.state), {}
        if self.shared_initial_dir:
            labeled, initial = shared_initial_set(
                self.shared_initial_dir, self.cfg, self.settings.seed,
                self.settings.initial_strategy, self._choose_initial_set, self._log)
        else:
            labeled, initial = self._choose_initial_set()
        return labeled, dict(initial=initial)

    def _choose_initial_set(self) -> tuple[list[str], dict]:
        """``initial_size`` samples the initial strategy picks among the candidates,
        scored with the model as built (its ``init_cfg`` weights: a pretrained
        backbone, else random ones); the scoring runs in ``initial/``."""
        s = self.settings
        rng = np.random.default_rng([s.seed, 0, INITIAL_STREAM])
        folder = self.work_dir / INITIAL_DIR
        candidates = draw_candidates(len(self.pool), set(), s.candidate_pool, rng)
        name = s.initial_strategy['type']
        self._log(f'initial set: scoring {len(candidates)} samples with {name} on the model '
                  'as built (nothing trained yet)')

        def make_runner(phase: str, test_dataloader: dict, test_cfg: dict) -> Runner:
            runner = CycleRunner.from_cfg(phase_config(
                self.cfg, phase, folder, test=(test_dataloader, test_cfg),
                launcher=self.launcher, seed=s.seed, name=f'initial_{phase}_{time.time_ns()}'))
            runner.init_weights()
            return runner
        scorer = Scorer(self.cfg, self.pool, self.scoring, make_runner, folder)
        picked, _ = self._pick('initial set', scorer, self.initial_strategy, candidates, [],
                               s.initial_size, rng, folder)
        labeled = sorted((p['id'] for p in picked), key=self.position.__getitem__)
        return labeled, dict(strategy=s.initial_strategy, num_candidates=int(len(candidates)),
                             scores=str(folder / SCORES_FILE))

    def _train(self, c: int, entry: dict, cycle_dir: Path | None = None) -> dict:
        cycle_dir = cycle_dir or self._cycle_dir(c)
        # mmengine resumes from load_from when it is given, else from the last checkpoint.
        load_from = self.resume_checkpoint if c == self.resumed_cycle else None
        resume = load_from is not None or find_latest_checkpoint(str(cycle_dir)) is not None
        if not resume and c > 0 and self.settings.model_init == 'continue':
            load_from = self.state.cycle(c - 1)['checkpoint']
        self._log(f'cycle {c}: training on {entry["num_labeled"]} labeled samples'
                  + ('' if self.semi is None else
                     f' and the {len(self.pool) - entry["num_labeled"]} unlabeled ones '
                     '(semi-supervised)')
                  + (f' (resuming from {load_from or "its last checkpoint"})' if resume else ''))
        start = time.perf_counter()
        runner = self._runner(c, entry, 'train', cycle_dir, resume=resume, load_from=load_from)
        try:
            runner.train()
        except TrainingDivergedError as err:
            self.state.fail(c, err.record())
            raise CycleFailedError(
                f'cycle {c}: {err}. The cycle is recorded as failed, with no metric. Fix the '
                'cause (bad labels: see active_learning.bad_labels; a learning rate too high '
                f'for the labeled set) and run again with --resume: cycle {c} then trains '
                'again from its start') from err
        checkpoint = find_latest_checkpoint(str(cycle_dir))
        del runner
        gc.collect()
        timings = dict(entry['timings'], train_s=round(time.perf_counter() - start, 2))
        self.state.mark(c, 'trained', checkpoint=checkpoint, timings=timings)
        return dict(checkpoint=checkpoint, timings=timings)

    def _evaluate(self, c: int, entry: dict, cycle_dir: Path | None = None) -> dict:
        start = time.perf_counter()
        runner = self._runner(c, entry, 'test', cycle_dir, load_from=entry['checkpoint'])
        metrics = {k: float(v) for k, v in runner.test().items()}
        del runner
        gc.collect()
        timings = dict(entry['timings'], eval_s=round(time.perf_counter() - start, 2))
        self.state.mark(c, 'evaluated', metrics=metrics, timings=timings)
        self._write_reports()
        self._log_metrics(c, entry)
        return dict(metrics=metrics, timings=timings)

    def _retry(self, c: int) -> None:
        """Train a failed cycle again from its start: its checkpoints (written before
        it failed) are moved to ``cycle_NN/failed_<k>/``, kept for a look."""
        failure = self.state.cycle(c).get('failure', {})
        cycle_dir = self._cycle_dir(c)
        kept = cycle_dir / f'failed_{len(self.state.cycle(c).get("failures", []))}'

        def move_checkpoints() -> None:
            for path in [*cycle_dir.glob('*.pth'), cycle_dir / 'last_checkpoint']:
                if path.exists():
                    kept.mkdir(parents=True, exist_ok=True)
                    path.rename(kept / path.name)
        on_rank0(move_checkpoints)
        self.state.retry(c)
        self._log(f'cycle {c}: it failed last time ({failure.get("kind")} at iteration '
                  f'{failure.get("iteration")}, {failure.get("term")}); training it again '
                  f'from its start (the old checkpoints are in {kept})')

    def _adopt_shared_initial(self, entry: dict) -> None:
        """Cycle 0 from the folder this seed's runs share, trained there first if nobody has."""
        shared = SharedInitialCycle.of_experiment(self.shared_initial_dir, self.cfg,
                                                  self.settings.seed, entry['labeled'],
                                                  self.settings.initial_strategy)
        evaluated_here = shared.adopt(
            entry, self.state, train=lambda folder: self._train(0, entry, folder),
            evaluate=lambda folder: self._evaluate(0, entry, folder), log=self._log)
        if not evaluated_here:
            self._write_reports()
            self._log_metrics(0, entry, note=f' (shared: {shared.folder})')

    def _select(self, c: int, entry: dict) -> None:
        """Score the candidates with cycle ``c``'s model, pick, ask the oracle, record."""
        rng = np.random.default_rng([self.settings.seed, c, 1])
        scorer = self._scorer(c, entry)
        previous = self.state.cycle(c - 1)
        labeled, candidates = self._candidates(c, entry, previous, rng)
        start = time.perf_counter()
        picked, scores = self._pick(f'cycle {c}', scorer, self.strategy, candidates, labeled,
                                    self._picks_to_request(entry, len(candidates)), rng,
                                    self._cycle_dir(c))
        queried = {}
        if self.box_level is None:
            picked = self._spend_budget(c, picked)
        elif self.oracle.knows_labels:  # people get the question in the oracle's batch
            picked, queried = self._query_boxes(c, scorer, picked, previous)
        timings = dict(entry['timings'], score_s=elapsed(start))
        picked, fields = self.oracle.ask(c, picked, previous, self._cycle_dir(c),
                                         scorer.predictions)
        fields.update(queried)
        if self.box_level is not None:
            known = set(entry['labeled'])  # asked again: labeled already, not selected
            fields['revisited'] = [p for p in picked if p['id'] in known]
            picked = [p for p in picked if p['id'] not in known]
        if self.oracle.knows_labels and not queried:
            fields['selected_cost'] = self._cost_of([p['id'] for p in picked])
        if self.ranking is not None and self.oracle.knows_labels:
            start = time.perf_counter()
            fields['ranking_accuracy'] = self._ranking_accuracy(c, scorer, candidates, scores)
            timings['ranking_eval_s'] = elapsed(start)
        if self.stopping.stop_set_size:
            start = time.perf_counter()
            fields.update(self._stopping_signal(c, scorer))
            timings['stop_signal_s'] = elapsed(start)
        # The selection cleared its own spill; the passes after it (ranking
        # evaluation, stop set, box queries) spill too, and are done with it.
        on_rank0(scorer.clear_spill)
        self.state.mark(c, 'selected', selected=picked, num_candidates=int(len(candidates)),
                        timings=timings, **fields)
        self._write_reports()

    def _picks_to_request(self, entry: dict, num_candidates: int) -> int:
        """K in images; for a budget in boxes or seconds, enough picks to spend it."""
        budget = self.settings.budget_per_cycle
        if self.cost.unit == 'images':
            return budget
        marks = [self.pool.marks[self.position[i]] for i in entry['labeled']]
        if self.box_level is not None:  # a query draws at most this many boxes
            marks = [min(m, self.box_level.max_asked_per_image) for m in marks]
        return cost.picks_to_request(budget, self.cost.in_unit(marks), num_candidates)

    def _query_boxes(self, c: int, scorer: Scorer, picked: list[dict],
                     previous: dict | None) -> tuple[list[dict], dict]:
        """Box-level queries of the picks, best first, until the budget is spent
        (:mod:`.box_level`): the picks queried and what the selection records."""
        predictions = scorer.predictions([p['id'] for p in picked])  # every rank scores

        def query() -> tuple[list[dict], dict]:
            return box_level.run_queries(
                self.box_level, self.cost, self.settings.budget_per_cycle, picked,
                stopping.plain_predictions(predictions, self.task),
                self.cfg.train_dataloader.dataset, (previous or {}).get('box_labels'),
                self._cycle_dir(c))
        queried, record = on_rank0(query)
        q = record['box_queries']
        self._log(f'cycle {c}: box-level queries on {len(queried)} of the {len(picked)} picks: '
                  f'{q["boxes_drawn"]} boxes drawn, {q["verifications"]} "nothing here", '
                  f'{q["pseudo_labels"]} pseudo-labels ({q["false"]} false, '
                  f'{q["wrong_class"]} of another class), {q["ignore_regions"]} ignore '
                  f'regions; {q["unlabeled_objects"]} objects left unlabeled; spent '
                  f'{record["selected_cost"][self.cost.unit]:g} {self.cost.unit}')
        return queried, record

    def _labeled_cost(self, c: int, labeled: list[str]) -> dict[str, float]:
        """Cycle ``c``'s labeled set in every unit: the initial set labeled whole, then
        with box-level queries what each query cost."""
        previous = self.state.cycle(c - 1) if c else None
        if self.box_level is None or previous is None:
            return self._cost_of(labeled)
        return {unit: round(value + previous['selected_cost'][unit], 3)
                for unit, value in previous['cost'].items()}

    def _spend_budget(self, c: int, picked: list[dict]) -> list[dict]:
        """The picks the budget labels, best first (all of them when it is in images)."""
        if self.cost.unit == 'images':
            return picked
        budget = self.settings.budget_per_cycle
        costs = self.cost.in_unit([self.pool.marks[self.position[p['id']]] for p in picked])
        n = cost.spend(costs, budget)
        spent = float(costs[:n].sum())
        self._log(f'cycle {c}: the budget of {budget} {self.cost.unit} labels {n} of the '
                  f'{len(picked)} picks ({spent:g} {self.cost.unit})'
                  + ('' if spent >= budget else ': the picks ran out before the budget'))
        return picked[:n]

    def _cost_of(self, ids: list[str]) -> dict[str, float]:
        """What labeling ``ids`` costs, in every unit (:mod:`.cost`)."""
        return self.cost.total([self.pool.marks[self.position[i]] for i in ids])

    def _candidates(self, c: int, entry: dict, previous: dict | None,
                    rng: np.random.Generator) -> tuple[list[int], np.ndarray]:
        """The labeled positions and the candidates drawn from the rest."""
        labeled = sorted(self.position[i] for i in entry['labeled'])
        # What the oracle could not settle last time goes first, not as a candidate.
        requeued = {self.position[i] for i in self.oracle.requeued(previous)}
        revisitable = set()
        if self.box_level is not None and self.box_level.revisit and (previous or {}).get(
                'box_labels'):
            revisitable = {self.position[i] for i in read_box_labels(previous['box_labels'])}
        candidates = draw_candidates(len(self.pool), (set(labeled) - revisitable) | requeued,
                                     self.settings.candidate_pool, rng)
        self._log(f'cycle {c}: scoring {len(candidates)} of {len(self.pool) - len(labeled)} '
                  f'unlabeled samples with {self.strategy_name}')
        return labeled, candidates

    def _pick(self, where: str, scorer: Scorer, strategy, candidates: np.ndarray,
              labeled: list[int], k: int, rng: np.random.Generator,
              folder: Path) -> tuple[list[dict], np.ndarray]:
        """The strategy's ``k`` picks as ``{id, score}`` best first (every rank), and all
        scores (``folder``: the scores file; ``where``: the log's prefix)."""
        selection = CycleSelection(scorer, strategy, lambda msg: self._log(f'{where}: {msg}'),
                                   folder)
        order, scores = selection.select(candidates, labeled, k, rng)
        picked = broadcast_from_rank0(None if order is None else [
            dict(id=self.pool.ids[candidates[i]], score=float(scores[i])) for i in order])
        on_rank0(lambda: write_scores(folder, [self.pool.ids[p] for p in candidates], scores))
        self._log(f'{where}: selected {len(picked)} samples (top score '
                  f'{picked[0]["score"]:.4f}, K-th {picked[-1]["score"]:.4f})')
        return picked, scores

    def _stopping_signal(self, c: int, scorer: Scorer) -> dict:
        """Cycle ``c``'s model against cycle ``c - 1``'s on the stop set (:mod:`.stopping`)."""
        unlabeled = set(range(len(self.pool))) - {
            self.position[i] for i in self.state.cycle(0)['labeled']}
        positions = stopping.stop_set(sorted(unlabeled), self.stopping.stop_set_size,
                                      self.settings.seed)
        ids = [self.pool.ids[p] for p in positions]
        # a pass on every rank; rank 0 gets the outputs, in the stop set's (pool) order
        outputs = scorer.score(positions, {MAIN: ScorePass(self.stop_set_outputs)},
                               phase='stop_set')

        def compare() -> dict:
            current = stopping.plain_predictions(outputs['predictions'], self.task)
            stopping.save_predictions(self._cycle_dir(c), ids, current)
            result = stopping.pred_loss_trend(
                outputs.get('pred_loss'), (self.state.cycle(c - 1) or {}).get('stop_pred_loss'))
            previous = stopping.load_predictions(self._cycle_dir(c - 1), ids) if c else None
            if previous is None:
                return dict(stop_agreement=None, stop_here=False, **result)
            value = stopping.agreement(previous, current, self.task, self.stopping)
            history = [self.state.cycle(k).get('stop_agreement') for k in range(1, c)]
            return dict(stop_agreement=value,
                        stop_here=stopping.stop_here([*history, value], self.stopping), **result)
        result = on_rank0(compare)
        if result['stop_agreement'] is not None:
            self._log(f'cycle {c}: stop-set agreement with cycle {c - 1}: '
                      f'{result["stop_agreement"]:.3f}' +
                      (' (stable: stop here)' if result['stop_here'] else ''))
        if result.get('stop_pred_loss') is not None:
            change = result.get('stop_pred_loss_change')
            self._log(f'cycle {c}: mean predicted loss on the stop set '
                      f'{result["stop_pred_loss"]:.4f}'
                      + ('' if change is None else f' ({change:+.1%} since cycle {c - 1})'))
        return result

    def _ranking_accuracy(self, c: int, scorer: Scorer, candidates: np.ndarray,
                          scores: np.ndarray) -> dict:
        result = self.ranking.evaluate(scorer, candidates, scores,
                                       np.random.default_rng([self.settings.seed, c, 2]))
        self._log(f'cycle {c}: ranking accuracy on {result["num_samples"]} candidates: '
                  + ', '.join(f'{k}={v:.3f}' for k, v in result.items() if k != 'num_samples'))
        return result

    # -------------------------------------------------------------- helpers
    def _scorer(self, c: int, entry: dict) -> Scorer:
        """Scoring with cycle ``c``'s final weights."""
        def make_runner(phase: str, test_dataloader: dict, test_cfg: dict) -> Runner:
            return self._runner(c, entry, phase, load_from=entry['checkpoint'],
                                test=(test_dataloader, test_cfg))
        return Scorer(self.cfg, self.pool, self.scoring, make_runner, self._cycle_dir(c))

    def _runner(self, c: int, entry: dict, phase: str, cycle_dir: Path | None = None,
                **options) -> Runner:
        """A Runner of cycle ``c``'s ``phase`` on its labeled set (options: see
        :func:`~mmal.loop.runner.phase_config`)."""
        positions = [self.position[i] for i in entry['labeled']]
        train_dataset = subset_config(self.cfg.train_dataloader.dataset, self.pool, positions)
        labels_file = (self.state.cycle(c - 1) or {}).get('box_labels') if c else None
        if labels_file:  # the images queried box by box train on their box-level labels
            train_dataset = with_box_level_labels(train_dataset, labels_file)
        sampler = None
        if self.semi is not None and phase == 'train':  # and the rest of the pool
            train_dataset, sampler = self.semi.train_data(
                train_dataset, self.cfg.train_dataloader.dataset, self.pool, positions,
                self.cfg.train_dataloader.batch_size)
        run_cfg = phase_config(
            self.cfg, phase, cycle_dir or self._cycle_dir(c),
            train_dataset=train_dataset, train_sampler=sampler,
            num_train=len(positions), launcher=self.launcher, seed=self.settings.seed,
            name=f'cycle{c:02d}_{phase}_{time.time_ns()}',
            log=lambda msg: self._log(f'cycle {c}: {msg}'), **options)
        if sampler is not None:  # semi-supervised: epochs, if counted, become iterations
            self.semi.schedule(run_cfg, len(positions))
        return CycleRunner.from_cfg(run_cfg)

    def _cycle_dir(self, c: int) -> Path:
        return self.work_dir / f'cycle_{c:02d}'

    def _write_reports(self) -> None:
        """The metrics table and curve so far, on rank 0. Call it on every rank."""
        on_rank0(lambda: reporting.write_reports(self.work_dir, self.state.cycles,
                                                 self.strategy_name, self.cost.unit))

    def _log_metrics(self, c: int, entry: dict, note: str = '') -> None:
        shown = ', '.join(f'{k}={v:.4f}' for k, v in entry['metrics'].items())
        self._log(f'cycle {c}: {entry["num_labeled"]} labeled -> {shown}{note}')

    def _log(self, msg: str) -> None:
        print_log(msg, logger=self.logger)


class CycleFailedError(RuntimeError):
    """A cycle could not complete (its training diverged); the state records it."""


def saved_on_rank0(state: ExperimentState) -> ExperimentState:
    """Make ``state.save`` write on rank 0 alone; a failed write raises on every rank.

    Every rank keeps its copy of the record up to date and calls ``save`` at
    the same points, so a full disk on rank 0 stops every rank instead of
    leaving the others waiting in the next collective.
    """
    save = state.save
    state.save = lambda: on_rank0(save)
    return state
