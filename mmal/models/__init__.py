"""The Learning Loss method: module, ranking loss, taps and task wrappers."""
from .detectors import LearningLossDetector
from .heads import PerImageLossSSDHead
from .learning_loss import LearningLossModel
from .loss_prediction import LossPredictionModule
from .ranking_loss import LossPredictionLoss, ranking_accuracy
from .taps import FeatureTaps

__all__ = [
    'FeatureTaps', 'LearningLossDetector', 'LearningLossModel', 'LossPredictionLoss',
    'LossPredictionModule', 'PerImageLossSSDHead', 'ranking_accuracy'
]
