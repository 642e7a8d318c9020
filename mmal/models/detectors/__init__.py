from .learning_loss_detector import LearningLossDetector

__all__ = ['LearningLossDetector']
