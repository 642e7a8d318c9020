"""Scoring with the checkpoint a user has: a plain mmdet / mmpose config and its weights.

The model goes under the Learning Loss wrapper of its kind with taps and
channel counts read off the model; the plain checkpoint loads into it; a
strategy that reads the (then untrained) loss-prediction module is refused
with the reason.
"""
import copy
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import load_checkpoint

from mmal.models.plain_models import is_wrapped, wrap_plain_model
from mmal.service.query import check_checkpoint
from mmal.strategies import build_strategy
from mmal.utils import ConfigError

from .conftest import POSE_TINY_CONFIG, REPO, voc_config

SSD_TINY = 'configs/learning_loss/ssd-tiny_ll_synthetic-voc.py'
FASTER_RCNN_TINY = 'configs/learning_loss/faster-rcnn-tiny_ll_synthetic-voc.py'


def _plain_part(config: str) -> tuple[dict, dict]:
    """The plain model config inside one of our wrapper configs, and the wrapper config."""
    wrapper = Config.fromfile(str(REPO / config)).model
    key = 'detector' if 'detector' in wrapper else 'estimator'
    return copy.deepcopy(wrapper[key]), wrapper


def _build(model_cfg: dict, scope: str):
    init_default_scope(scope)
    return MODELS.build(copy.deepcopy(model_cfg))


@pytest.mark.parametrize('config,scope', [(SSD_TINY, 'mmdet'), (FASTER_RCNN_TINY, 'mmdet'),
                                          (POSE_TINY_CONFIG, 'mmpose')])
def test_channels_read_off_the_model_are_the_ones_our_configs_write_by_hand(config, scope):
    _, wrapper = _plain_part(config)
    expected = list(wrapper.loss_prediction.in_channels)
    wrapper.loss_prediction.pop('in_channels')
    assert _build(wrapper, scope).loss_prediction.in_channels == expected


@pytest.mark.parametrize('config,scope,taps', [(SSD_TINY, 'mmdet', ['neck']),
                                               (FASTER_RCNN_TINY, 'mmdet', ['neck']),
                                               (POSE_TINY_CONFIG, 'mmpose', ['backbone'])])
def test_a_plain_model_is_wrapped_with_taps_and_channels_found_from_it(config, scope, taps):
    plain, wrapper = _plain_part(config)
    assert not is_wrapped(plain) and is_wrapped(wrapper)
    wrapped = wrap_plain_model(plain)
    assert wrapped['type'] == wrapper['type'] and 'taps' not in wrapped
    model = _build(wrapped, scope)
    maps = _tapped_maps(model, taps)
    assert model.loss_prediction.in_channels == [m.shape[1] for m in maps]
    assert wrap_plain_model(wrapper) == wrapper  # a wrapper stays as it is


def _tapped_maps(model, taps):
    from mmal.models import FeatureTaps
    probe = FeatureTaps(model.task_model, taps)
    model.eval()
    with torch.no_grad(), probe.record():
        model.task_model.extract_feat(torch.zeros(1, 3, 128, 128))
    maps = probe.pop()
    probe.remove()
    assert maps
    return maps


def test_given_taps_are_probed_for_their_channels():
    plain, _ = _plain_part(SSD_TINY)
    model = _build(dict(type='LearningLossDetector', detector=plain,
                        taps=['backbone', 'neck[0]']), 'mmdet')
    # The ResNet's three tapped stages (out_indices 1-3: 32, 64, 128), then the
    # neck's first map (32), as ssd_tiny.py's neck.in_channels / out_channels say.
    assert model.loss_prediction.in_channels == [32, 64, 128, 32]


def test_a_model_kind_no_wrapper_takes_is_refused_naming_the_kinds():
    # a semi-supervised teacher-student pair (mmdet's BaseDetector, no wrapper's kind)
    with pytest.raises(ConfigError, match='single-stage and two-stage mmdet detectors, '
                                          'DETR-family'):
        wrap_plain_model(dict(type='SoftTeacher'))
    with pytest.raises(ConfigError, match="'NoSuchDetector'"):
        wrap_plain_model(dict(type='NoSuchDetector'))


def test_a_plain_checkpoint_loads_into_the_wrapper(tmp_path):
    plain, _ = _plain_part(SSD_TINY)
    plain_model = _build(plain, 'mmdet')
    torch.save(dict(state_dict=plain_model.state_dict(), meta={}), tmp_path / 'plain.pth')
    wrapped = _build(wrap_plain_model(plain), 'mmdet')
    load_checkpoint(wrapped, str(tmp_path / 'plain.pth'), map_location='cpu', strict=False)
    for key, value in plain_model.state_dict().items():
        assert torch.equal(wrapped.task_model.state_dict()[key], value), key


def test_a_strategy_reading_the_module_is_refused_for_a_checkpoint_without_it(tmp_path):
    plain, wrapper = _plain_part(SSD_TINY)
    torch.save(dict(state_dict=_build(plain, 'mmdet').state_dict()), tmp_path / 'plain.pth')
    torch.save(dict(state_dict=_build(wrapper, 'mmdet').state_dict()), tmp_path / 'll.pth')
    learning_loss = build_strategy(dict(type='LearningLossStrategy'), 'detection')
    entropy = build_strategy(dict(type='EntropyStrategy'), 'detection')
    with pytest.raises(ConfigError, match='holds no loss_prediction'):
        check_checkpoint(learning_loss, 'LearningLossStrategy', str(tmp_path / 'plain.pth'))
    check_checkpoint(learning_loss, 'LearningLossStrategy', str(tmp_path / 'll.pth'))
    check_checkpoint(entropy, 'EntropyStrategy', str(tmp_path / 'plain.pth'))


# ----------------------------------------------------------------- the tool, end to end
def _plain_mmdet_config(voc_root: Path, path: Path) -> Path:
    """An mmdet config as a user has one: no wrapper, no MMAL key, mmdet's own SSD head."""
    cfg = voc_config(SSD_TINY, voc_root)
    cfg.model = cfg.model.detector
    cfg.model.bbox_head.type = 'SSDHead'
    cfg.pop('custom_hooks', None)
    cfg.pop('custom_imports', None)
    cfg.dump(str(path))
    return path


def _al_query(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / 'tools' / 'al_query.py'),
                           *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
def test_al_query_scores_a_plain_checkpoint_and_refuses_learning_loss(voc_root, tmp_path):
    config = _plain_mmdet_config(voc_root, tmp_path / 'ssd_plain.py')
    cfg = Config.fromfile(str(config))
    checkpoint = tmp_path / 'plain.pth'
    torch.save(dict(state_dict=_build(cfg.model, 'mmdet').state_dict(), meta={}), checkpoint)
    images = voc_root / 'VOC2007' / 'JPEGImages'

    for strategy in ('EntropyStrategy', 'CoreSetStrategy'):  # heads' outputs; tapped features
        out = tmp_path / strategy
        result = _al_query(config, '--checkpoint', checkpoint, '--budget', 3, '--out', out,
                           '--images', images, '--strategy', strategy, '--format', 'coco',
                           cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        rows = list(csv.DictReader((out / 'batch.csv').open()))
        assert len(rows) == 3 and {r['strategy'] for r in rows} == {strategy}
        assert len({r['image'] for r in rows}) == 3

    # No strategy given and none configured: Learning Loss, which the weights cannot serve.
    result = _al_query(config, '--checkpoint', checkpoint, '--budget', 3, '--out',
                       tmp_path / 'refused', '--images', images, cwd=tmp_path)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert 'holds no loss_prediction' in result.stderr
    assert '--strategy EntropyStrategy' in result.stderr
    assert not (tmp_path / 'refused' / 'batch.csv').exists()
