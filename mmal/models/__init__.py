"""The Learning Loss method: module, ranking loss, taps and task wrappers."""
from .backbones import EfficientNetLite
from .detectors import LearningLossDetector, LearningLossDETR, LearningLossTwoStageDetector
from .heads import (
    PerImageLossRTMDetHead,
    PerImageLossRTMDetSepBNHead,
    PerImageLossSSDHead,
    PerImageLossYOLOXHead,
)
from .ignore_regions import with_ignore_regions
from .learning_loss import LearningLossModel
from .loss_prediction import LossPredictionModule
from .pose import CompactHourglassNet, LearningLossPoseEstimator
from .ranking_loss import LossPredictionLoss, ranking_accuracy
from .taps import FeatureTaps

__all__ = [
    'CompactHourglassNet', 'EfficientNetLite', 'FeatureTaps', 'LearningLossDETR',
    'LearningLossDetector', 'LearningLossModel', 'LearningLossPoseEstimator',
    'LearningLossTwoStageDetector',
    'LossPredictionLoss', 'LossPredictionModule', 'PerImageLossRTMDetHead',
    'PerImageLossRTMDetSepBNHead', 'PerImageLossSSDHead', 'PerImageLossYOLOXHead',
    'ranking_accuracy', 'with_ignore_regions'
]
