"""Training for real: the small config learns to rank losses; SSD300 steps."""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from scipy.stats import spearmanr

from .conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def ranking_voc(tmp_path_factory):
    from mmal.datasets import VOCSceneConfig, generate_voc_dataset
    root = tmp_path_factory.mktemp('rank') / 'VOCdevkit'
    generate_voc_dataset(root, VOCSceneConfig(num_trainval=240, num_test=80, seed=11))
    return str(root) + '/'


def test_small_config_predicted_losses_rank_correlate_with_true_losses(ranking_voc, tmp_path):
    cfg = Config.fromfile(str(REPO / 'configs/learning_loss/ssd-tiny_ll_synthetic-voc.py'))
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = ranking_voc
    cfg.train_cfg.max_epochs = 25
    cfg.train_cfg.val_interval = 100
    cfg.param_scheduler[1].end = 25
    cfg.custom_hooks = [dict(type='LossPredictionStopGradientHook', stop_epoch=15)]
    cfg.work_dir = str(tmp_path)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=100)
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model.eval()

    init_default_scope('mmdet')
    from mmdet.registry import DATASETS
    held_out = copy.deepcopy(cfg.test_dataloader.dataset)
    held_out.test_mode = False
    held_out.filter_cfg = dict(filter_empty_gt=True)
    dataset = DATASETS.build(held_out)
    predicted, true = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), 16):
            stop = min(start + 16, len(dataset))
            batch = pseudo_collate([dataset[i] for i in range(start, stop)])
            data = model.data_preprocessor(batch, False)
            feats = model.task_model.extract_feat(data['inputs'])
            _, per_image = model.task_loss(feats, data['data_samples'])
            true.extend(per_image.tolist())
            unlabeled = copy.deepcopy(batch)
            for sample in unlabeled['data_samples']:
                del sample.gt_instances
            predicted.extend(model.score_step(unlabeled, ('pred_loss',))['pred_loss'].tolist())
    rho, p_value = spearmanr(predicted, true)
    print(f'held-out Spearman rho={rho:.3f} (p={p_value:.2g}, n={len(true)})')
    assert rho > 0.2 and p_value < 0.05


def test_full_ssd300_config_builds_and_steps_on_cpu():
    """The full LL SSD300 config: one train step and one predict step at batch 2."""
    import sys
    sys.path.insert(0, str(REPO / 'bench'))
    from common import detection_batches
    cfg = Config.fromfile(str(REPO / 'configs/learning_loss/ssd300_ll_voc0712.py'))
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    from mmengine.optim import OptimWrapper
    model_cfg = copy.deepcopy(cfg.model)
    assert model_cfg.detector.backbone.init_cfg.checkpoint == 'open-mmlab://vgg16_caffe'
    model_cfg.detector.backbone.init_cfg = None  # no weights offline
    model = MODELS.build(model_cfg)
    model.init_weights()
    assert model.loss_prediction.in_channels == [512, 1024, 512, 256, 256, 256]
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-4))
    [train_batch] = detection_batches('configs/learning_loss/ssd300_ll_voc0712.py', 2, 1, True)
    assert train_batch['inputs'][0].shape[-2:] == (300, 300)
    log_vars = model.train_step(train_batch, optim)
    assert {'loss_cls', 'loss_bbox', 'loss_rank', 'loss_target'} <= set(log_vars)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log_vars.values())
    model.eval()
    [test_batch] = detection_batches('configs/learning_loss/ssd300_ll_voc0712.py', 2, 1, False)
    results = model.test_step(test_batch)
    assert len(results) == 2 and 'bboxes' in results[0].pred_instances
    scores = model.score_step(test_batch, ('pred_loss', 'features'))
    assert scores['pred_loss'].shape == (2,)
    assert scores['features'].shape == (2, 512 + 1024 + 512 + 256 * 3)
