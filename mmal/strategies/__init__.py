"""Active-learning strategies: one file each, one interface (BaseStrategy).

Every module of this package is imported here, so a strategy registers
itself in ``STRATEGIES`` by existing in a file of its own.
"""
import copy
import difflib
import importlib
import pkgutil

from mmengine.registry import DefaultScope

from ..registry import STRATEGIES
from ..utils import ConfigError
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
from .prob_cover import ProbCoverStrategy
from .random import RandomStrategy
from .typiclust import TypiClustStrategy
from .uncertainty import UncertaintyStrategy

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f'{__name__}.{_module.name}')


def check_strategy_type(type_name: str, key: str = 'active_learning.strategy.type') -> None:
    """Refuse a strategy type that is not registered, suggesting the near names."""
    known = sorted(STRATEGIES.module_dict)
    if type_name in known:
        return

    def stem(name: str) -> str:  # 'Strategy' is in every name: compare the rest
        return str(name).lower().removesuffix('strategy')
    by_stem = {stem(name): name for name in known}
    close = difflib.get_close_matches(stem(type_name), list(by_stem), n=3, cutoff=0.6)
    hint = f'did you mean {[by_stem[c] for c in close]}? ' if close else ''
    raise ConfigError(f'{key}={type_name!r} is not a strategy; {hint}known: {known}')


def build_strategy(strategy_cfg: dict, task: str,
                   key: str = 'active_learning.strategy') -> BaseStrategy:
    """The strategy of ``strategy_cfg`` for ``task``; a typo in it is a ConfigError naming it.

    Built in mmal's own registry scope, not the task's (which would warn
    that 'mmdet' / 'mmpose' is not in its tree).
    """
    check_strategy_type(strategy_cfg.get('type'), f'{key}.type')
    with DefaultScope.overwrite_default_scope('mmal'):
        try:
            return STRATEGIES.build(copy.deepcopy(strategy_cfg), default_args=dict(task=task))
        except TypeError as err:  # an option the strategy does not take
            raise ConfigError(f'{key}={strategy_cfg!r}: {err}; see the options in the '
                              f"docstring of {strategy_cfg['type']}") from err


__all__ = [
    'BaseStrategy', 'build_strategy', 'check_strategy_type', 'CoreSetStrategy',
    'DensityWeightedStrategy', 'EntropyStrategy',
    'LearningLossDiversityStrategy', 'LearningLossStrategy', 'LeastConfidenceStrategy',
    'MarginStrategy', 'OracleLossStrategy', 'ProbCoverStrategy', 'RandomStrategy',
    'TypiClustStrategy', 'UncertaintyStrategy',
    'k_center_greedy', 'min_distances', 'top_k'
]
