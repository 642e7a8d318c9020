import pytest
import torch

from mmal.models import LossPredictionModule


def test_shapes_and_layers():
    module = LossPredictionModule(in_channels=[8, 16, 4], width=32)
    feats = [torch.randn(5, 8, 7, 7), torch.randn(5, 16, 3, 3), torch.randn(5, 4, 1, 1)]
    assert module(feats).shape == (5,)
    assert [fc.in_features for fc in module.fcs] == [8, 16, 4]
    assert all(fc.out_features == 32 for fc in module.fcs)
    assert module.out.in_features == 96 and module.out.out_features == 1


def test_output_is_gap_fc_relu_concat_fc():
    module = LossPredictionModule(in_channels=[2, 3], width=4)
    feats = [torch.randn(2, 2, 5, 5), torch.randn(2, 3, 2, 2)]
    hidden = [torch.relu(fc(f.mean(dim=(2, 3)))) for f, fc in zip(feats, module.fcs)]
    expected = module.out(torch.cat(hidden, 1)).squeeze(1)
    torch.testing.assert_close(module(feats), expected)


def test_channel_mismatch_names_the_key():
    module = LossPredictionModule(in_channels=[8, 16])
    with pytest.raises(ValueError, match=r'in_channels\[1\]=16.*set in_channels\[1\]=12'):
        module([torch.randn(2, 8, 4, 4), torch.randn(2, 12, 2, 2)])


def test_map_count_mismatch_is_explained():
    module = LossPredictionModule(in_channels=[8, 16])
    with pytest.raises(ValueError, match='deliver 1 feature maps'):
        module([torch.randn(2, 8, 4, 4)])


@pytest.mark.parametrize('kwargs,match', [
    (dict(in_channels=[]), 'in_channels'),
    (dict(in_channels=[4, 0]), 'in_channels'),
    (dict(in_channels=[4], width=0), 'width'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LossPredictionModule(**kwargs)
