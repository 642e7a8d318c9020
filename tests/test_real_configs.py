"""The real-data configs (configs/real/): they build, and one shrunk experiment runs.

The data is a tiny NEU-DET-format source made here and converted with the
project's converter; the model keeps the ImageNet-pretrained backbone.
"""
import copy
import json

import pytest
from mmengine.config import Config

from mmal.datasets.converters.neu_det import NEU_DET_CLASSES, SplitSettings, convert_neu_det

from .conftest import REPO
from .test_neu_det_converter import write_pair
from .test_real_converters import write_deeppcb_source

CONFIG = REPO / 'configs/real/ll_retinanet-lite0_neu-det.py'
VAL_CONFIG = REPO / 'configs/real/ll_retinanet-lite0_neu-det_val.py'


@pytest.fixture(scope='module')
def neu_det_root(tmp_path_factory):
    src = tmp_path_factory.mktemp('neu') / 'NEU-DET'
    for k, cls in enumerate(NEU_DET_CLASSES):
        for n in range(1, 6):
            x = 10 + 15 * ((n + k) % 5)
            write_pair(src, f'{cls}_{n}', [(cls, x, 20, x + 70, 60 + 20 * k)])
    out = src.parent / 'VOCdevkit'
    convert_neu_det(src, out, SplitSettings(test_fraction=0.2, val_fraction=0.25))
    return out  # per class: 1 test, 1 val, 3 train


def use_root(cfg, root):
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(root) + '/'
    return cfg


def test_the_configs_build_the_pretrained_model():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import mmal  # noqa: F401
    register_all_modules()
    cfg = Config.fromfile(str(CONFIG))
    assert cfg.model.detector.backbone.pretrained is True
    assert cfg.train_dataloader.dataset.ann_file.endswith('/train.txt')
    assert cfg.test_dataloader.dataset.ann_file.endswith('/test.txt')
    settings = cfg.active_learning
    assert settings.num_cycles >= 4
    final = settings.initial_size + (settings.num_cycles - 1) * settings.budget_per_cycle
    assert final < 1260 / 2
    val = Config.fromfile(str(VAL_CONFIG))
    assert val.test_dataloader.dataset.ann_file.endswith('/val.txt')
    assert val.val_dataloader.dataset.ann_file.endswith('/val.txt')
    assert val.train_dataloader.dataset.ann_file.endswith('/train.txt')
    model = MODELS.build(cfg.model)
    channels = cfg.model.loss_prediction.in_channels
    assert model.task_model.backbone.out_channels == cfg.model.detector.neck.in_channels
    assert len(channels) == cfg.model.detector.neck.num_outs


@pytest.mark.slow
def test_one_shrunk_experiment_runs(neu_det_root, tmp_path):
    from mmal.loop import ActiveLearningExperiment
    cfg = use_root(Config.fromfile(str(CONFIG)), neu_det_root)
    cfg.train_dataloader.batch_size = 4
    cfg.test_dataloader.batch_size = 4
    cfg.train_cfg.max_epochs = 1
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.active_learning.update(initial_size=8, budget_per_cycle=4, num_cycles=2,
                               score_batch_size=4, ranking_eval_size=4)
    ActiveLearningExperiment(copy.deepcopy(cfg), str(tmp_path)).run()
    data = json.loads((tmp_path / 'al_state.json').read_text())
    assert data['status'] == 'finished'
    c0, c1 = data['cycles']
    assert c0['num_labeled'] == 8 and c1['num_labeled'] == 12
    assert c0['num_candidates'] == 10  # the 18 train images less the 8 labeled
    assert all(p.startswith('VOC2007/JPEGImages/') for p in c0['labeled'])
    for c in (c0, c1):
        assert 0.0 <= c['metrics']['pascal_voc/mAP'] <= 1.0
    logs = [p.read_text() for p in tmp_path.glob('cycle_00/*/*.log')]
    assert any('EfficientNetLite(lite0): loaded 2' in log for log in logs)  # the train run


# ------------------------------------------------------------------ DeepPCB
DEEPPCB_CONFIG = REPO / 'configs/real/ll_retinanet-lite0_deeppcb.py'
DEEPPCB_VAL_CONFIG = REPO / 'configs/real/ll_retinanet-lite0_deeppcb_val.py'


@pytest.mark.parametrize('config', [
    VAL_CONFIG, DEEPPCB_VAL_CONFIG, REPO / 'configs/real/lspet_al_heatmap-lite0_128x128_val.py'])
def test_a_tuning_configs_recipe_sets_the_epochs_the_loop_trains(config):
    """The tuning configs' own recipe (their header's --cfg-options, parsed as the tools
    parse them) changes the epochs the loop trains and the schedulers span."""
    import argparse
    import re
    import shlex

    from mmal.utils.cli import add_cfg_options
    val = Config.fromfile(str(config))
    header = ''.join(line[1:] for line in config.read_text().splitlines()
                     if line.startswith('#')).replace('\\', ' ')
    parser = argparse.ArgumentParser()
    add_cfg_options(parser)
    recipe = re.search(r'(--cfg-options.*?)(?:\(|$)', header).group(1)
    val.merge_from_dict(parser.parse_args(shlex.split(recipe)).cfg_options)
    epochs = int(re.search(r'train_cfg\.max_epochs=(\d+)', header).group(1))
    assert val.train_cfg.max_epochs == epochs != Config.fromfile(str(config)).get('max_epochs')
    assert val.param_scheduler[1].end == epochs


def test_the_deeppcb_config_reads_the_converted_data_and_trains_a_step(tmp_path):
    import torch
    from mmdet.registry import DATASETS, MODELS
    from mmdet.utils import register_all_modules

    from mmal.datasets.converters.deeppcb import DEEPPCB_CLASSES, convert_deeppcb
    register_all_modules()
    root = tmp_path / 'VOCdevkit'
    convert_deeppcb(write_deeppcb_source(tmp_path), root, val_size=1, seed=0)
    cfg = use_root(Config.fromfile(str(DEEPPCB_CONFIG)), root)
    # The config's classes are the converter's, in its order (label ids depend on it).
    assert tuple(cfg.train_dataloader.dataset.metainfo.classes) == DEEPPCB_CLASSES
    val = Config.fromfile(str(DEEPPCB_VAL_CONFIG))  # tunes on val, never on test
    assert val.test_dataloader.dataset.ann_file.endswith('/val.txt')
    assert val.val_dataloader.dataset.ann_file.endswith('/val.txt')
    assert val.train_dataloader.dataset.ann_file.endswith('/train.txt')
    assert cfg.model.detector.backbone.pretrained is True
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    samples = [dataset[i] for i in range(len(dataset))]
    assert len(samples) == 2  # DeepPCB's trainval less the one val image
    assert all(s['inputs'].shape[-2:] == (384, 384) for s in samples)
    names = {DEEPPCB_CLASSES[int(label)] for s in samples
             for label in s['data_samples'].gt_instances.labels}
    assert names and names <= set(DEEPPCB_CLASSES)
    model = MODELS.build(cfg.model)
    model.train()
    batch = model.data_preprocessor(dict(inputs=[s['inputs'] for s in samples],
                                         data_samples=[s['data_samples'] for s in samples]),
                                    True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()
    assert model.loss_prediction.out.weight.grad is not None
