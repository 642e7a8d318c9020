"""The pieces behind the comparison: oracle, true losses, ranking, stop point, data."""
import copy
import json
import logging

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

from mmal.datasets import VOCSceneConfig, deterministic_pipeline, generate_voc_dataset
from mmal.hooks import LossPredictionStopGradientHook
from mmal.loop.settings import ActiveLearningSettings
from mmal.loop.shared_initial import SharedInitialCycle
from mmal.registry import STRATEGIES
from mmal.scoring import score_batches
from mmal.utils import ConfigError

from .conftest import REPO
from .test_learning_loss_detector import batch, build


# ------------------------------------------------------------------ oracle
def test_oracle_is_refused_unless_asked_for_as_a_diagnostic():
    with pytest.raises(ConfigError, match='diagnostic=True'):
        STRATEGIES.build(dict(type='OracleLossStrategy'))
    oracle = STRATEGIES.build(dict(type='OracleLossStrategy', diagnostic=True))
    assert oracle.needs_labels and oracle.outputs == ('target_loss',)


def test_oracle_scores_are_the_true_per_image_target_losses(tiny_cfg):
    """score_step's target_loss is the loss the ranking loss trains on, per image."""
    model = build(tiny_cfg)
    cfg = copy.deepcopy(tiny_cfg)
    cfg.train_dataloader.dataset.pipeline = deterministic_pipeline(
        cfg.train_dataloader.dataset.pipeline)
    data = batch(cfg, 6)
    oracle = STRATEGIES.build(dict(type='OracleLossStrategy', diagnostic=True),
                              default_args=dict(task='detection'))
    outputs = score_batches(model, [copy.deepcopy(data)], oracle.candidate_passes())
    scores = oracle.scores(outputs, {})
    model.eval()
    with torch.no_grad():
        pre = model.data_preprocessor(copy.deepcopy(data), False)
        feats = model.task_model.extract_feat(pre['inputs'])
        _, expected = model.task_loss(feats, pre['data_samples'])
    np.testing.assert_allclose(scores, expected.numpy(), rtol=1e-5)
    assert len(set(np.round(scores, 4))) > 1           # images differ in loss
    # the oracle's top K are the K largest true losses
    order, _ = oracle.select(outputs, {}, 3, np.random.default_rng(0))
    assert set(order) == set(np.argsort(-expected.numpy())[:3])


def test_deterministic_pipeline_drops_only_random_augmentations():
    ssd300 = Config.fromfile(str(REPO / 'configs/learning_loss/ssd300_ll_voc0712.py'))
    kept = [t['type'] for t in deterministic_pipeline(ssd300.train_pipeline)]
    assert kept == ['LoadImageFromFile', 'LoadAnnotations', 'Resize', 'PackDetInputs']
    pose = Config.fromfile(str(REPO / 'configs/_base_/datasets/synthetic_mpii.py'))
    kept = [t['type'] for t in deterministic_pipeline(pose.train_pipeline)]
    assert 'GenerateTarget' in kept and 'TopdownAffine' in kept
    assert not any(t.startswith('Random') for t in kept)
    resized = deterministic_pipeline([
        dict(type='LoadImageFromFile'),
        dict(type='RandomResize', scale=(640, 480), ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type='RandomChoiceResize', scales=[(320, 320), (416, 416)]),
        dict(type='PackDetInputs')])
    assert resized[1] == dict(type='Resize', scale=(640, 480), keep_ratio=True)
    assert resized[2] == dict(type='Resize', scale=(320, 320), keep_ratio=False)


# ------------------------------------------------------------------ stop point
class _Runner:
    def __init__(self, max_epochs=None, max_iters=100):
        from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
        loop = EpochBasedTrainLoop if max_epochs is not None else IterBasedTrainLoop
        self.train_loop = loop.__new__(loop)   # only its type is read
        self.max_epochs, self.max_iters = max_epochs or 1, max_iters
        self.logger = logging.getLogger('test_stop')


def test_stop_point_past_the_end_of_training_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r'stop_epoch=24 .*max_epochs=1'):
        LossPredictionStopGradientHook(stop_epoch=24).before_train(_Runner(max_epochs=1))
    with pytest.raises(ValueError, match='stop_iter=100'):
        LossPredictionStopGradientHook(stop_iter=100).before_train(_Runner(max_iters=100))
    LossPredictionStopGradientHook(stop_epoch=0).before_train(_Runner(max_epochs=1))


@pytest.mark.parametrize('max_epochs, expected', [(40, 24), (10, 6), (1, 0)])
def test_stop_fraction_follows_max_epochs(max_epochs, expected):
    hook = LossPredictionStopGradientHook(stop_fraction=0.6)
    hook.before_train(_Runner(max_epochs=max_epochs))
    assert hook.stop_epoch == expected


def test_stop_fraction_by_iteration_and_bad_values():
    hook = LossPredictionStopGradientHook(stop_fraction=0.5)
    hook.before_train(_Runner(max_epochs=None, max_iters=30))
    assert hook.stop_iter == 15 and hook.stop_epoch is None
    with pytest.raises(ValueError, match='needs epoch-based'):
        LossPredictionStopGradientHook(stop_epoch=1).before_train(_Runner(max_iters=30))
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match='stop_fraction'):
            LossPredictionStopGradientHook(stop_fraction=bad)
    with pytest.raises(ValueError, match='exactly one'):
        LossPredictionStopGradientHook(stop_epoch=1, stop_fraction=0.5)


def test_the_shipped_configs_stop_at_a_fraction_of_training():
    for path in ('configs/learning_loss/ssd-tiny_ll_synthetic-voc.py',
                 'configs/learning_loss/hourglass-tiny_ll_synthetic-mpii.py',
                 'configs/paper/ll_ssd300_voc0712_paper.py',
                 'configs/paper/ll_hourglass_mpii_paper.py'):
        hooks = {h['type']: h for h in Config.fromfile(str(REPO / path)).custom_hooks}
        assert 'stop_fraction' in hooks['LossPredictionStopGradientHook'], path


def test_paper_configs_carry_the_papers_settings():
    det = Config.fromfile(str(REPO / 'configs/paper/ll_ssd300_voc0712_paper.py'))
    assert (det.active_learning.initial_size, det.active_learning.budget_per_cycle,
            det.active_learning.num_cycles, det.active_learning.candidate_pool) == (
        1000, 1000, 10, 10000)
    assert det.model.rank_loss_weight == 1.0 and det.train_cfg.max_epochs == 300
    assert det.train_dataloader.batch_size == 32
    pose = Config.fromfile(str(REPO / 'configs/paper/ll_hourglass_mpii_paper.py'))
    assert pose.active_learning.candidate_pool == 5000
    assert pose.model.rank_loss_weight == 1e-4 and pose.train_cfg.max_epochs == 125
    hooks = {h['type']: h for h in pose.custom_hooks}
    assert int(hooks['LossPredictionStopGradientHook'].stop_fraction * 125) == 75


# ------------------------------------------------------------------ metric
def test_voc_metric_table_names_our_classes(voc_root):
    from mmdet.registry import METRICS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    metric = METRICS.build(dict(type='ClassNamedVOCMetric', metric='mAP',
                                eval_mode='11points'))
    classes = ('bottle', 'boat', 'car', 'sheep', 'tvmonitor')
    metric.dataset_meta = dict(classes=classes, dataset_type='VOC2007')
    gt = dict(bboxes=np.array([[10, 10, 50, 50]], np.float32), labels=np.array([3]),
              bboxes_ignore=np.zeros((0, 4), np.float32), labels_ignore=np.zeros(0, int))
    dets = [np.zeros((0, 5), np.float32) for _ in classes]
    dets[3] = np.array([[10, 10, 50, 50, 0.9]], np.float32)
    logger = MMLogger.get_instance('test_voc_names')
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        result = metric.compute_metrics([(gt, dets)])
    finally:
        logger.removeHandler(handler)
    table = '\n'.join(seen)
    assert 'sheep' in table and 'tvmonitor' in table and 'aeroplane' not in table
    assert result['mAP'] > 0.5          # the one box of class 3 is found
    assert metric.dataset_meta['dataset_type'] == 'VOC2007'   # restored


# ------------------------------------------------------------------ data
def test_generated_pool_has_near_duplicates_and_the_test_set_none(tmp_path):
    root = generate_voc_dataset(tmp_path / 'VOCdevkit', VOCSceneConfig(
        num_trainval=60, num_test=20, seed=3, duplicate_fraction=0.5, num_templates=3))
    meta = json.loads((root / 'mmal_meta.json').read_text())
    dups = meta['near_duplicate_of']
    assert 15 <= len(dups) <= 45 and all(int(i) <= 60 for i in dups)
    # copies of one template share their annotations and differ a little in pixels
    by_template = {}
    for img_id, t in dups.items():
        by_template.setdefault(t, []).append(img_id)
    a, b = next(ids for ids in by_template.values() if len(ids) > 1)[:2]
    strip = lambda p: p.read_text().replace(f'{a}.jpg', 'X').replace(f'{b}.jpg', 'X')  # noqa: E731
    assert strip(root / 'Annotations' / f'{a}.xml') == strip(root / 'Annotations' / f'{b}.xml')
    import cv2
    ia = cv2.imread(str(root / 'JPEGImages' / f'{a}.jpg')).astype(float)
    ib = cv2.imread(str(root / 'JPEGImages' / f'{b}.jpg')).astype(float)
    assert ia.shape == ib.shape and 0 < np.abs(ia - ib).mean() < 20
    assert all(meta['difficulty'][i] <= 0.25 for i in dups)
    none = generate_voc_dataset(tmp_path / 'plain', VOCSceneConfig(
        num_trainval=20, num_test=5, seed=3, duplicate_fraction=0.0))
    assert json.loads((none / 'mmal_meta.json').read_text())['near_duplicate_of'] == {}


# ------------------------------------------------------------------ settings / sharing
def test_a_state_written_before_new_settings_keys_still_resumes():
    settings = ActiveLearningSettings.from_config(dict(initial_size=4, budget_per_cycle=2,
                                                       num_cycles=2))
    old = {k: v for k, v in settings.to_dict().items()
           if k not in ('ranking_eval_size', 'target_loss_pipeline')}
    assert settings.differences(old) == []
    with pytest.raises(ConfigError, match='ranking_eval_size'):
        ActiveLearningSettings.from_config(dict(initial_size=4, budget_per_cycle=2,
                                                num_cycles=2, ranking_eval_size=-1))


def test_shared_cycle_of_another_experiment_is_refused(tmp_path):
    shared = SharedInitialCycle(tmp_path, key=dict(seed=0, config_digests={'model': 'a'}))
    with shared.locked():
        shared.write(checkpoint='x.pth')
    assert SharedInitialCycle(tmp_path, key=shared.key).read()['checkpoint'] == 'x.pth'
    other = SharedInitialCycle(tmp_path, key=dict(seed=0, config_digests={'model': 'b'}))
    with pytest.raises(ConfigError, match=r"another experiment \(differs in \['config_digests'\]"):
        other.read()


def test_generic_heads_rank_by_the_summed_per_image_loss(voc_root):
    """RetinaNet (no per-image head): summed = normalised x the image's positives."""
    cfg = Config.fromfile(str(REPO / 'tests/data/retinanet-tiny_ll_synthetic-voc.py'))
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(voc_root) + '/'
    model = build(cfg)
    assert model.per_image_normalizer == 'none'
    data = model.data_preprocessor(batch(cfg, 3), True)
    feats = model.task_model.extract_feat(data['inputs'])
    _, summed = model.task_loss(feats, data['data_samples'])
    model.per_image_normalizer = 'positives'
    _, normalised = model.task_loss(feats, data['data_samples'])
    ratio = summed / normalised
    assert torch.allclose(ratio, ratio.round(), atol=1e-3) and (ratio.round() >= 1).all()
    assert (ratio.round() > 1).any()      # some image has several positives
    # the loss modules are left as they were
    head = model.task_model.bbox_head
    assert 'forward' not in vars(head.loss_cls) and 'forward' not in vars(head.loss_bbox)


def test_sigmoid_heads_give_per_class_posteriors_that_entropy_reads_class_by_class(voc_root):
    """RetinaNet has no background class: its posteriors are per-class sigmoids."""
    cfg = Config.fromfile(str(REPO / 'tests/data/retinanet-tiny_ll_synthetic-voc.py'))
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(voc_root) + '/'
    model = build(cfg)
    model.score_cfg = dict(num_boxes=20, score_thr=0.0)  # untrained: keep unsure boxes too
    assert model.posterior_kind == 'sigmoid'
    entropy = STRATEGIES.build(dict(type='EntropyStrategy'), default_args=dict(task='detection'))
    data = batch(cfg, 2)
    outputs = score_batches(model, [data], entropy.candidate_passes())
    assert outputs['posterior_kind'] == 'sigmoid'
    for probs in outputs['posteriors']:
        assert probs.shape == (20, 5 + 1)
        # the background column is prod(1 - p_c), not a softmax remainder
        np.testing.assert_allclose(probs[:, -1], np.prod(1 - probs[:, :-1], axis=1), rtol=1e-5)
    scores = entropy.scores(outputs, {})
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 1)).all()
    # read as a softmax posterior, the same rows give another number: the kind matters
    as_softmax = entropy.scores(dict(outputs, posterior_kind='softmax'), {})
    assert not np.allclose(scores, as_softmax)
