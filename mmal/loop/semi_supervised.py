"""Semi-supervised training phases: the unlabeled rest of the pool trains the model too.

``active_learning.semi_supervised = dict(unlabeled_pipeline=[...], sampler=dict(...))``
with a teacher-student detector as the model (mmdet's ``SoftTeacher``
around a two-stage detector, inside ``LearningLossTwoStageDetector``, or
its plain mean teacher ``SemiBaseDetector`` around a single-stage one,
inside ``LearningLossDetector``):
every cycle's training Runner gets mmdet's semi-supervised data, made from
the pool alone (:func:`mmal.datasets.pool.semi_supervised_config`): the
cycle's labeled set with its training pipeline as the ``'sup'`` branch,
every other sample of the pool with ``unlabeled_pipeline`` (mmdet's weak
and strong views), in one ``ConcatDataset`` drawn by mmdet's
``MultiSourceSampler`` (``train_dataloader.batch_size`` images a batch,
split by ``source_ratio``). The config's ``train_dataloader.dataset`` stays
the pool, so no unlabeled set can silently join it, and the unlabeled
branch shrinks as the labeled set grows. Evaluation, scoring and selection
are unchanged: they read the model through its scoring API (the student by
default, ``model.score_on``). The rest is mmdet's: the pseudo-labels, their
losses, ``MeanTeacherHook``'s moving average.

Everything is checked before any work, each refusal naming the key and the
fix (:meth:`SemiSupervisedSettings.check_config`).
"""
from dataclasses import dataclass, field

from mmengine.config import Config
from mmengine.dist import get_world_size

from ..datasets import Pool, semi_supervised_config
from ..models.plain_models import is_teacher_student
from ..utils import ConfigError

#: mmdet's branch names: the labeled batch, the teacher's and the student's views.
BRANCHES = ('sup', 'unsup_teacher', 'unsup_student')
SAMPLERS = ('MultiSourceSampler', 'GroupMultiSourceSampler')
#: The wrappers that read a teacher-student pair: SoftTeacher (two-stage only) or mmdet's
#: plain mean teacher (``SemiBaseDetector``) around a single-stage detector.
WRAPPERS = ('LearningLossTwoStageDetector', 'LearningLossDetector')
EPOCH_LOOPS = ('EpochBasedTrainLoop', 'mmengine.runner.EpochBasedTrainLoop')
ITER_LOOPS = ('IterBasedTrainLoop', 'mmengine.runner.IterBasedTrainLoop')
POSE_REFUSAL = (
    'active_learning.semi_supervised applies to detection (mmdet\'s teacher-student '
    'detectors, SoftTeacher); this is a pose config: mmpose has no teacher-student '
    'estimator nor multi-branch pipelines, and a pseudo-label teacher for heatmaps / '
    'SimCC is not implemented. Remove active_learning.semi_supervised')


@dataclass(frozen=True)
class SemiSupervisedSettings:
    """``active_learning.semi_supervised``.

    Attributes:
        unlabeled_pipeline (list[dict]): The pipeline of the pool's
            unlabeled samples, as mmdet's semi-supervised configs write it:
            load the image, ``LoadEmptyAnnotations`` (never the labels), and
            a last ``MultiBranch`` giving ``unsup_teacher`` (weak) and
            ``unsup_student`` (strong) views with ``homography_matrix`` in
            their meta keys.
        sampler (dict): mmdet's ``MultiSourceSampler`` (or
            ``GroupMultiSourceSampler``) without its ``batch_size`` (the
            ``train_dataloader``'s): ``source_ratio=[labeled, unlabeled]``
            splits every batch, e.g. ``[1, 1]``.
    """

    unlabeled_pipeline: list
    sampler: dict = field(default_factory=lambda: dict(type='MultiSourceSampler',
                                                       source_ratio=[1, 1]))

    @classmethod
    def from_config(cls, section: dict | None) -> 'SemiSupervisedSettings | None':
        """Read and check the section's keys (None: supervised training)."""
        if section is None:
            return None
        key = 'active_learning.semi_supervised'
        if not isinstance(section, dict):
            raise ConfigError(f'{key}={section!r} must be a dict, e.g. dict('
                              'unlabeled_pipeline=[...], sampler=dict(type='
                              "'MultiSourceSampler', source_ratio=[1, 1]))")
        unknown = sorted(set(section) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f'{key} has unknown keys {unknown}; known keys: '
                              f'{sorted(cls.__dataclass_fields__)}')
        if 'unlabeled_pipeline' not in section:
            raise ConfigError(f'{key} is missing unlabeled_pipeline: the pipeline of the '
                              "pool's unlabeled samples (LoadImageFromFile, "
                              'LoadEmptyAnnotations, then MultiBranch with unsup_teacher and '
                              'unsup_student views), as configs/active_learning/'
                              'll_soft-teacher_faster-rcnn-tiny_synthetic-voc.py writes it')
        settings = cls(**dict(section))
        settings._check()
        return settings

    def _check(self) -> None:
        key = 'active_learning.semi_supervised'
        pipeline = self.unlabeled_pipeline
        if not isinstance(pipeline, list) or not pipeline or not all(
                isinstance(t, dict) and 'type' in t for t in pipeline):
            raise ConfigError(f'{key}.unlabeled_pipeline must be a non-empty list of '
                              'transforms (dicts with a type)')
        types = [t['type'] for t in pipeline]
        if 'LoadAnnotations' in types:
            raise ConfigError(f'{key}.unlabeled_pipeline loads annotations (LoadAnnotations): '
                              'the unlabeled samples\' labels must never reach training. Use '
                              "mmdet's LoadEmptyAnnotations")
        last = pipeline[-1]
        missing = [b for b in BRANCHES[1:] if b not in last]
        if last['type'] != 'MultiBranch' or missing or 'branch_field' not in last:
            raise ConfigError(f'{key}.unlabeled_pipeline must end with mmdet\'s MultiBranch '
                              f'(branch_field={list(BRANCHES)}, unsup_teacher=[weak views], '
                              f'unsup_student=[strong views]); it ends with {last!r}')
        if sorted(last['branch_field']) != sorted(BRANCHES):
            raise ConfigError(f'{key}.unlabeled_pipeline[-1].branch_field='
                              f'{last["branch_field"]!r} must be {list(BRANCHES)}: mmdet\'s '
                              'SemiBaseDetector reads those branches')
        sampler = self.sampler
        if not isinstance(sampler, dict) or sampler.get('type') not in SAMPLERS:
            raise ConfigError(f'{key}.sampler={sampler!r} must be mmdet\'s multi-source '
                              f'sampler, a dict with type one of {SAMPLERS} and '
                              'source_ratio=[labeled, unlabeled]')
        ratio = sampler.get('source_ratio')
        if not (isinstance(ratio, (list, tuple)) and len(ratio) == 2 and all(
                isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0
                for r in ratio)):
            raise ConfigError(f'{key}.sampler.source_ratio={ratio!r} must be two numbers > 0: '
                              'the labeled and the unlabeled share of each batch, e.g. [1, 1]')
        if 'batch_size' in sampler:
            raise ConfigError(f'{key}.sampler.batch_size: the batch size is '
                              'train_dataloader.batch_size; remove it from the sampler')

    # ------------------------------------------------------------ the config
    def check_config(self, cfg: Config, task: str) -> None:
        """Refuse, before any work, a config this cannot train (key and fix named)."""
        key = 'active_learning.semi_supervised'
        if task != 'detection':
            raise ConfigError(POSE_REFUSAL)
        model = cfg.model
        if not is_teacher_student(model):
            raise ConfigError(
                f'{key} trains a teacher-student detector, and model.detector.type='
                f'{(model.get("detector") or {}).get("type")!r} is not one: set model.detector '
                "to mmdet's dict(type='SoftTeacher' (two-stage) or 'SemiBaseDetector', "
                "detector=<the detector>, data_preprocessor=dict(type="
                "'MultiBranchDataPreprocessor', ...), semi_train_cfg=..., semi_test_cfg=...), "
                'or remove the key')
        if model.get('type') not in WRAPPERS:
            raise ConfigError(
                f'model.type={model.get("type")!r} with a teacher-student detector: '
                f'semi-supervised training is implemented for model.type one of {WRAPPERS} '
                '(SoftTeacher around a two-stage detector, mmdet\'s SemiBaseDetector around a '
                'single-stage one)')
        if (cfg.get('active_learning') or {}).get('box_level') is not None:
            raise ConfigError(f'{key} with active_learning.box_level: box-level labels are not '
                              'combined with semi-supervised training yet. Remove one of them')
        loop = (cfg.get('train_cfg') or {}).get('type')
        if loop not in ITER_LOOPS + EPOCH_LOOPS:
            raise ConfigError(
                f'train_cfg.type={loop!r}: semi-supervised training runs mmdet\'s '
                'MultiSourceSampler, which never ends an epoch, so it is iteration-based: '
                "train_cfg = dict(type='IterBasedTrainLoop', max_iters=...), or "
                "'EpochBasedTrainLoop' (each cycle then trains its labeled set's epochs "
                'as iterations)')
        if loop in EPOCH_LOOPS:
            check_epoch_schedule(cfg)
        hooks = [h.get('type') for h in cfg.get('custom_hooks') or []]
        if 'MeanTeacherHook' not in hooks:
            raise ConfigError("custom_hooks has no MeanTeacherHook: the teacher would never "
                              "follow the student. Add dict(type='MeanTeacherHook', "
                              'momentum=...) to custom_hooks')
        pipeline = cfg.train_dataloader.dataset.get('pipeline') or []
        if not pipeline or not str(pipeline[-1].get('type', '')).startswith('Pack'):
            raise ConfigError('train_dataloader.dataset.pipeline must end with its packing '
                              "step (PackDetInputs): it becomes the 'sup' branch of mmdet's "
                              'MultiBranch in semi-supervised training')
        batch = cfg.train_dataloader.batch_size
        labeled = self.labeled_per_batch(batch)
        unlabeled = batch - labeled
        if labeled < 2 or unlabeled < 1:
            raise ConfigError(
                f'train_dataloader.batch_size={batch} with {key}.sampler.source_ratio='
                f'{list(self.sampler["source_ratio"])} gives {labeled} labeled and {unlabeled} '
                'unlabeled images a batch; the ranking loss pairs labeled images, so at least '
                '2 labeled and 1 unlabeled are needed: raise batch_size or change source_ratio')

    def labeled_per_batch(self, batch_size: int) -> int:
        """The labeled images of a batch (mmdet's ``MultiSourceSampler`` rounds the other
        sources down and gives the first the rest)."""
        ratio = self.sampler['source_ratio']
        return batch_size - int(batch_size * ratio[1] / sum(ratio))

    def schedule(self, run_cfg: Config, num_labeled: int) -> None:
        """A training Runner's config trained on ``num_labeled`` labeled samples, made
        iteration-based in place when it counts epochs (:func:`epochs_as_iterations`: each
        epoch the labeled set's batches on this rank); an iteration-based one is left."""
        if run_cfg.train_cfg.get('type') not in EPOCH_LOOPS:
            return
        per_rank = -(-num_labeled // get_world_size())
        epochs_as_iterations(run_cfg, -(-per_rank // self.labeled_per_batch(
            run_cfg.train_dataloader.batch_size)))

    def check_plan(self, pool_size: int, labeled_at_last_cycle: int) -> None:
        """The last cycle still has unlabeled samples to train on."""
        if labeled_at_last_cycle >= pool_size:
            raise ConfigError(
                f'active_learning.semi_supervised: the last cycle labels {labeled_at_last_cycle} '
                f'of the pool\'s {pool_size} samples, leaving none unlabeled for it. Lower '
                'num_cycles, budget_per_cycle or initial_size')

    def train_data(self, labeled_cfg: dict, dataset_cfg: dict, pool: Pool,
                   labeled: list[int], batch_size: int) -> tuple[dict, dict]:
        """``(dataset, sampler)`` of a semi-supervised training Runner."""
        if len(set(labeled)) >= len(pool):
            raise ConfigError('active_learning.semi_supervised: every sample of the pool '
                              '(train_dataloader.dataset) is labeled, which leaves the '
                              'unlabeled branch empty. Remove the key to train on the labeled '
                              'set alone, or use a pool that lists unlabeled samples')
        dataset = semi_supervised_config(labeled_cfg, dataset_cfg, pool, labeled,
                                         self.unlabeled_pipeline, BRANCHES)
        return dataset, dict(self.sampler, batch_size=batch_size)


# ------------------------------------------------------------ the schedule
#: Hooks whose epoch key :func:`epochs_as_iterations` converts: (epoch key, iteration key).
CONVERTED_EPOCH_KEYS = {'LossPredictionStopGradientHook': ('stop_epoch', 'stop_iter')}


def check_epoch_schedule(cfg: Config) -> None:
    """Refuse an epoch-based config whose epochs :func:`epochs_as_iterations` cannot
    convert (a custom hook counting epochs, e.g. a pipeline switch)."""
    for hook in cfg.get('custom_hooks') or []:
        converted = CONVERTED_EPOCH_KEYS.get(hook.get('type'), ())
        keys = sorted(k for k in hook if 'epoch' in k and k not in converted)
        if keys:
            raise ConfigError(
                f'custom_hooks: {hook.get("type")} counts epochs ({", ".join(keys)}), and '
                'semi-supervised training is iteration-based (an epoch-based config trains '
                "its labeled epochs as iterations). Remove the hook or make train_cfg "
                "dict(type='IterBasedTrainLoop', max_iters=...) with the hook in iterations")


def epochs_as_iterations(cfg: Config, iters_per_epoch: int) -> None:
    """Make an epoch-based training config iteration-based, in place: ``max_epochs`` of
    ``iters_per_epoch`` iterations each.

    Semi-supervised batches come from mmdet's ``MultiSourceSampler``, which
    never ends an epoch. With ``iters_per_epoch`` the labeled set's batches
    per epoch (its labeled share of each batch), the labeled branch sees as
    many labeled batches as the supervised config trains, so the supervised
    runs of the same config are the semi-supervised arm's twin. The
    schedulers counted in epochs become mmengine's iteration-based ones
    (``convert_to_iter_based``, this ``epoch_length``: the same curve,
    stepped every iteration), and so do the checkpoint interval, the log's
    counter and the stop-gradient epoch.
    """
    epochs = cfg.train_cfg.max_epochs
    max_iters = epochs * iters_per_epoch
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
    schedulers = cfg.get('param_scheduler') or []
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        if scheduler.get('by_epoch', True):
            # mmengine's default end is the loop's max_epochs, 1 for an iteration loop
            scheduler.setdefault('end', epochs)
            scheduler.update(convert_to_iter_based=True, epoch_length=iters_per_epoch)
    checkpoint = (cfg.get('default_hooks') or {}).get('checkpoint')
    if checkpoint and checkpoint.get('by_epoch', True):
        interval = checkpoint.get('interval', -1)  # mmengine's default: no periodic saving
        checkpoint.update(by_epoch=False,
                          interval=interval * iters_per_epoch if interval > 0 else interval)
    cfg.log_processor = dict(cfg.get('log_processor') or {}, by_epoch=False)
    for hook in cfg.get('custom_hooks') or []:
        epoch_key, iter_key = CONVERTED_EPOCH_KEYS.get(hook.get('type'), (None, None))
        if hook.get(epoch_key) is not None:
            hook[iter_key] = hook.pop(epoch_key) * iters_per_epoch


def plain_config(value):
    """Config dicts and lists as plain ones, tuples as lists (as the JSON record has them)."""
    if isinstance(value, dict):
        return {k: plain_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_config(v) for v in value]
    return value
