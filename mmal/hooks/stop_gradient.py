"""Stop the ranking loss from shaping the target model after a point."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class LossPredictionStopGradientHook(Hook):
    """Detach the tapped features before the loss-prediction module.

    From ``stop_epoch`` (or ``stop_iter``) on, the ranking loss trains only
    the module; before it, its gradient also reaches the tapped layers. The
    paper stops at epoch 120 of 200. The switch is recomputed from the
    runner's counters before every iteration, so a resumed run is in the
    right phase.

    Args:
        stop_epoch (int, optional): First epoch (0-based) with detached
            features.
        stop_iter (int, optional): First iteration (0-based) with detached
            features. Give exactly one of the two.
    """

    priority = 'NORMAL'

    def __init__(self, stop_epoch: int | None = None, stop_iter: int | None = None) -> None:
        if (stop_epoch is None) == (stop_iter is None):
            raise ValueError('LossPredictionStopGradientHook needs exactly one of '
                             f'stop_epoch ({stop_epoch!r}) and stop_iter ({stop_iter!r})')
        for key, value in (('stop_epoch', stop_epoch), ('stop_iter', stop_iter)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f'LossPredictionStopGradientHook.{key}={value!r} must be '
                                 'an integer >= 0')
        self.stop_epoch = stop_epoch
        self.stop_iter = stop_iter

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'detach_features'):
            raise TypeError(f'LossPredictionStopGradientHook needs a Learning Loss model, '
                            f'got {type(model).__name__}')
        if self.stop_epoch is not None:
            model.detach_features = runner.epoch >= self.stop_epoch
        else:
            model.detach_features = runner.iter >= self.stop_iter
