import gc

import pytest
import torch
from torch import nn

from mmal.models import FeatureTaps


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2), nn.ReLU())
        self.multi = Multi()

    def forward(self, x):
        return self.multi(self.body(self.stem(x)))


class Multi(nn.Module):
    def forward(self, x):
        return x, x.mean(dim=(2, 3), keepdim=True)


def test_taps_fire_on_named_modules_in_order():
    net = Net()
    taps = FeatureTaps(net, ['body.0', 'multi', 'multi[1]', 'stem'])
    x = torch.randn(2, 3, 9, 9)
    with taps.record():
        net(x)
    maps = taps.pop()
    assert [tuple(m.shape) for m in maps] == [
        (2, 6, 4, 4), (2, 6, 4, 4), (2, 6, 1, 1), (2, 6, 1, 1), (2, 4, 9, 9)]
    torch.testing.assert_close(maps[-1], net.stem(x))
    assert taps.num_hooks == 3  # one hook per distinct module


def test_nothing_is_kept_outside_record():
    net = Net()
    taps = FeatureTaps(net, ['stem'])
    net(torch.randn(1, 3, 8, 8))
    assert taps._outputs == {}
    with taps.record():
        net(torch.randn(1, 3, 8, 8))
    taps.pop()
    assert taps._outputs == {}
    with pytest.raises(RuntimeError, match="'stem' did not run"):
        taps.pop()


def test_remove_releases_every_hook():
    net = Net()
    taps = FeatureTaps(net, ['stem', 'body.0', 'multi'])
    assert sum(len(m._forward_hooks) for m in net.modules()) == 3
    taps.remove()
    assert sum(len(m._forward_hooks) for m in net.modules()) == 0
    assert taps.num_hooks == 0


def test_unknown_path_names_the_key_and_suggests():
    with pytest.raises(ValueError, match=r"model.taps\[1\]='bdy.0'.*Did you mean 'body.0'"):
        FeatureTaps(Net(), ['stem', 'bdy.0'], cfg_key='model.taps')
    with pytest.raises(ValueError, match='non-empty list'):
        FeatureTaps(Net(), 'stem')


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if torch.is_tensor(o))


def test_no_growth_in_live_tensors_over_many_iterations():
    net = Net()
    taps = FeatureTaps(net, ['stem', 'multi'])
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def step():
        with taps.record():
            out = net(torch.randn(2, 3, 8, 8))
        maps = taps.pop()
        loss = sum(m.mean() for m in maps) + out[0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    before = _live_tensors()
    for _ in range(50):
        step()
    assert _live_tensors() <= before
