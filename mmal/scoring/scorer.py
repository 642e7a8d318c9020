"""The one scoring service: a model's outputs over pool samples, by position.

The experiment's selection, ``al_query``, the serving queue, the human
oracle's predictions and the ranking evaluation all score through a
:class:`Scorer`: a Runner (built by the caller for the checkpoint it
scores) whose test loop is :class:`~.score_loop.ScoreLoop`, over a
test-mode loader of the pool samples asked for.
"""
import dataclasses
import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mmengine.config import Config

from ..datasets import Pool, deterministic_pipeline, leaf_configs, scoring_config
from ..models.learning_loss import LABEL_OUTPUTS
from ..utils import ConfigError
from .passes import ScorePass
from .score_loop import MAIN
from .store import clear_spill

#: Where a scorer's outputs past ``spill_mb`` live until they are used.
SPILL_FOLDER = 'score_spill'


@dataclass(frozen=True)
class ScoringSettings:
    """How scoring passes load and keep their data (``active_learning.score_*``).

    Attributes:
        batch_size (int): ``score_batch_size``.
        num_workers (int): ``score_num_workers``.
        spill_mb (float, optional): ``score_spill_mb``: an output over the
            scored set bigger than this many MiB is memory-mapped
            (:mod:`.store`); None keeps all in memory.
        target_loss_pipeline (list, optional): the pipeline that loads
            labels for true losses; by default the training pipeline
            without its random augmentations.
        fp16 (bool): ``test_cfg.fp16``: score under autocast.
    """

    batch_size: int = 16
    num_workers: int = 2
    spill_mb: float | None = 1024
    target_loss_pipeline: list | None = None
    fp16: bool = False

    #: The ``active_learning`` keys these settings are read from.
    KEYS = dict(batch_size='score_batch_size', num_workers='score_num_workers',
                spill_mb='score_spill_mb', target_loss_pipeline='target_loss_pipeline')

    @classmethod
    def from_config(cls, cfg: Config, section: dict | None = None) -> 'ScoringSettings':
        """From ``section`` (default: ``cfg.active_learning``) and ``cfg.test_cfg``.

        Raises:
            ConfigError: Naming the ``active_learning`` key and the fix.
        """
        if section is None:
            section = cfg.get('active_learning') or {}
        values = {name: section[key] for name, key in cls.KEYS.items() if key in section}
        settings = cls(**values, fp16=bool((cfg.get('test_cfg') or {}).get('fp16')))
        settings.check()
        return settings

    def check(self) -> None:
        k = self.KEYS
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or (
                self.batch_size < 1):
            raise ConfigError(f'active_learning.{k["batch_size"]}={self.batch_size!r} must be '
                              'an integer >= 1')
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ConfigError(f'active_learning.{k["num_workers"]}={self.num_workers!r} '
                              'must be an integer >= 0')
        if self.spill_mb is not None and (
                not isinstance(self.spill_mb, (int, float)) or self.spill_mb < 0):
            raise ConfigError(f'active_learning.{k["spill_mb"]}={self.spill_mb!r} must be '
                              'a number of MiB >= 0, or None to keep scoring outputs in memory')
        if self.target_loss_pipeline is not None and not isinstance(
                self.target_loss_pipeline, (list, tuple)):
            raise ConfigError(f'active_learning.{k["target_loss_pipeline"]} must be a list of '
                              f'transforms or None, got {self.target_loss_pipeline!r}')


class Scorer:
    """Runs scoring passes over pool samples on a Runner the caller builds.

    Args:
        cfg (Config): The model's config (its train and test datasets and
            pipelines).
        pool (Pool): The pool the positions index.
        settings (ScoringSettings): Batch size, workers, spill, pipelines.
        make_runner (callable): ``(phase, test_dataloader, test_cfg) ->
            Runner`` loading the weights to score with.
        work_dir (Path): The spill folder goes under it.
    """

    def __init__(self, cfg: Config, pool: Pool, settings: ScoringSettings,
                 make_runner: Callable, work_dir: Path) -> None:
        self.cfg = cfg
        self.pool = pool
        self.settings = settings
        self.make_runner = make_runner
        self.work_dir = Path(work_dir)

    @property
    def spill_dir(self) -> Path:
        return self.work_dir / SPILL_FOLDER

    def score(self, positions: Sequence[int], passes: dict[str, ScorePass],
              phase: str = 'score', with_labels: bool = False,
              every_rank: bool = False) -> dict | None:
        """Run ``passes`` over the given (sorted) pool positions.

        The outputs on rank 0 (every rank with ``every_rank``), None elsewhere.
        A pass asking for an output read from the labels (``target_loss``;
        ``gt_boxes``: a strategy measuring the model on the labeled set)
        loads the set with them, as ``with_labels`` does.
        """
        with_labels = with_labels or any(LABEL_OUTPUTS.intersection(p.outputs)
                                         for p in passes.values())
        spill_mb = self.settings.spill_mb
        runner = self.make_runner(
            phase, self.loader_cfg(list(positions), with_labels),
            dict(type='ScoreLoop', fp16=self.settings.fp16,
                 passes={name: dataclasses.asdict(p) for name, p in passes.items()},
                 spill_dir=str(self.spill_dir / phase),
                 spill_bytes=None if spill_mb is None else int(spill_mb * 2**20),
                 every_rank=every_rank))
        outputs = runner.test()
        del runner
        gc.collect()
        return outputs

    def predictions(self, ids: Sequence[str]) -> list | None:
        """The model's predictions of ``ids``, in that order, on rank 0 (None elsewhere).

        A scoring pass on every rank (call it on every rank), in pool order.
        """
        position = {sample_id: p for p, sample_id in enumerate(self.pool.ids)}
        positions = [position[i] for i in ids]
        outputs = self.score(sorted(positions), {MAIN: ScorePass(('predictions',))},
                             phase='predict')
        if outputs is None:
            return None
        by_position = dict(zip(sorted(positions), outputs['predictions']))
        return [by_position[p] for p in positions]

    def clear_spill(self) -> None:
        clear_spill(self.spill_dir)

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
            batch_size=s.batch_size, num_workers=s.num_workers,
            persistent_workers=False, sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=scoring_config(self.cfg.train_dataloader.dataset, self.pool, positions,
                                   pipeline, with_labels=with_labels))
        if self.cfg.test_dataloader.get('collate_fn'):
            loader['collate_fn'] = self.cfg.test_dataloader.collate_fn
        return loader
