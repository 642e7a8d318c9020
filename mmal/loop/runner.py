"""The Runner each phase of a cycle builds, and its config.

Every Runner of MMAL (a cycle's training, evaluation and scoring passes,
``tools/al_query.py``'s scoring, the serving queue's retraining) is built
from the model config by :func:`phase_config`, so they agree on what a
phase changes in it.
"""
import copy
import logging
from collections.abc import Callable
from pathlib import Path

from mmengine.config import Config
from mmengine.dist import get_world_size
from mmengine.runner import Runner

from ..datasets.label_checks import DEFAULT_TOLERANCE
from ..datasets.label_transforms import pipeline_with_label_fixes, with_label_fixes
from ..hooks import EpochSeedHook, StopOnNonFiniteLossHook


class CycleRunner(Runner):
    """mmengine's Runner, whose set-up report goes to its log file only.

    A cycle builds up to four Runners (train, evaluate, score, rank);
    mmengine prints the environment, the whole config and the hook table
    while building each, which buries the experiment's one-line-per-phase
    log on the console. Here the console handlers show only warnings until
    the Runner is built; the report still lands in the Runner's own log
    file in the cycle's work dir, and training and testing log as usual.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._quieted: list[tuple[logging.Handler, int]] = []
        try:
            super().__init__(*args, **kwargs)
        finally:
            for handler, level in self._quieted:
                handler.setLevel(level)

    def init_weights(self) -> None:
        """Give the model its initial weights (``init_cfg``: a pretrained backbone), as
        ``train()`` does before its first iteration.

        mmengine initialises them in ``train()`` only, so a test loop on a model
        no checkpoint is loaded into would see the layers' constructor
        defaults, not the pretrained backbone. Call it on every rank: rank 0's
        weights are broadcast.
        """
        self._init_model_weights()

    def _log_env(self, env_cfg: dict) -> None:
        # Kept private: Runner.__init__ has no public hook between creating the
        # logger and printing the report; this is its first call after the logger
        # exists, so the console is quieted from here.
        for handler in self.logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                    handler, logging.FileHandler):
                self._quieted.append((handler, handler.level))
                handler.setLevel(max(logging.WARNING, handler.level))
        super()._log_env(env_cfg)


def phase_config(cfg: Config, phase: str, work_dir: str | Path, *,
                 train_dataset: dict | None = None, num_train: int | None = None,
                 train_sampler: dict | None = None,
                 test: tuple[dict, dict] | None = None, launcher: str = 'none',
                 resume: bool = False, load_from: str | None = None, seed: int | None = None,
                 name: str | None = None, log: Callable[[str], None] | None = None) -> Config:
    """The config of one phase's Runner: a copy of ``cfg`` run in ``work_dir``.

    The ``active_learning`` section goes (mmengine does not know it), and so
    does validation: every phase evaluates, if at all, with the test loop,
    and a validation at the end of training would repeat the evaluation.
    Its ``bad_labels`` fix goes into the datasets' pipelines, and a training
    stops at the first non-finite loss (:class:`~mmal.hooks.StopOnNonFiniteLossHook`).

    Args:
        cfg (Config): The model config (it is not changed).
        phase (str): ``'train'`` trains reproducibly (see
            :func:`reproducible_training`) on ``num_train`` samples; any
            other name runs the test loop.
        work_dir (str | Path): The Runner's work dir (checkpoints, logs).
        train_dataset (dict, optional): Replaces
            ``train_dataloader.dataset`` (the labeled subset).
        num_train (int, optional): How many samples ``train_dataset``
            holds; needed to train.
        train_sampler (dict, optional): Replaces the training sampler (and
            drops the batch sampler): semi-supervised training's multi-source
            sampler (:mod:`~mmal.loop.semi_supervised`), whose batches are
            always full.
        test (tuple[dict, dict], optional): ``(test_dataloader, test_cfg)``
            of a scoring pass (whose test loop is ``ScoreLoop``).
        launcher (str): The process group's launcher.
        resume (bool): Resume from the last checkpoint in ``work_dir``.
        load_from (str, optional): The weights to start from.
        seed (int, optional): ``randomness.seed``; None keeps the config's.
        name (str, optional): The Runner's ``experiment_name``.
        log (callable, optional): Told when a last training batch of one
            sample is dropped (see :func:`no_single_sample_batch`).
    """
    cfg = copy.deepcopy(cfg)
    section = cfg.pop('active_learning', None) or {}
    if train_dataset is not None:
        cfg.train_dataloader.dataset = train_dataset
    if train_sampler is not None:
        cfg.train_dataloader.sampler = train_sampler
        cfg.train_dataloader.batch_sampler = None
    if test is not None:
        cfg.test_dataloader, cfg.test_cfg = test
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    fix_bad_labels(cfg, section.get('bad_labels', 'refuse'),
                   section.get('label_tolerance', DEFAULT_TOLERANCE))
    if phase == 'train':
        if num_train is None:
            raise ValueError("phase_config(phase='train') needs num_train, the number of "
                             'training samples')
        reproducible_training(cfg)
        add_hook(cfg, 'StopOnNonFiniteLossHook', StopOnNonFiniteLossHook)
        if train_sampler is None and no_single_sample_batch(cfg, num_train) and log is not None:
            log(f'{num_train} labeled samples would leave a last training batch of one, '
                'which BatchNorm refuses: it is dropped')
    cfg.work_dir = str(work_dir)
    cfg.launcher = launcher
    cfg.resume = resume
    cfg.load_from = load_from
    if seed is not None:
        cfg.randomness = dict(cfg.get('randomness') or {}, seed=seed)
    if name is not None:
        cfg.experiment_name = name
    return cfg


def reproducible_training(cfg: Config) -> None:
    """Make a training resumed from a checkpoint repeat the uninterrupted one.

    :class:`~mmal.hooks.EpochSeedHook` makes each epoch's random streams a
    function of (seed, epoch, rank); it needs the data workers started anew
    each epoch, so persistent workers are turned off (their start costs a
    moment per epoch).
    """
    cfg.train_dataloader.persistent_workers = False
    add_hook(cfg, 'EpochSeedHook', EpochSeedHook)


def add_hook(cfg: Config, name: str, hook_class: type) -> None:
    """Append ``dict(type=name)`` to ``custom_hooks`` unless the config has it."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') in (name, hook_class) for h in hooks):
        cfg.custom_hooks = hooks + [dict(type=name)]


def fix_bad_labels(cfg: Config, action: str, tolerance: float) -> None:
    """Make the training and test datasets drop or clip bad labels while loading
    (``active_learning.bad_labels``; with ``'refuse'`` the experiment refused
    them before any work and nothing changes)."""
    for key in ('train_dataloader', 'test_dataloader'):
        if cfg.get(key) and cfg[key].get('dataset'):
            cfg[key].dataset = with_label_fixes(cfg[key].dataset, action, tolerance)
    # A hook that swaps the training pipeline mid-run (mmdet's PipelineSwitchHook,
    # RTMDet / YOLOX's last epochs) must keep the fix too.
    for hook in cfg.get('custom_hooks') or []:
        if hook.get('switch_pipeline'):
            hook['switch_pipeline'] = pipeline_with_label_fixes(hook['switch_pipeline'],
                                                                action, tolerance)


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
