"""The ``active_learning`` section of a config, checked before any work."""
from dataclasses import MISSING, asdict, dataclass, field

from ..annotation.settings import AnnotationSettings
from ..datasets.label_checks import ACTIONS as BAD_LABEL_ACTIONS
from ..datasets.label_checks import DEFAULT_TOLERANCE
from ..scoring import ScoringSettings
from ..utils import ConfigError
from .box_level import BoxLevelSettings
from .cost import AnnotationCost
from .semi_supervised import SemiSupervisedSettings, plain_config

MODEL_INITS = ('reset', 'continue')
ORACLES = ('dataset', 'human')


@dataclass(frozen=True)
class ActiveLearningSettings:
    """One pool-based experiment, as the config's ``active_learning`` dict says.

    Attributes:
        initial_size (int): Samples labeled before the first cycle, drawn at
            random with ``seed`` (or chosen by ``initial_strategy``).
        initial_strategy (str | dict): How the initial set is chosen:
            ``'random'`` (the seeded draw), or the config of a strategy that
            needs nothing trained (``TypiClustStrategy``,
            ``ProbCoverStrategy``, ``CoreSetStrategy``, ...): it scores the
            candidates (``candidate_pool``) with the model as built, before
            cycle 0, and picks ``initial_size``. A pretrained backbone's
            features are then meaningful; a model trained from scratch
            gives random features and a choice close to random.
        budget_per_cycle (int | float): What the oracle labels after each
            cycle but the last, in the unit of ``cost``: K samples (images),
            or a number of boxes or seconds (then the strategy's picks are
            labeled best first until it is spent, see :mod:`mmal.loop.cost`).
        box_level (dict, optional): Box-level queries (detection; the dataset
            or people answer): inside each selected image the most uncertain
            detections are asked, confident ones become pseudo-labels and
            the rest are ignored by the loss
            (:class:`mmal.loop.box_level.BoxLevelSettings`); None (default)
            labels selected images whole.
        cost (str | dict): The unit of budgets and curves: ``'images'``
            (persons for pose), ``'boxes'`` (joints for pose) or
            ``'seconds'``, or a dict with ``unit`` and the seconds model's
            ``per_image``, ``per_box``, ``per_verification``
            (:class:`mmal.loop.cost.AnnotationCost`). Every cycle records
            its labeled set's cost in all three units.
        num_cycles (int): Train/evaluate cycles. The labeled set grows
            ``num_cycles - 1`` times.
        candidate_pool (int | str): Size of the random subset of the
            unlabeled pool scored each cycle (the paper scores 10,000), or
            ``'all'``.
        model_init (str): ``'reset'``: every cycle trains from the initial
            weights; ``'continue'``: from the previous cycle's final weights.
        strategy (dict): Config of the strategy, e.g.
            ``dict(type='LearningLossStrategy')``.
        score_batch_size (int): Batch size of the scoring pass.
        score_num_workers (int): Dataloader workers of the scoring pass.
        seed (int): Seed of the initial draw, the candidate subsets, tie
            breaking and of every cycle's training.
        ranking_eval_size (int): After each selection, how many candidates
            (a fixed random sample) are scored once more with their labels
            to measure how well the scores rank their true losses (the
            paper's Fig. 5, see :mod:`mmal.loop.ranking`); 0 turns it off.
        ranking_references (list[dict]): Strategies whose scores the
            ranking evaluation measures beside the running one's (default:
            Learning Loss's predicted loss and entropy, as the paper plots).
        stopping (dict): The stopping signal after each selection
            (:class:`mmal.loop.stopping.StoppingSettings`: ``stop_set_size``,
            ``threshold``, ``patience``, ...); ``dict(stop_set_size=0)``
            turns it off.
        target_loss_pipeline (list, optional): The pipeline that loads and
            encodes labels for true losses (ranking evaluation and
            ``OracleLossStrategy``); by default the training pipeline without
            its random augmentations.
        oracle (str): ``'dataset'``: the dataset's own labels answer every
            selection (benchmarks); ``'human'``: each selection is written as
            a batch for a labeling tool and the run stops until
            ``tools/al_ingest.py`` brings the labels back. With people, the
            pool is a dataset that holds unlabeled samples
            (:mod:`mmal.datasets.partial`, :mod:`mmal.datasets.partial_coco`),
            cycle 0 trains on what is labeled on disk and ``initial_size``
            is not used.
        annotation (dict): The batches for people (``oracle='human'``), see
            :class:`mmal.annotation.AnnotationSettings`.
        score_spill_mb (int, optional): A scoring output (features,
            gradient embeddings, ...) whose array over the scored set
            exceeds this many MiB is memory-mapped in the cycle's
            ``score_spill/`` folder in a compact dtype, so memory stays flat
            over big pools (:mod:`mmal.scoring.store`); None keeps all in
            memory.
        bad_labels (str): What to do with boxes of zero or negative size,
            swapped corners, or boxes and joints outside their image
            (:mod:`mmal.datasets.label_checks`), in the pool, the test set
            and what people send back: ``'refuse'`` them before any work,
            listing each; ``'drop'`` them; or ``'clip'`` them to the image
            (dropping what stays empty). Each kept fix is logged with counts.
        label_tolerance (float): Pixels beyond the image border accepted as
            rounding by that check.
        semi_supervised (dict, optional): Train every cycle semi-supervised:
            the labeled set and the rest of the pool, with a teacher-student
            model (:class:`mmal.loop.semi_supervised.SemiSupervisedSettings`:
            ``unlabeled_pipeline``, ``sampler``); None (default) trains on
            the labeled set alone.
    """

    budget_per_cycle: int | float
    num_cycles: int
    initial_size: int | None = None
    initial_strategy: str | dict = 'random'
    candidate_pool: int | str = 'all'
    model_init: str = 'reset'
    strategy: dict = field(default_factory=lambda: dict(type='LearningLossStrategy'))
    score_batch_size: int = 16
    score_num_workers: int = 2
    seed: int = 0
    ranking_eval_size: int = 500
    ranking_references: list = field(default_factory=lambda: [
        dict(type='LearningLossStrategy'), dict(type='EntropyStrategy')])
    stopping: dict = field(default_factory=dict)
    target_loss_pipeline: list | None = None
    oracle: str = 'dataset'
    annotation: dict = field(default_factory=dict)
    score_spill_mb: int | None = 1024
    bad_labels: str = 'refuse'
    label_tolerance: float = DEFAULT_TOLERANCE
    cost: str | dict = 'images'
    box_level: dict | None = None
    semi_supervised: dict | None = None

    @classmethod
    def from_config(cls, section: dict | None) -> 'ActiveLearningSettings':
        """Read and check ``cfg.active_learning``.

        Raises:
            ConfigError: Naming the key, the value and the fix.
        """
        if section is None:
            raise ConfigError('the config has no `active_learning` section; add e.g. '
                              'active_learning = dict(initial_size=1000, budget_per_cycle=1000, '
                              'num_cycles=10, candidate_pool=10000, '
                              "strategy=dict(type='LearningLossStrategy'))")
        section = dict(section)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f'active_learning has unknown keys {unknown}; known keys: '
                              f'{sorted(known)}')
        required = ('budget_per_cycle', 'num_cycles') if section.get('oracle') == 'human' else (
            'initial_size', 'budget_per_cycle', 'num_cycles')
        missing = [k for k in required if k not in section]
        if missing:
            raise ConfigError(f'active_learning is missing {missing}')
        for key in ('strategy', 'annotation', 'initial_strategy', 'cost', 'box_level'):
            if isinstance(section.get(key), dict):
                section[key] = dict(section[key])
        if isinstance(section.get('semi_supervised'), dict):
            # plain lists (pipelines hold tuples), as the record's JSON gives them back
            section['semi_supervised'] = plain_config(section['semi_supervised'])
        settings = cls(**section)
        settings._check()
        return settings

    def _check(self) -> None:
        keys = ('budget_per_cycle', 'num_cycles')
        if self.oracle == 'dataset':
            keys = ('initial_size', *keys)
        elif self.initial_size is not None:
            raise ConfigError(f'active_learning.initial_size={self.initial_size!r} is not used '
                              "with oracle='human': cycle 0 trains on the samples labeled on "
                              'disk. Remove it (e.g. --cfg-options active_learning.'
                              'initial_size=None)')
        unit = AnnotationCost.from_config(self.cost).unit
        for key in keys:
            value = getattr(self, key)
            if key == 'budget_per_cycle' and unit != 'images':
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                    raise ConfigError(f'active_learning.budget_per_cycle={value!r} must be a '
                                      f'number of {unit} > 0')
            elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f'active_learning.{key}={value!r} must be an integer >= 1')
        BoxLevelSettings.from_config(self.box_level)
        SemiSupervisedSettings.from_config(self.semi_supervised)
        if unit != 'images' and self.oracle == 'human':
            raise ConfigError(
                f'active_learning.cost={self.cost!r} with oracle=\'human\': a budget in {unit} '
                'is spent by what each pick costs, which is known only once people have '
                "labeled it. Budget in images (cost='images', the default); the record still "
                'counts the boxes and seconds of what they label')
        if not isinstance(self.ranking_eval_size, int) or self.ranking_eval_size < 0:
            raise ConfigError(f'active_learning.ranking_eval_size={self.ranking_eval_size!r} '
                              'must be an integer >= 0 (0 turns the ranking evaluation off)')
        if not isinstance(self.ranking_references, (list, tuple)) or not all(
                isinstance(r, dict) and 'type' in r for r in self.ranking_references):
            raise ConfigError('active_learning.ranking_references='
                              f'{self.ranking_references!r} must be a list of strategy '
                              "configs, e.g. [dict(type='EntropyStrategy')]")
        ScoringSettings.from_config({}, asdict(self))  # the score_* keys, checked there
        if self.candidate_pool != 'all' and (
                not isinstance(self.candidate_pool, int) or self.candidate_pool < 1):
            raise ConfigError(f'active_learning.candidate_pool={self.candidate_pool!r} must '
                              "be an integer >= 1 or 'all'")
        if self.bad_labels not in BAD_LABEL_ACTIONS:
            raise ConfigError(f'active_learning.bad_labels={self.bad_labels!r} must be one of '
                              f'{BAD_LABEL_ACTIONS}')
        if not isinstance(self.label_tolerance, (int, float)) or self.label_tolerance < 0:
            raise ConfigError(f'active_learning.label_tolerance={self.label_tolerance!r} must '
                              'be a number of pixels >= 0')
        if self.oracle not in ORACLES:
            raise ConfigError(f'active_learning.oracle={self.oracle!r} must be one of {ORACLES}')
        AnnotationSettings.from_dict(self.annotation)
        if self.model_init not in MODEL_INITS:
            raise ConfigError(f'active_learning.model_init={self.model_init!r} must be one '
                              f'of {MODEL_INITS}')
        if not isinstance(self.strategy, dict) or 'type' not in self.strategy:
            raise ConfigError(f'active_learning.strategy={self.strategy!r} must be a dict '
                              "with a 'type', e.g. dict(type='RandomStrategy')")
        self._check_initial_strategy()

    def _check_initial_strategy(self) -> None:
        initial = self.initial_strategy
        if initial == 'random':
            return
        if not isinstance(initial, dict) or 'type' not in initial:
            raise ConfigError(f'active_learning.initial_strategy={initial!r} must be '
                              "'random' or a strategy config with a 'type', e.g. "
                              "dict(type='TypiClustStrategy')")
        if self.oracle == 'human':
            raise ConfigError(f'active_learning.initial_strategy={initial!r} with '
                              "oracle='human': cycle 0 trains on the samples labeled on disk, "
                              'so the run chooses no initial set. Remove it; to choose that '
                              'first set, score the pool with tools/al_query.py --strategy '
                              f"{initial['type']} and a checkpoint (e.g. a pretrained model's)")

    def check_plan(self, pool_size: int, labeled_on_disk: int = 0) -> None:
        """Refuse a plan the pool cannot satisfy, naming the numbers."""
        if pool_size == 0:
            raise ConfigError('the training dataset (train_dataloader.dataset) is empty: '
                              'there is no pool to label')
        initial = self.initial_size if self.oracle == 'dataset' else labeled_on_disk
        if self.oracle == 'human' and initial == 0:
            raise ConfigError("oracle='human' needs samples labeled on disk to train cycle 0, "
                              'and the training dataset has none: label a first set (e.g. '
                              'with tools/al_query.py and a random strategy), ingest it, then '
                              'start')
        if self.oracle == 'human' and initial == pool_size:
            raise ConfigError("oracle='human' needs unlabeled samples in the pool, and every "
                              'sample of train_dataloader.dataset is labeled: use a dataset that '
                              'lists unlabeled samples too (PartiallyLabeledVOCDataset, '
                              'PartiallyLabeledMpiiDataset, PartiallyLabeledCocoDataset, '
                              'PartiallyLabeledCocoPoseDataset)')
        in_images = self.budget_unit == 'images'
        needed = initial + (self.num_cycles - 1) * self.budget_per_cycle * in_images
        if needed > pool_size:
            raise ConfigError(
                f'impossible plan: initial_size ({initial}) + (num_cycles - 1) '
                f'({self.num_cycles - 1}) x budget_per_cycle ({self.budget_per_cycle}) = '
                f'{needed} samples, but the pool has {pool_size}. Lower active_learning.'
                'num_cycles, budget_per_cycle or initial_size')
        semi = SemiSupervisedSettings.from_config(self.semi_supervised)
        if semi is not None:
            semi.check_plan(pool_size, needed if in_images else initial)
        if (self.candidate_pool != 'all' and self.initial_strategy != 'random'
                and initial > self.candidate_pool):
            raise ConfigError(
                f'active_learning.initial_size ({initial}) > candidate_pool '
                f'({self.candidate_pool}): initial_strategy picks the initial set from the '
                'candidates. Raise candidate_pool (or set it to \'all\') or lower initial_size')
        if (in_images and self.candidate_pool != 'all'
                and self.budget_per_cycle > self.candidate_pool):
            raise ConfigError(
                f'active_learning.budget_per_cycle ({self.budget_per_cycle}) > '
                f'candidate_pool ({self.candidate_pool}): cannot pick K samples from fewer '
                'candidates. Raise candidate_pool or lower budget_per_cycle')

    @property
    def budget_unit(self) -> str:
        return AnnotationCost.from_config(self.cost).unit

    def to_dict(self) -> dict:
        return asdict(self)

    def differences(self, recorded: dict) -> list[str]:
        """Human-readable differences between these settings and recorded ones."""
        mine = self.to_dict()
        # A key added after the state was written counts at its default.
        defaults = {k: f.default_factory() if f.default_factory is not MISSING else f.default
                    for k, f in self.__dataclass_fields__.items()}
        recorded = {**{k: v for k, v in defaults.items() if v is not MISSING}, **recorded}
        return [f'active_learning.{key}: state has {recorded.get(key)!r}, config has '
                f'{mine.get(key)!r}' for key in sorted(set(mine) | set(recorded))
                if mine.get(key) != recorded.get(key)]
