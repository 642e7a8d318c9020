from .epoch_seed import EpochSeedHook
from .stop_gradient import LossPredictionStopGradientHook

__all__ = ['EpochSeedHook', 'LossPredictionStopGradientHook']
