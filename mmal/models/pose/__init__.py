"""Learning Loss for mmpose: the top-down wrapper and a small hourglass."""
from .compact_hourglass import CompactHourglassNet
from .learning_loss_pose_estimator import LearningLossPoseEstimator

__all__ = ['CompactHourglassNet', 'LearningLossPoseEstimator']
