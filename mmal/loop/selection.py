"""A cycle's selection: draw the candidates, score them on the Runner, let the strategy pick.

Scoring runs :class:`~mmal.scoring.ScoreLoop` as the test loop of a Runner
built for the cycle's checkpoint, once per set the strategy asked about
(candidates, labeled set), with every pass the strategy declared. The
strategy then sees arrays only.
"""
import csv
import dataclasses
import gc
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from mmengine.config import Config
from mmengine.dist import barrier, get_rank

from ..datasets import Pool, deterministic_pipeline, leaf_configs, scoring_config
from ..scoring import NUM_SAMPLES, ScorePass
from ..scoring.store import clear_spill
from ..strategies import BaseStrategy, EntropyStrategy
from ..utils.dist import broadcast_from_rank0
from . import ranking
from .settings import ActiveLearningSettings
from .state import atomic_write_text

SCORES_FILE = 'al_scores.csv'
#: Where a cycle's scoring outputs past ``score_spill_mb`` live until the selection is made.
SPILL_FOLDER = 'score_spill'


class CycleSelection:
    """Scores a cycle's candidates and selects K of them.

    Args:
        cfg (Config): The experiment's config.
        settings (ActiveLearningSettings): Its ``active_learning`` section.
        pool (Pool): The pool.
        strategy (BaseStrategy): The built strategy.
        task (str): ``'detection'`` or ``'pose'``.
        make_runner (callable): ``(phase, test_dataloader, test_cfg) ->
            Runner`` loading the cycle's checkpoint.
        log (callable): The experiment's logger.
        work_dir (Path): The cycle's folder; a strategy's own training
            checkpoints go to ``work_dir / 'strategy'``.
    """

    def __init__(self, cfg: Config, settings: ActiveLearningSettings, pool: Pool,
                 strategy: BaseStrategy, task: str, make_runner: Callable,
                 log: Callable[[str], None], work_dir: Path) -> None:
        self.work_dir = work_dir
        self.cfg = cfg
        self.settings = settings
        self.pool = pool
        self.strategy = strategy
        self.task = task
        self.make_runner = make_runner
        self.log = log

    def candidates(self, labeled: set[int], rng: np.random.Generator) -> np.ndarray:
        """Sorted pool positions of this cycle's candidates (a random subset or all)."""
        unlabeled = np.array([p for p in range(len(self.pool)) if p not in labeled])
        size = len(unlabeled) if self.settings.candidate_pool == 'all' else min(
            self.settings.candidate_pool, len(unlabeled))
        return np.sort(rng.choice(unlabeled, size=size, replace=False))

    def select(self, candidates: np.ndarray, labeled: list[int], rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
        """The strategy's picks (positions into ``candidates``) and every candidate's score.

        Rank 0 returns them; other ranks score their shards and get
        ``(None, None)``. A strategy that declares ``select_on_every_rank``
        gets the outputs on every rank and selects on every rank (rank 0's
        result is the one returned).
        """
        strategy = self.strategy
        every_rank = strategy.select_on_every_rank
        labeled_outputs = {NUM_SAMPLES: len(labeled)}
        if strategy.labeled_passes():
            self.log(f'scoring the {len(labeled)} labeled samples')
            labeled_outputs = self.score(labeled, strategy.labeled_passes(), phase='score_labeled',
                                         every_rank=every_rank)
        candidate_outputs = {NUM_SAMPLES: len(candidates)}
        if strategy.candidate_passes():
            candidate_outputs = self.score(candidates.tolist(), strategy.candidate_passes(),
                                           with_labels=strategy.needs_labels,
                                           every_rank=every_rank)
        if get_rank() != 0 and not every_rank:
            return None, None
        strategy.work_dir = self.work_dir / 'strategy'
        order, scores = strategy.select(candidate_outputs, labeled_outputs,
                                        self.settings.budget_per_cycle, rng)
        del candidate_outputs, labeled_outputs
        if every_rank:
            barrier()  # every rank is done with the spilled outputs rank 0 removes
        if get_rank() != 0:
            return None, None
        clear_spill(self.work_dir / SPILL_FOLDER)
        return np.asarray(order), np.asarray(scores, dtype=np.float64)

    def score(self, positions: list[int], passes: dict[str, ScorePass], phase: str = 'score',
              with_labels: bool = False, every_rank: bool = False) -> dict | None:
        """Run ``passes`` over the given pool positions; the outputs on rank 0, else None.

        With ``every_rank`` every rank gets the outputs.
        """
        spill_mb = self.settings.score_spill_mb
        runner = self.make_runner(
            phase, self.loader_cfg(positions, with_labels),
            dict(type='ScoreLoop', fp16=bool((self.cfg.get('test_cfg') or {}).get('fp16')),
                 passes={name: dataclasses.asdict(p) for name, p in passes.items()},
                 spill_dir=str(self.work_dir / SPILL_FOLDER / phase),
                 spill_bytes=None if spill_mb is None else int(spill_mb * 2**20),
                 every_rank=every_rank))
        outputs = runner.test()
        del runner
        gc.collect()
        return outputs

    def ranking_accuracy(self, candidates: np.ndarray, scores: np.ndarray | None,
                         rng: np.random.Generator) -> dict:
        """Pairwise ranking accuracy of the strategy's and the reference scores (Fig. 5)."""
        sample = ranking.ranking_sample(len(candidates), self.settings.ranking_eval_size, rng)
        entropy = EntropyStrategy(task=self.task)
        outputs = self.score(
            candidates[sample].tolist(),
            {'main': ScorePass(('target_loss', 'pred_loss', *entropy.outputs))},
            phase='rank', with_labels=True)
        result = None
        if get_rank() == 0:
            losses = outputs['target_loss']
            references = dict(LearningLossStrategy=outputs['pred_loss'],
                              EntropyStrategy=entropy.scores(outputs, {}))
            result = dict(num_samples=int(len(sample)),
                          strategy=ranking.pairwise_ranking_accuracy(scores[sample], losses))
            result.update({name: ranking.pairwise_ranking_accuracy(ref, losses)
                           for name, ref in references.items()})
            del outputs
            clear_spill(self.work_dir / SPILL_FOLDER)
        return broadcast_from_rank0(result)

    def loader_cfg(self, positions: list[int], with_labels: bool = False) -> dict:
        """A test-mode dataloader config over the given (sorted) pool positions.

        Unlabeled (the test pipeline without annotation loading) unless
        ``with_labels``: then the target-loss pipeline, for true losses.
        """
        s = self.settings
        if with_labels:
            pipeline = s.target_loss_pipeline or deterministic_pipeline(
                leaf_configs(self.cfg.train_dataloader.dataset)[0]['pipeline'])
        else:
            pipeline = leaf_configs(self.cfg.test_dataloader.dataset)[0]['pipeline']
        loader = dict(
            batch_size=s.score_batch_size, num_workers=s.score_num_workers,
            persistent_workers=False, sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=scoring_config(self.cfg.train_dataloader.dataset, self.pool, positions,
                                   pipeline, with_labels=with_labels))
        if self.cfg.test_dataloader.get('collate_fn'):
            loader['collate_fn'] = self.cfg.test_dataloader.collate_fn
        return loader


def write_scores(cycle_dir: Path, ids: list[str], scores: np.ndarray) -> None:
    """``al_scores.csv``: every candidate's id and score (rank 0 calls this)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(['id', 'score'])
    writer.writerows((sample_id, repr(float(v))) for sample_id, v in zip(ids, scores))
    cycle_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cycle_dir / SCORES_FILE, buf.getvalue())


def elapsed(start: float) -> float:
    return round(time.perf_counter() - start, 2)
