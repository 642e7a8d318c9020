"""Active-learning strategies: one file each, one interface (BaseStrategy).

Every module of this package is imported here, so a strategy registers
itself in ``STRATEGIES`` by existing in a file of its own.
"""
import importlib
import pkgutil

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

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f'{__name__}.{_module.name}')

__all__ = [
    'BaseStrategy', 'CoreSetStrategy', 'DensityWeightedStrategy', 'EntropyStrategy',
    'LearningLossDiversityStrategy', 'LearningLossStrategy', 'LeastConfidenceStrategy',
    'MarginStrategy', 'OracleLossStrategy', 'RandomStrategy', 'UncertaintyStrategy',
    'k_center_greedy', 'min_distances', 'top_k'
]
