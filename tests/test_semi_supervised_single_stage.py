"""Semi-supervised training beyond SoftTeacher: mmdet's mean teacher around a single-stage
detector (NEU-DET's pretrained RetinaNet; the main job's small SSD), trained on an
epoch-based config whose epochs become iterations of the labeled set.

The ranking loss reads the labeled images only; the converted schedule gives the
epoch-based one's learning rate at every epoch start; hooks counting epochs that cannot be
converted are refused; two shrunk cycles run through the experiment.
"""
import copy
import json

import pytest
import torch
from mmdet.engine.hooks import MeanTeacherHook
from mmdet.registry import DATASETS
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import PARAM_SCHEDULERS, init_default_scope

from mmal.datasets import build_pool, subset_config
from mmal.loop import ActiveLearningExperiment
from mmal.loop.semi_supervised import SemiSupervisedSettings, epochs_as_iterations
from mmal.utils import ConfigError

from .conftest import REPO, voc_config
from .test_real_configs import neu_det_root, use_root  # noqa: F401 (a fixture)
from .test_semi_supervised import losses_of, multi_branch_batch
from .test_two_stage_detector import build

CONFIG = REPO / 'configs/real/ll_mean-teacher_retinanet-lite0_neu-det.py'
SUPERVISED = REPO / 'configs/real/ll_retinanet-lite0_neu-det.py'
# the main job's semi-supervised arm, and the main job
SSD_CONFIG = 'configs/active_learning/ll_mean-teacher_ssd-tiny_synthetic-voc.py'
SSD_SUPERVISED = 'configs/active_learning/ll_ssd-tiny_synthetic-voc.py'


def neu_det_config(path, root):
    cfg = use_root(Config.fromfile(str(path)), root)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].num_workers = 0
        cfg[name].persistent_workers = False
    return cfg


@pytest.fixture
def mt_cfg(neu_det_root):  # noqa: F811
    return neu_det_config(CONFIG, neu_det_root)


@pytest.fixture(params=['neu-det', 'ssd-tiny'])
def mt_and_supervised(request, neu_det_root, voc_root):  # noqa: F811
    """Each mean-teacher config, and the supervised config it is the semi-supervised arm
    of, on their fixture data."""
    if request.param == 'neu-det':
        return neu_det_config(CONFIG, neu_det_root), neu_det_config(SUPERVISED, neu_det_root)
    return voc_config(SSD_CONFIG, voc_root), voc_config(SSD_SUPERVISED, voc_root)


def semi_dataset(cfg, labeled):
    pool_cfg = cfg.train_dataloader.dataset
    pool = build_pool(pool_cfg)
    semi = SemiSupervisedSettings.from_config(cfg.active_learning.semi_supervised)
    dataset_cfg, _ = semi.train_data(subset_config(pool_cfg, pool, labeled), pool_cfg, pool,
                                     labeled, cfg.train_dataloader.batch_size)
    init_default_scope('mmdet')
    return DATASETS.build(dataset_cfg)


# ------------------------------------------------------------------ the model
def test_the_config_is_the_supervised_one_with_a_mean_teacher(mt_and_supervised):
    mt_cfg, supervised = mt_and_supervised
    assert mt_cfg.model.detector.type == 'SemiBaseDetector'
    assert mt_cfg.model.detector.detector.to_dict() == supervised.model.detector.to_dict()
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg'):
        assert mt_cfg[key] == supervised[key], key
    semi = SemiSupervisedSettings.from_config(mt_cfg.active_learning.semi_supervised)
    assert semi.labeled_per_batch(mt_cfg.train_dataloader.batch_size) == \
        supervised.train_dataloader.batch_size
    plain = {k: v for k, v in mt_cfg.active_learning.items() if k != 'semi_supervised'}
    assert plain == supervised.active_learning.to_dict()


def test_the_ranking_loss_reads_the_labeled_images_only(mt_and_supervised):
    mt_cfg, _ = mt_and_supervised
    model = build(mt_cfg.model)
    model.train()
    MeanTeacherHook().momentum_update(model, 1)
    assert model.student is model.task_model.student and model.detector is model.student
    dataset = semi_dataset(mt_cfg, [0, 1, 2, 3])
    first, calls = losses_of(model, multi_branch_batch(dataset, [0, 1], [0, 1, 2]))
    assert any(k.startswith('sup_loss') for k in first), sorted(first)
    assert any(k.startswith('unsup_loss') for k in first), sorted(first)
    (call,) = calls
    assert call.args[0].shape == call.args[1].shape == (2,)  # two labeled, not five
    second, _ = losses_of(model, multi_branch_batch(dataset, [0, 1], [3, 4, 5]))
    assert torch.equal(first['loss_rank'], second['loss_rank'])
    third, _ = losses_of(model, multi_branch_batch(dataset, [2, 3], [0, 1, 2]))
    assert not torch.equal(first['loss_rank'], third['loss_rank'])


def test_a_single_stage_semi_detector_must_wrap_a_single_stage_one(mt_cfg):
    cfg = copy.deepcopy(mt_cfg.model)
    cfg.type = 'LearningLossTwoStageDetector'
    with pytest.raises(TypeError, match="model.detector.detector.type='RetinaNet' is not a "
                                        'two-stage detector'):
        build(cfg)


# ------------------------------------------------------------------ the schedule
def learning_rates(schedulers: list, epochs: int, iters_per_epoch: int) -> list[float]:
    """The learning rate of every iteration under ``schedulers``, stepped as mmengine's
    ParamSchedulerHook steps them (iteration-based after each iteration, epoch-based after
    each epoch)."""
    param = torch.nn.Parameter(torch.zeros(1))
    wrapper = OptimWrapper(torch.optim.AdamW([param], lr=1e-3))
    built = [PARAM_SCHEDULERS.build(copy.deepcopy(s), default_args=dict(
        optimizer=wrapper, epoch_length=iters_per_epoch)) for s in schedulers]
    rates = []
    for _ in range(epochs):
        for _ in range(iters_per_epoch):
            rates.append(wrapper.get_lr()['lr'][0])
            for s in built:
                if not s.by_epoch:
                    s.step()
        for s in built:
            if s.by_epoch:
                s.step()
    return rates


def test_epochs_become_iterations_with_the_same_schedule(mt_cfg):
    epochs, per_epoch = mt_cfg.train_cfg.max_epochs, 7
    before = learning_rates(mt_cfg.param_scheduler, epochs, per_epoch)
    cfg = copy.deepcopy(mt_cfg)
    cfg.custom_hooks.append(dict(type='LossPredictionStopGradientHook', stop_epoch=10))
    epochs_as_iterations(cfg, per_epoch)
    assert cfg.train_cfg == dict(type='IterBasedTrainLoop', max_iters=epochs * per_epoch,
                                 val_interval=epochs * per_epoch)
    after = learning_rates(cfg.param_scheduler, epochs, per_epoch)
    assert all(not s.get('by_epoch', True) or s['convert_to_iter_based']
               for s in cfg.param_scheduler)
    # every epoch starts at the epoch-based rate (mmengine's chained cosine steps differ in
    # rounding, ~1e-5); within an epoch the cosine moves on
    assert after[::per_epoch] == pytest.approx(before[::per_epoch], rel=1e-4)
    assert after[:per_epoch] == pytest.approx(before[:per_epoch], rel=1e-2)  # the warm-up
    assert after[per_epoch + 1] < before[per_epoch + 1]
    checkpoint = cfg.default_hooks.checkpoint
    assert not checkpoint.by_epoch and checkpoint.interval == 5 * per_epoch
    assert cfg.log_processor.by_epoch is False
    assert cfg.custom_hooks[-1] == dict(type='LossPredictionStopGradientHook',
                                        stop_iter=10 * per_epoch)


def test_a_cycle_trains_its_labeled_sets_epochs(mt_cfg):
    semi = SemiSupervisedSettings.from_config(mt_cfg.active_learning.semi_supervised)
    for labeled, per_epoch in ((100, 7), (112, 7), (113, 8), (400, 25)):
        cfg = copy.deepcopy(mt_cfg)
        semi.schedule(cfg, labeled)  # 16 labeled images a batch
        assert cfg.train_cfg.max_iters == 24 * per_epoch, labeled
    iteration_based = copy.deepcopy(mt_cfg)
    iteration_based.train_cfg = dict(type='IterBasedTrainLoop', max_iters=50)
    semi.schedule(iteration_based, 100)
    assert iteration_based.train_cfg.max_iters == 50


def test_a_hook_counting_epochs_is_refused_naming_it(mt_cfg, tmp_path):
    mt_cfg.custom_hooks.append(dict(type='PipelineSwitchHook', switch_epoch=20,
                                    switch_pipeline=[]))
    with pytest.raises(ConfigError, match=r'PipelineSwitchHook counts epochs \(switch_epoch\)'):
        ActiveLearningExperiment(mt_cfg, str(tmp_path))
    assert not (tmp_path / 'al_state.json').exists()


# ------------------------------------------------------------------ two cycles
@pytest.mark.slow
def test_two_shrunk_cycles_train_the_mean_teacher(mt_cfg, tmp_path):
    cfg = mt_cfg
    cfg.train_dataloader.batch_size = 4  # 2 labeled + 2 unlabeled
    cfg.test_dataloader.batch_size = 4
    cfg.train_cfg.max_epochs = 2
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True)]
    cfg.active_learning.update(initial_size=8, budget_per_cycle=4, num_cycles=2,
                               score_batch_size=4, ranking_eval_size=4)
    cfg.active_learning.stopping = dict(stop_set_size=0)
    ActiveLearningExperiment(cfg, str(tmp_path)).run()
    data = json.loads((tmp_path / 'al_state.json').read_text())
    assert data['status'] == 'finished'
    c0, c1 = data['cycles']
    assert c1['labeled_added'] == [p['id'] for p in c0['selected']]
    for cycle, labeled in ((c0, 8), (c1, 12)):
        assert cycle['num_labeled'] == labeled
        assert 0.0 <= cycle['metrics']['pascal_voc/mAP'] <= 1.0
        meta = torch.load(cycle['checkpoint'], map_location='cpu', weights_only=False)['meta']
        assert meta['iter'] == 2 * labeled // 2  # 2 epochs of the labeled set, 2 a batch
    state = torch.load(c1['checkpoint'], map_location='cpu', weights_only=False)['state_dict']
    assert any(k.startswith('task_model.teacher.') for k in state)
    log = (tmp_path / 'al_train.log').read_text()
    assert 'cycle 1: training on 12 labeled samples and the 6 unlabeled ones' in log
