"""A plain mmdet / mmpose model config, under the Learning Loss wrapper that scores it.

Every strategy reads a wrapper's ``score_step`` (posteriors, heatmaps,
tapped features), so a model trained with mmdet's or mmpose's own config has
to sit in a wrapper to be scored. A user with that config and its checkpoint
should not rewrite the config for it: :func:`wrap_plain_model` puts the model
under the wrapper of its kind, with the taps and channel counts found from
the model (the wrappers' defaults), and the wrapper's load hook reads the
plain checkpoint's keys into ``task_model``. The loss-prediction module is
then untrained: strategies that read it are refused where such a model is
scored (:func:`mmal.service.query.check_checkpoint`).
"""
import copy

from mmdet.models.detectors import (
    DetectionTransformer,
    SemiBaseDetector,
    SingleStageDetector,
    TwoStageDetector,
)
from mmdet.registry import MODELS as DET_MODELS
from mmpose.models.pose_estimators import BottomupPoseEstimator, TopdownPoseEstimator
from mmpose.registry import MODELS as POSE_MODELS

from ..utils import ConfigError
from .heads import with_per_image_loss_head
from .learning_loss import LearningLossModel
from .pose.learning_loss_pose_estimator import BOTTOM_UP_REFUSAL

#: ``(plain model class, wrapper type, the wrapper's key for the plain config)``,
#: most specific first.
_WRAPPERS = (
    (SingleStageDetector, 'LearningLossDetector', 'detector'),
    (TwoStageDetector, 'LearningLossTwoStageDetector', 'detector'),
    (DetectionTransformer, 'LearningLossDETR', 'detector'),
    (TopdownPoseEstimator, 'LearningLossPoseEstimator', 'estimator'),
)


def model_class(model_cfg: dict) -> type:
    """The class a model config builds, from mmdet's or mmpose's registry.

    Raises:
        ConfigError: When neither registry knows ``model.type``.
    """
    kind = model_cfg.get('type')
    if isinstance(kind, type):
        return kind
    for registry in (DET_MODELS, POSE_MODELS):
        cls = registry.get(kind)
        if cls is not None:
            return cls
    raise ConfigError(f'model.type={kind!r} is not a model mmdet or mmpose knows; check the '
                      "spelling, and custom_imports for a model of a package's own")


def is_wrapped(model_cfg: dict) -> bool:
    """Whether the config's model already is a Learning Loss wrapper."""
    return issubclass(model_class(model_cfg), LearningLossModel)


def wrap_plain_model(model_cfg: dict) -> dict:
    """The wrapper config around a plain model config (a wrapper config is returned as is).

    Raises:
        ConfigError: For a model kind no wrapper takes, naming the kinds that are.
    """
    if is_wrapped(model_cfg):
        return copy.deepcopy(model_cfg)
    cls = model_class(model_cfg)
    for plain, wrapper, key in _WRAPPERS:
        if issubclass(cls, plain):
            # The data preprocessor is the plain model's own (the wrapper takes it over).
            return {'type': wrapper, key: _predictable(copy.deepcopy(model_cfg))}
    if issubclass(cls, BottomupPoseEstimator):
        raise ConfigError(BOTTOM_UP_REFUSAL.format(type=model_cfg.get('type')).replace(
            'model.estimator.type', 'model.type', 1))
    raise ConfigError(f'model.type={model_cfg.get("type")!r} ({cls.__name__}) cannot be scored: '
                      'MMAL scores single-stage and two-stage mmdet detectors, DETR-family '
                      'ones (DINO, Deformable DETR, DETR) and top-down mmpose estimators')


def _predictable(model_cfg: dict) -> dict:
    """The plain detector's head as our per-image-loss subclass, where there is one.

    Same weights and mmdet's training loss; SSD's also predicts, which
    mmdet 3.3.0's ``SSDHead`` cannot (open-mmlab/mmdetection issues 11063,
    11305, 11780; PR 11524 unmerged), so no strategy could score a plain SSD
    otherwise. The wrapper makes the same swap (one table:
    :func:`~mmal.models.heads.with_per_image_loss_head`); made here too, the
    config the wrapper is handed already names what it builds.
    """
    return with_per_image_loss_head(model_cfg)


def is_teacher_student(model_cfg: dict) -> bool:
    """Whether a wrapper config's ``detector`` is a teacher-student pair (mmdet's
    ``SemiBaseDetector``: ``SoftTeacher``), i.e. the model trains semi-supervised."""
    detector = model_cfg.get('detector') if isinstance(model_cfg, dict) else None
    if not isinstance(detector, dict) or detector.get('type') is None:
        return False
    return issubclass(model_class(detector), SemiBaseDetector)
