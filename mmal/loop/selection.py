"""A cycle's selection: draw the candidates, score them, let the strategy pick.

Scoring goes through the cycle's :class:`~mmal.scoring.Scorer`, once per
set the strategy asked about (candidates, labeled set), with every pass the
strategy declared. The strategy then sees arrays only.
"""
import csv
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from mmengine.dist import barrier, get_rank

from ..scoring import NUM_SAMPLES, Scorer
from ..strategies import BaseStrategy
from ..utils.atomic import atomic_write_text

SCORES_FILE = 'al_scores.csv'


def draw_candidates(pool_size: int, labeled: set[int], candidate_pool: int | str,
                    rng: np.random.Generator) -> np.ndarray:
    """Sorted pool positions of a cycle's candidates: ``candidate_pool`` unlabeled ones
    at random, or all (``'all'``)."""
    unlabeled = np.array([p for p in range(pool_size) if p not in labeled])
    size = len(unlabeled) if candidate_pool == 'all' else min(candidate_pool, len(unlabeled))
    return np.sort(rng.choice(unlabeled, size=size, replace=False))


class CycleSelection:
    """Scores candidates and lets the strategy select K of them.

    Args:
        scorer (Scorer): Scores pool positions with the cycle's model.
        strategy (BaseStrategy): The built strategy.
        log (callable): The caller's logger.
        work_dir (Path): A strategy's own training checkpoints go to
            ``work_dir / 'strategy'``.
    """

    def __init__(self, scorer: Scorer, strategy: BaseStrategy, log: Callable[[str], None],
                 work_dir: Path) -> None:
        self.scorer = scorer
        self.strategy = strategy
        self.log = log
        self.work_dir = Path(work_dir)

    def select(self, candidates: np.ndarray, labeled: list[int], k: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
        """The strategy's ``k`` picks (positions into ``candidates``) and every
        candidate's score.

        Rank 0 returns them; other ranks score their shards and get
        ``(None, None)``. A strategy that declares ``select_on_every_rank``
        gets the outputs on every rank and selects on every rank (rank 0's
        result is the one returned).
        """
        strategy = self.strategy
        every_rank = strategy.select_on_every_rank
        labeled_outputs = {NUM_SAMPLES: len(labeled)}
        if strategy.labeled_passes() and labeled:  # none before cycle 0 (initial_strategy)
            self.log(f'scoring the {len(labeled)} labeled samples')
            labeled_outputs = self.scorer.score(labeled, strategy.labeled_passes(),
                                                phase='score_labeled', every_rank=every_rank)
        candidate_outputs = {NUM_SAMPLES: len(candidates)}
        if strategy.candidate_passes():
            candidate_outputs = self.scorer.score(candidates.tolist(),
                                                  strategy.candidate_passes(),
                                                  with_labels=strategy.needs_labels,
                                                  every_rank=every_rank)
        if get_rank() != 0 and not every_rank:
            return None, None
        strategy.work_dir = self.work_dir / 'strategy'
        order, scores = strategy.select(candidate_outputs, labeled_outputs, k, rng)
        del candidate_outputs, labeled_outputs
        if every_rank:
            barrier()  # every rank is done with the spilled outputs rank 0 removes
        if get_rank() != 0:
            return None, None
        self.scorer.clear_spill()
        return np.asarray(order), np.asarray(scores, dtype=np.float64)


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
