from .epoch_seed import EpochSeedHook
from .non_finite_loss import StopOnNonFiniteLossHook, TrainingDivergedError
from .stop_gradient import LossPredictionStopGradientHook

__all__ = ['EpochSeedHook', 'LossPredictionStopGradientHook', 'StopOnNonFiniteLossHook',
           'TrainingDivergedError']
