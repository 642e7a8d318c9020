"""Stop the ranking loss from shaping the target model after a point."""
import math

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop


@HOOKS.register_module()
class LossPredictionStopGradientHook(Hook):
    """Detach the tapped features before the loss-prediction module.

    From the stop point on, the ranking loss trains only the module; before
    it, its gradient also reaches the tapped layers. The paper stops at
    epoch 120 of 200 (classification, 0.6), 240 of 300 (detection, 0.8) and
    75 of 125 (pose, 0.6). The switch is recomputed from the runner's
    counters before every iteration, so a resumed run is in the right phase.

    The stop point must fall inside training, or it never fires and the
    ranking loss shapes the target model to the end: ``before_train``
    refuses a ``stop_epoch`` / ``stop_iter`` at or past the end. Give
    ``stop_fraction`` instead to follow ``train_cfg.max_epochs`` (or
    ``max_iters``) when it is changed.

    Args:
        stop_epoch (int, optional): First epoch (0-based) with detached
            features.
        stop_iter (int, optional): First iteration (0-based) with detached
            features.
        stop_fraction (float, optional): The stop point as a fraction in
            ``(0, 1)`` of training: epoch ``floor(f * max_epochs)`` for
            epoch-based training, else iteration ``floor(f * max_iters)``.
            Give exactly one of the three.
    """

    priority = 'NORMAL'

    def __init__(self, stop_epoch: int | None = None, stop_iter: int | None = None,
                 stop_fraction: float | None = None) -> None:
        given = {k: v for k, v in (('stop_epoch', stop_epoch), ('stop_iter', stop_iter),
                                   ('stop_fraction', stop_fraction)) if v is not None}
        if len(given) != 1:
            raise ValueError('LossPredictionStopGradientHook needs exactly one of stop_epoch, '
                             f'stop_iter and stop_fraction, got {given or "none"}')
        for key in ('stop_epoch', 'stop_iter'):
            value = given.get(key)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f'LossPredictionStopGradientHook.{key}={value!r} must be '
                                 'an integer >= 0')
        if stop_fraction is not None and not (isinstance(stop_fraction, (int, float))
                                              and 0 < stop_fraction < 1):
            raise ValueError(f'LossPredictionStopGradientHook.stop_fraction={stop_fraction!r} '
                             'must be a number in (0, 1)')
        self.stop_epoch = stop_epoch
        self.stop_iter = stop_iter
        self.stop_fraction = stop_fraction

    def before_train(self, runner) -> None:
        # mmengine's IterBasedTrainLoop reports max_epochs=1: ask the loop's type.
        by_epoch = not isinstance(runner.train_loop, IterBasedTrainLoop)
        if self.stop_epoch is not None and not by_epoch and self.stop_fraction is None:
            raise ValueError('LossPredictionStopGradientHook.stop_epoch needs epoch-based '
                             'training; this run is iteration-based (train_cfg.max_iters): '
                             'give stop_iter or stop_fraction')
        if self.stop_fraction is not None:
            if by_epoch:
                self.stop_epoch = math.floor(self.stop_fraction * runner.max_epochs)
            else:
                self.stop_iter = math.floor(self.stop_fraction * runner.max_iters)
        if self.stop_epoch is not None and by_epoch and self.stop_epoch >= runner.max_epochs:
            raise ValueError(
                f'LossPredictionStopGradientHook.stop_epoch={self.stop_epoch} is at or past the '
                f'end of training (train_cfg.max_epochs={runner.max_epochs}), so the '
                'stop-gradient point would never come. Lower custom_hooks[...].stop_epoch, or '
                'give stop_fraction=0.6 to follow max_epochs')
        if self.stop_iter is not None and self.stop_iter >= runner.max_iters:
            raise ValueError(
                f'LossPredictionStopGradientHook.stop_iter={self.stop_iter} is at or past the '
                f'end of training ({runner.max_iters} iterations), so the stop-gradient point '
                'would never come. Lower custom_hooks[...].stop_iter, or give '
                'stop_fraction=0.6 to follow the length of training')
        runner.logger.info(
            'LossPredictionStopGradientHook: features detached from '
            + (f'epoch {self.stop_epoch} of {runner.max_epochs}' if self.stop_epoch is not None
               else f'iteration {self.stop_iter} of {runner.max_iters}'))

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'detach_features'):
            raise TypeError(f'LossPredictionStopGradientHook needs a Learning Loss model, '
                            f'got {type(model).__name__}')
        if self.stop_epoch is not None:
            model.detach_features = runner.epoch >= self.stop_epoch
        else:
            model.detach_features = runner.iter >= self.stop_iter
