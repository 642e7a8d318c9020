from .stop_gradient import LossPredictionStopGradientHook

__all__ = ['LossPredictionStopGradientHook']
