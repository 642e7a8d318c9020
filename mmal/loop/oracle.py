"""Who labels the selected samples, and so what each cycle trains on.

``active_learning.oracle`` names it: ``'dataset'`` (:class:`DatasetOracle`,
the dataset's own annotations answer at once; benchmarks) or ``'human'``
(:class:`~mmal.loop.human.HumanOracle`, a batch for people and the run
stops until their labels are ingested). Both answer the experiment the same
questions, so the loop has no branch for either:

- ``labeled_ids(c, state)``: cycle ``c``'s labeled set;
- ``requeued(previous)``: samples the last batch left open, which go first;
- ``ask(c, picked, previous, cycle_dir, predict)``: hand the picks over,
  giving the picks to record and the cycle entry's extra fields
  (``predict(ids)``: the model's predictions, for a batch people correct);
- ``waiting(entry)`` / ``waiting_message(...)``: whether the run stops there;
- ``knows_labels``: whether the candidates' labels can be read (the
  ranking evaluation needs them);
- ``check_plan(recorded)``: the one plan check, before anything is written;
- ``initial_description``.
"""
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from ..datasets import Pool
from .human import HumanOracle
from .settings import ActiveLearningSettings
from .state import ExperimentState


class Oracle(Protocol):
    """What the experiment asks whoever labels its picks (see the module docstring)."""

    knows_labels: bool

    @property
    def initial_description(self) -> str: ...

    def check_plan(self, recorded: ExperimentState | None) -> None:
        """Refuse a plan the pool cannot hold, before any work (``recorded``: the
        experiment being resumed, if any)."""
        ...

    def labeled_ids(self, c: int, state: ExperimentState) -> list[str]: ...

    def requeued(self, previous: dict | None) -> list[str]: ...

    def ask(self, c: int, picked: list[dict], previous: dict | None, cycle_dir: Path,
            predict: Callable[[list[str]], list | None]) -> tuple[list[dict], dict]: ...

    def waiting(self, entry: dict) -> bool: ...


class DatasetOracle:
    """The dataset's own annotations as the oracle: every pick is labeled at once.

    Cycle 0 trains on ``initial_size`` samples drawn with the seed; each
    later cycle on the previous labeled set plus what it selected.

    Args:
        settings (ActiveLearningSettings): The experiment's settings.
        pool (Pool): The pool; its size is checked against the plan here.
    """

    knows_labels = True

    def __init__(self, settings: ActiveLearningSettings, pool: Pool) -> None:
        self.settings = settings
        self.pool = pool

    @property
    def initial_description(self) -> str:
        return str(self.settings.initial_size)

    def check_plan(self, recorded: ExperimentState | None) -> None:
        """Refuse a plan the pool cannot hold (initial_size + the budgets)."""
        self.settings.check_plan(len(self.pool))

    def labeled_ids(self, c: int, state: ExperimentState) -> list[str]:
        """Cycle ``c``'s labeled set: the seeded initial draw, then grown by each selection."""
        if c == 0:
            rng = np.random.default_rng([self.settings.seed, 0])
            picks = rng.choice(len(self.pool), size=self.settings.initial_size, replace=False)
            return [self.pool.ids[p] for p in sorted(picks)]
        previous = state.cycle(c - 1)
        return previous['labeled'] + [p['id'] for p in previous['selected']]

    @staticmethod
    def requeued(previous: dict | None) -> list[str]:
        return []

    def ask(self, c: int, picked: list[dict], previous: dict | None, cycle_dir: Path,
            predict: Callable[[list[str]], list | None]) -> tuple[list[dict], dict]:
        """The picks as they are, nothing more to record: their labels are on disk."""
        return picked, {}

    @staticmethod
    def waiting(entry: dict) -> bool:
        return False


def build_oracle(cfg, settings: ActiveLearningSettings, pool: Pool, task: str,
                 strategy) -> Oracle:
    """The oracle ``settings.oracle`` names, refusing a strategy or plan it cannot serve."""
    if settings.oracle == 'human':
        HumanOracle.check_config(strategy)
        return HumanOracle(cfg, settings, pool, task)
    return DatasetOracle(settings, pool)
