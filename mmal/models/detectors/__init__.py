from .learning_loss_detector import LearningLossDetector
from .learning_loss_detr import LearningLossDETR
from .learning_loss_two_stage_detector import LearningLossTwoStageDetector

__all__ = ['LearningLossDETR', 'LearningLossDetector', 'LearningLossTwoStageDetector']
