import math

import pytest
import torch

from mmal.models import LossPredictionLoss, ranking_accuracy


def hand_loss(pred, target, margin):
    """Eq. 2 of the paper written out pair by pair."""
    b = len(pred)
    terms = []
    for i in range(b // 2):
        j = b - 1 - i
        sign = 1.0 if target[i] > target[j] else -1.0
        terms.append(max(0.0, -sign * (pred[i] - pred[j]) + margin))
    return sum(terms) / len(terms)


@pytest.mark.parametrize('pred,target,margin', [
    ([0.5, 2.0, 1.0, -1.0], [3.0, 1.0, 2.0, 0.5], 1.0),
    ([0.0, 0.0], [1.0, 1.0], 1.0),            # tie: sign is -1
    ([1.0, 0.2], [1.0, 1.0], 0.5),            # tie, prediction says i > j
    ([3.0, 1.0, 7.0, 2.0, 0.0], [1.0, 2.0, 9.0, 4.0, 3.0], 1.0),  # odd: middle unused
    ([2.0, -2.0, 0.3, 0.1, 5.0, 1.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 0.0),
])
def test_matches_hand_computation(pred, target, margin):
    got = LossPredictionLoss(margin)(torch.tensor(pred), torch.tensor(target))
    assert got.item() == pytest.approx(hand_loss(pred, target, margin))


def test_known_values():
    loss = LossPredictionLoss(1.0)
    # pair (0, 1): l0 > l1, p0 - p1 = 3 -> max(0, -3 + 1) = 0
    assert loss(torch.tensor([4., 1.]), torch.tensor([2., 1.])).item() == 0.0
    # wrong order: l0 > l1 but p0 - p1 = -2 -> 2 + 1 = 3
    assert loss(torch.tensor([1., 3.]), torch.tensor([2., 1.])).item() == 3.0
    # tie counts as l_i <= l_j: sign -1, p0 - p1 = 0.5 -> 1.5
    assert loss(torch.tensor([1.5, 1.]), torch.tensor([1., 1.])).item() == 1.5


def test_batch_of_one_and_empty_do_not_crash():
    pred = torch.tensor([0.7], requires_grad=True)
    out = LossPredictionLoss()(pred, torch.tensor([3.0]))
    assert out.item() == 0.0
    out.backward()
    assert pred.grad is not None and pred.grad.abs().sum() == 0
    assert LossPredictionLoss()(torch.zeros(0), torch.zeros(0)).item() == 0.0


def test_odd_batch_ignores_the_middle_sample():
    loss = LossPredictionLoss()
    target = torch.tensor([1., 5., 2.])
    a = loss(torch.tensor([0., 100., 1.]), target)
    b = loss(torch.tensor([0., -100., 1.]), target)
    assert a.item() == b.item()


def test_gradient_pushes_towards_true_order():
    pred = torch.tensor([0., 0.], requires_grad=True)
    LossPredictionLoss()(pred, torch.tensor([2., 1.])).backward()
    assert pred.grad[0] < 0 < pred.grad[1]


def test_target_is_not_differentiated():
    target = torch.tensor([2., 1.], requires_grad=True)
    LossPredictionLoss()(torch.tensor([0., 0.], requires_grad=True), target).backward()
    assert target.grad is None


def test_negative_margin_is_refused():
    with pytest.raises(ValueError, match='margin'):
        LossPredictionLoss(-0.1)


def test_ranking_accuracy_counts_all_ordered_pairs():
    target = torch.tensor([1., 2., 3., 4.])
    assert ranking_accuracy(target * 10, target).item() == 1.0
    assert ranking_accuracy(-target, target).item() == 0.0
    # one swapped neighbour pair of the 6 pairs
    assert ranking_accuracy(torch.tensor([2., 1., 3., 4.]), target).item() == pytest.approx(5 / 6)
    assert math.isnan(ranking_accuracy(torch.ones(3), torch.ones(3)).item())
