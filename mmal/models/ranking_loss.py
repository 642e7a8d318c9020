"""The pairwise ranking loss that trains the loss-prediction module."""
import torch
from mmengine.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class LossPredictionLoss(nn.Module):
    """Margin ranking loss between predicted and true per-sample losses.

    The batch is split into ``B // 2`` pairs ``(i, B - 1 - i)`` (a sample
    left over by an odd batch is not used) and each pair costs
    ``max(0, -sign(l_i - l_j) * (p_i - p_j) + margin)`` with ``sign = +1`` if
    ``l_i > l_j`` else ``-1``; the cost is averaged over pairs (Yoo & Kweon,
    CVPR 2019, Eq. 2). Only the order of the true losses matters, so the
    predictions learn a ranking, not the loss's scale.

    Args:
        margin (float): The margin ``xi``; the paper uses 1.0.
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f'rank_loss.margin={margin!r} must be >= 0')
        self.margin = margin

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            pred (Tensor): Predicted losses, shape ``(B,)``.
            target (Tensor): True losses, shape ``(B,)``; detached here.

        Returns:
            Tensor: Scalar loss; zero (still attached to ``pred``) when the
            batch has fewer than two samples.
        """
        if pred.shape != target.shape or pred.dim() != 1:
            raise ValueError(f'pred {tuple(pred.shape)} and target '
                             f'{tuple(target.shape)} must be the same 1-D shape')
        num_pairs = pred.numel() // 2
        if num_pairs == 0:
            return pred.sum() * 0.
        # In float32 under mixed precision too: bf16 keeps 8 bits of mantissa,
        # so close predictions and close true losses would tie and the pairs'
        # order (all the loss is about) would be lost.
        pred, target = pred.float(), target.detach().float()
        pred_diff = (pred - pred.flip(0))[:num_pairs]
        target_diff = (target - target.flip(0))[:num_pairs]
        sign = torch.where(target_diff > 0, 1., -1.)
        return (self.margin - sign * pred_diff).clamp(min=0).mean()


def ranking_accuracy(pred: Tensor, target: Tensor, chunk_size: int = 2048) -> Tensor:
    """Fraction of sample pairs that ``pred`` orders like ``target``: the one definition
    of ranking accuracy, in training logs (in-batch) and in the per-cycle ranking
    evaluation (:mod:`mmal.loop.ranking`, the paper's Fig. 5).

    Every pair whose true losses differ counts; a pair that ``pred`` ties
    counts one half (a coin flip of the tie-breaker), so constant scores
    give 0.5, perfectly ordered ones 1.0 and reversed ones 0.0: this is
    ``(1 + Kendall's tau-a over the untied pairs) / 2``. Samples with a
    non-finite value are left out. NaN when every true loss is equal.
    Computed in blocks of ``chunk_size`` rows (each pair is seen as (i, j)
    and (j, i); symmetric, so the fraction is the same).
    """
    pred, target = pred.detach().flatten(), target.detach().flatten()
    keep = torch.isfinite(pred) & torch.isfinite(target)
    pred, target = pred[keep], target[keep]
    agree = pairs = pred.new_zeros((), dtype=torch.float64)
    for start in range(0, len(pred), chunk_size):
        rows = slice(start, start + chunk_size)
        true_order = torch.sign(target[rows, None] - target[None, :])
        pred_order = torch.sign(pred[rows, None] - pred[None, :])
        valid = true_order != 0
        pairs = pairs + valid.sum()
        agree = agree + ((pred_order == true_order) & valid).sum() + 0.5 * (
            (pred_order == 0) & valid).sum()
    if not pairs:
        return pred.new_tensor(float('nan'))
    return (agree / pairs).to(pred.dtype)
