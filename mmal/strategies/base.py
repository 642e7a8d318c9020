"""One interface for every active-learning strategy.

A strategy is a pure function of the model's outputs on the candidates
(and on the labeled set) in the spirit of baal's heuristics: it declares
the outputs it needs, the scoring loop (:class:`~mmal.scoring.ScoreLoop`)
computes them, and :meth:`BaseStrategy.select` turns them into an order.
It never runs the model, trains the target model or touches state.
"""
from pathlib import Path

import numpy as np

from ..scoring import MAIN, NUM_SAMPLES, ScorePass

TASKS = ('detection', 'pose')


class BaseStrategy:
    """Scores unlabeled candidates and picks the K to label.

    Declaration (class attributes, or override :meth:`candidate_passes` /
    :meth:`labeled_passes` for views and committees):

    - ``outputs``: what the main pass over the candidates computes, among
      :data:`~mmal.models.learning_loss.SCORE_OUTPUTS`;
    - ``labeled_outputs``: the same over the labeled set (core-set's
      centers);
    - ``needs_labels``: the candidates are loaded with their labels
      (diagnostics only: a real pool has none);
    - ``tasks`` / ``task_reason``: the tasks the idea applies to, and why
      not the others;
    - ``needs_labeled_set``: the idea compares the labeled set with the
      rest, so it cannot choose the initial set (nothing is labeled yet);
    - ``select_on_every_rank``: under a distributed launch :meth:`select`
      runs on every rank, not on rank 0 alone, and every rank gets the
      gathered outputs (a strategy that trains a model of its own with
      DDP, whose collectives need every rank). Rank 0's selection is the
      one used and broadcast, so the others should compute the same.

    The outputs arrive as a dict: each requested output in sample order
    (``(N,)`` for per-sample numbers, ``(N, ...)`` for equal-shaped
    arrays, a list of N arrays for ragged ones such as boxes), an extra
    pass's outputs under ``'name/output'``, plus ``'num_samples'`` and,
    for detectors, ``'posterior_kind'`` (``'softmax'`` or ``'sigmoid'``).

    A strategy that trains a model of its own (VAAL) does it inside
    :meth:`select` and keeps its checkpoints in ``work_dir``, a folder of
    the cycle the loop sets before calling it, so a killed run resumes
    there.

    Args:
        task (str, optional): ``'detection'`` or ``'pose'``; given by the
            experiment at build time. A task the idea does not apply to is
            refused, naming why.
    """

    outputs: tuple[str, ...] = ()
    labeled_outputs: tuple[str, ...] = ()
    needs_labels: bool = False
    select_on_every_rank: bool = False
    needs_labeled_set: bool = False
    tasks: tuple[str, ...] | None = None
    task_reason: str = ''

    def __init__(self, task: str | None = None) -> None:
        self.task = task
        self.work_dir: Path | None = None
        if task is not None:
            self.check_task(task)

    def check_task(self, task: str) -> None:
        """Refuse a task the strategy's idea does not apply to, naming why."""
        if task not in TASKS:
            raise ValueError(f'{type(self).__name__}: unknown task {task!r}; one of {TASKS}')
        if self.tasks is not None and task not in self.tasks:
            reason = f': {self.task_reason}' if self.task_reason else ''
            raise ValueError(f'{type(self).__name__} does not apply to {task}, only to '
                             f'{", ".join(self.tasks)}{reason}')

    def check_config(self, cfg) -> None:
        """Refuse, before any training, an experiment config the strategy cannot work with.

        The experiment calls this once it is built; by default every config
        is fine. Raise :class:`~mmal.utils.ConfigError` naming the key and
        the fix.
        """

    def initial_set_refusal(self) -> str | None:
        """Why the strategy cannot choose the initial labeled set, or None if it can.

        That choice (``active_learning.initial_strategy``) is made before any
        training, on the model as built, with nothing labeled; the reason is
        read from the declaration.
        """
        passes = [*self.candidate_passes().values(), *self.labeled_passes().values()]
        outputs = {out for p in passes for out in p.outputs}
        if 'pred_loss' in outputs:
            return ("it reads the loss-prediction module's predicted loss, and before "
                    'cycle 0 that module is untrained: its output is noise')
        if self.needs_labels or 'target_loss' in outputs:
            return ("it reads the candidates' labels, which the initial set is chosen to "
                    'acquire')
        if any(p.snapshots for p in passes):
            return ("its committee is a cycle's last training checkpoints, and nothing has "
                    'trained yet')
        if self.needs_labeled_set:
            return 'it compares the labeled set with the rest, and nothing is labeled yet'
        return None

    # --------------------------------------------------------- declaration
    def candidate_passes(self) -> dict[str, ScorePass]:
        """The passes over the candidates (``MAIN`` is the one whose outputs keep their names)."""
        return {MAIN: ScorePass(tuple(self.outputs))} if self.outputs else {}

    def labeled_passes(self) -> dict[str, ScorePass]:
        """The passes over the labeled set."""
        return {MAIN: ScorePass(tuple(self.labeled_outputs))} if self.labeled_outputs else {}

    # ------------------------------------------------------------ selection
    def select(self, candidate_outputs: dict, labeled_outputs: dict, k: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the K candidates to label, best first, and every candidate's score.

        Top K of :meth:`scores` by default, ties broken by ``rng``, never by
        position. Strategies whose picks depend on each other (k-center,
        k-means++) override this.
        """
        scores = np.asarray(self.scores(candidate_outputs, labeled_outputs), dtype=np.float64)
        if scores.shape != (candidate_outputs[NUM_SAMPLES],):
            raise ValueError(f'{type(self).__name__} gave {scores.shape} scores for '
                             f'{candidate_outputs[NUM_SAMPLES]} candidates')
        return top_k(scores, k, rng, user=type(self).__name__), scores

    def scores(self, candidate_outputs: dict, labeled_outputs: dict) -> np.ndarray:
        """One score per candidate, ``(N,)``; higher is labeled first."""
        raise NotImplementedError(f'{type(self).__name__} must define scores() or select()')


def top_k(scores: np.ndarray, k: int, rng: np.random.Generator,
          user: str = 'selection') -> np.ndarray:
    """Positions of the K highest scores, best first, ties in ``rng``'s random order."""
    if k > len(scores):
        raise ValueError(f'{user}: cannot select {k} of {len(scores)} candidates')
    if not np.all(np.isfinite(scores)):
        bad = int(np.sum(~np.isfinite(scores)))
        raise FloatingPointError(f'{user} produced {bad} non-finite scores')
    tie_break = rng.permutation(len(scores))
    return np.lexsort((tie_break, -scores))[:k]


def labeled_rows(strategy: BaseStrategy, labeled_outputs: dict, key: str = 'features'):
    """The labeled set's ``key`` output, or None when nothing is labeled yet.

    Before cycle 0 (``active_learning.initial_strategy``) the labeled set is
    empty and is not scored; the outputs then hold only ``num_samples`` 0.
    """
    if labeled_outputs.get(NUM_SAMPLES) == 0:
        return None
    require(strategy, labeled_outputs, key, where='labeled-set')
    return labeled_outputs[key]


def require(strategy: BaseStrategy, outputs: dict, *keys: str, where: str = 'candidate') -> None:
    """A clear error when the loop did not hand over a declared output."""
    missing = [key for key in keys if key not in outputs]
    if missing:
        raise ValueError(f'{type(strategy).__name__} needs the {where} outputs {missing}; '
                         f'got {sorted(k for k in outputs if k != NUM_SAMPLES)}')
