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


def ranking_accuracy(pred: Tensor, target: Tensor) -> Tensor:
    """Fraction of sample pairs that ``pred`` orders like ``target``.

    All ``B (B - 1) / 2`` pairs whose true losses differ are counted, so the
    figure is an in-batch estimate of the ranking quality the selection
    relies on; a pair that ``pred`` ties counts one half, as in the
    per-cycle ranking evaluation (:func:`mmal.loop.ranking.pairwise_ranking_accuracy`).
    NaN when no such pair exists.
    """
    pred, target = pred.detach(), target.detach()
    i, j = torch.triu_indices(len(pred), len(pred), offset=1, device=pred.device)
    true_order = torch.sign(target[i] - target[j])
    valid = true_order != 0
    if not valid.any():
        return pred.new_tensor(float('nan'))
    pred_order = torch.sign(pred[i] - pred[j])
    agree = (pred_order == true_order).float() + 0.5 * (pred_order == 0).float()
    return agree[valid].mean()
