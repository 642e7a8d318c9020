"""Active-learning strategies: one file each, one interface (BaseStrategy)."""
from .base import BaseStrategy
from .learning_loss import LearningLossStrategy
from .random import RandomStrategy

__all__ = ['BaseStrategy', 'LearningLossStrategy', 'RandomStrategy']
