"""Active-learning strategies: one file each, one interface (BaseStrategy)."""
from .base import BaseStrategy, top_k
from .core_set import CoreSetStrategy
from .density_weighted import DensityWeightedStrategy
from .entropy import EntropyStrategy
from .k_center import k_center_greedy, min_distances
from .learning_loss import LearningLossStrategy
from .learning_loss_diversity import LearningLossDiversityStrategy
from .least_confidence import LeastConfidenceStrategy
from .margin import MarginStrategy
from .oracle_loss import OracleLossStrategy
from .random import RandomStrategy
from .uncertainty import UncertaintyStrategy

__all__ = [
    'BaseStrategy', 'CoreSetStrategy', 'DensityWeightedStrategy', 'EntropyStrategy',
    'LearningLossDiversityStrategy', 'LearningLossStrategy', 'LeastConfidenceStrategy',
    'MarginStrategy', 'OracleLossStrategy', 'RandomStrategy', 'UncertaintyStrategy',
    'k_center_greedy', 'min_distances', 'top_k'
]
