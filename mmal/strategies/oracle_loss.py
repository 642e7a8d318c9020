"""The oracle: label the candidates whose true loss is highest (a diagnostic)."""
import numpy as np

from ..registry import STRATEGIES
from ..utils import ConfigError
from .base import BaseStrategy, require


@STRATEGIES.register_module()
class OracleLossStrategy(BaseStrategy):
    """Score = the candidate's true target loss under the cycle's model.

    This is what Learning Loss tries to predict, computed from the labels of
    the *unlabeled* pool, so it is the ideal Learning Loss selector: a
    diagnostic upper bound for benchmarks, impossible in real use. If the
    oracle does not beat random sampling on a data set, no loss-based
    strategy can, and the data set cannot tell strategies apart. The loss is
    the one the ranking loss trains on (``score_step``'s ``target_loss``),
    computed on the training pipeline without its random augmentations.

    Args:
        diagnostic (bool): Must be True: a reminder, in the config, that
            this strategy reads labels no real pool has.
    """

    outputs = ('target_loss',)
    needs_labels = True

    def __init__(self, task: str | None = None, diagnostic: bool = False) -> None:
        super().__init__(task)
        if diagnostic is not True:
            raise ConfigError(
                'OracleLossStrategy ranks candidates by their true loss, read from labels '
                'that a real unlabeled pool does not have: it is an upper-bound diagnostic '
                'for benchmarks. Ask for it explicitly with '
                "strategy=dict(type='OracleLossStrategy', diagnostic=True) (tools/al_compare.py "
                'does this for you)')

    def scores(self, candidate_outputs: dict, labeled_outputs: dict) -> np.ndarray:
        require(self, candidate_outputs, 'target_loss')
        return candidate_outputs['target_loss']
