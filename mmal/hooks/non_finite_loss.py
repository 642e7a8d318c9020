"""Stop a training whose loss or gradient norm is no longer a finite number.

A diverged training otherwise runs to its last epoch with NaN weights,
saves them, and the cycle records the metric of a broken model (mAP 0.0)
as if it were a result. mmdet's ``CheckInvalidLossHook`` has the idea but
asserts on the total loss alone, every 50 iterations by default, with a
message that names neither the iteration nor the term; this one checks
every iteration, names the first non-finite term (or the gradient norm),
and agrees across ranks so no rank is left waiting in a collective.
"""
import math

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.optim import AmpOptimWrapper
from mmengine.registry import HOOKS


class TrainingDivergedError(RuntimeError):
    """A loss term or the gradient norm became NaN or infinite.

    Attributes:
        iteration (int): 1-based, counted over the whole training.
        epoch (int): 1-based.
        term (str): The first non-finite loss term, or ``'grad_norm'``.
        value (float): Its value.
    """

    def __init__(self, iteration: int, epoch: int, term: str, value: float) -> None:
        self.iteration, self.epoch, self.term, self.value = iteration, epoch, term, value
        super().__init__(f'training diverged at iteration {iteration} (epoch {epoch}): '
                         f'{term} = {value}')

    def record(self) -> dict:
        return dict(kind='diverged', iteration=self.iteration, epoch=self.epoch,
                    term=self.term, value=str(self.value))


@HOOKS.register_module()
class StopOnNonFiniteLossHook(Hook):
    """Raise :class:`TrainingDivergedError` at the first non-finite loss term or gradient norm.

    Runs before the checkpoint hook, so no checkpoint of the broken weights
    is written. The gradient norm (logged by a clipping optimizer wrapper)
    is not checked under ``AmpOptimWrapper``: its loss scaler skips steps
    with overflowing gradients by design.
    """

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: dict | None = None) -> None:
        found = self._first_non_finite(runner, outputs or {})
        if get_world_size() > 1:  # a NaN on one rank stops every rank at the same iteration
            flag = torch.tensor([0.0 if found is None else 1.0])
            torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
            if flag.item() and found is None:
                found = ('a loss term on another rank', float('nan'))
        if found is not None:
            raise TrainingDivergedError(runner.iter + 1, runner.epoch + 1, *found)

    @staticmethod
    def _first_non_finite(runner, outputs: dict) -> tuple[str, float] | None:
        # The components first: 'loss' is their sum and would hide which one broke.
        terms = sorted((k for k in outputs if 'loss' in k), key=lambda k: k == 'loss')
        for name in terms:
            value = outputs[name]
            value = float(value.detach().float().sum()) if torch.is_tensor(value) else float(
                value)
            if not math.isfinite(value):
                return name, value
        if not isinstance(runner.optim_wrapper, AmpOptimWrapper):
            grad_norm = runner.message_hub.log_scalars.get('train/grad_norm')
            if grad_norm is not None and not math.isfinite(grad_norm.current()):
                return 'grad_norm', grad_norm.current()
        return None
