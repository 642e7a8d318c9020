"""Learning Loss on mmpose's top-down estimators, and the MPII-format data."""
import copy
import json
import re
import warnings

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmpose.registry import DATASETS, MODELS
from scipy.io import loadmat, savemat

from mmal.datasets import (
    MPII_JOINTS,
    MPIIAnnotationError,
    MPIISceneConfig,
    build_pool,
    generate_mpii_dataset,
    validate_mpii_annotations,
)
from mmal.datasets.dataset_configs import check_data_paths
from mmal.datasets.mpii_format import MPII_HEADBOX_KEYS, MPII_MAT_JOINT_NAMES, MPII_RECORD_KEYS
from mmal.hooks import LossPredictionStopGradientHook
from mmal.models import CompactHourglassNet, LearningLossPoseEstimator
from mmal.models.pose.learning_loss_pose_estimator import loss_calls
from mmal.models.replay import batched_sample_values, looped_sample_values
from mmal.utils import ConfigError

from .conftest import REPO, use_mpii_root

FULL_CONFIG = 'configs/learning_loss/hourglass52_ll_mpii-256x256.py'


def build(cfg, seed=0):
    init_default_scope('mmpose')
    torch.manual_seed(seed)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    return model


def dataset(cfg, split='train', with_targets=True):
    init_default_scope('mmpose')
    loader = cfg.train_dataloader if split == 'train' else cfg.val_dataloader
    ds_cfg = copy.deepcopy(loader.dataset)
    if split != 'train' and with_targets:
        # the validation persons with targets and no augmentation
        ds_cfg.pop('headbox_file', None)
        ds_cfg.test_mode = False
        ds_cfg.pipeline = [t for t in ds_cfg.pipeline if t['type'] != 'PackPoseInputs'] + [
            dict(type='GenerateTarget', encoder=cfg.codec), dict(type='PackPoseInputs')]
    return DATASETS.build(ds_cfg)


def batch(cfg, n, split='train', seed=0):
    torch.manual_seed(seed)
    np.random.seed(seed)
    ds = dataset(cfg, split)
    return pseudo_collate([ds[i] for i in range(n)])


# ------------------------------------------------------------ per-sample losses
def test_per_sample_losses_average_to_mmposes_batch_loss(pose_cfg):
    model = build(pose_cfg)
    model.train()
    data = model.data_preprocessor(batch(pose_cfg, 6), True)
    feats, _ = model._extract(data['inputs'])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        losses, per_sample = model.task_loss(feats, data['data_samples'])
    assert not [w for w in caught if 'per-sample losses average' in str(w.message)]
    assert per_sample.shape == (6,) and not per_sample.requires_grad
    # mmpose's own loss dict, unchanged: the same numbers as TopdownPoseEstimator.loss
    own = model.task_model.loss(data['inputs'], data['data_samples'])
    assert set(losses) == set(own) == {'loss_kpt', 'acc_pose'}
    assert losses['loss_kpt'].item() == pytest.approx(own['loss_kpt'].item(), rel=1e-5)
    # averaged back, the per-sample losses are the batch loss (summed over both stacks)
    assert per_sample.mean().item() == pytest.approx(losses['loss_kpt'].item(), rel=1e-5)
    # and each is the weighted heatmap MSE of that sample alone, summed over the stacks
    heatmaps = model.task_model.head.forward(feats)
    gt = torch.stack([s.gt_fields.heatmaps for s in data['data_samples']])
    w = torch.cat([s.gt_instance_labels.keypoint_weights for s in data['data_samples']])
    by_hand = sum(((h - gt) ** 2 * w[:, :, None, None]).flatten(1).mean(1) for h in heatmaps)
    torch.testing.assert_close(per_sample, by_hand.detach(), rtol=1e-5, atol=1e-9)


def test_weighted_out_joints_do_not_contribute(pose_cfg):
    model = build(pose_cfg)
    model.eval()  # fixed BN statistics: the same features for both passes
    data = model.data_preprocessor(batch(pose_cfg, 4), True)
    with torch.no_grad():
        feats, _ = model._extract(data['inputs'])
        _, before = model.task_loss(feats, data['data_samples'])
        samples = copy.deepcopy(data['data_samples'])
        weights = samples[0].gt_instance_labels.keypoint_weights
        visible = torch.nonzero(weights[0] > 0).flatten()
        joint = int(visible[0])
        weights[0, joint] = 0
        _, weighted_out = model.task_loss(feats, samples)
        # whatever the target of a weighted-out joint says, the loss ignores it
        samples[0].gt_fields.heatmaps[joint] = 50.0
        _, garbage_target = model.task_loss(feats, samples)
    assert weighted_out[0] < before[0]
    assert garbage_target[0].item() == pytest.approx(weighted_out[0].item(), rel=1e-6)
    torch.testing.assert_close(garbage_target[1:], before[1:])


class BranchyMSELoss(torch.nn.Module):
    """A heatmap MSE with a Python branch on a tensor's value: vmap cannot run it."""

    def forward(self, output, target, target_weights):
        if bool((target_weights > 0).any()):
            return ((output - target) ** 2 * target_weights[:, :, None, None]).mean()
        return output.new_zeros(())


MODELS.register_module(name='BranchyMSELoss', module=BranchyMSELoss, force=True)


@pytest.mark.parametrize('loss,with_mask', [
    (dict(type='KeypointMSELoss', use_target_weight=True), False),
    (dict(type='KeypointMSELoss', use_target_weight=False), False),
    (dict(type='KeypointMSELoss', use_target_weight=True, skip_empty_channel=True), True),
    (dict(type='KeypointOHKMMSELoss', use_target_weight=True, topk=4), False),
])
def test_batched_per_sample_values_are_the_loops(loss, with_mask):
    init_default_scope('mmpose')
    module = MODELS.build(loss)
    torch.manual_seed(0)
    output, target = torch.randn(5, 16, 8, 8), torch.rand(5, 16, 8, 8)
    target[1, 3] = 0  # an empty channel
    weights = (torch.rand(5, 16) > 0.3).float()
    kwargs = {}
    if with_mask:  # shared by all samples (first dimension 1): not vmapped over
        kwargs['mask'] = (torch.rand(1, 1, 8, 8) > 0.2).float()
    batched = batched_sample_values(module, (output, target, weights), kwargs, 5)
    looped = looped_sample_values(module, (output, target, weights), kwargs, 5)
    assert batched.shape == (5,)
    torch.testing.assert_close(batched, looped, rtol=1e-6, atol=1e-9)


def _count_calls(module):
    calls = []
    module.register_forward_pre_hook(lambda *_: calls.append(1))  # failed calls too
    return calls


def test_task_loss_batches_the_multi_stack_mse_calls(pose_cfg):
    """CPMHead, KeypointMSELoss with target weights: one batched call per stack."""
    from mmpose.models.losses import KeypointMSELoss
    model = build(pose_cfg)
    model.eval()
    data = model.data_preprocessor(batch(pose_cfg, 5), True)
    with torch.no_grad():
        feats, _ = model._extract(data['inputs'])
        head = model.task_model.head
        with loss_calls(model._loss_modules) as recorded:
            head.loss(feats, data['data_samples'], train_cfg=model.task_model.train_cfg)
        assert len(recorded) == 2  # one per stack
        looped = sum(looped_sample_values(m, a, kw, 5) for m, a, kw, _ in recorded)
        _, first = model.task_loss(feats, data['data_samples'])
        assert model._batched_loss_types == {KeypointMSELoss: True}
        calls = _count_calls(head.loss_module)
        _, batched = model.task_loss(feats, data['data_samples'])
    # head.loss's own two calls, then one batched call per stack (not one per sample)
    assert len(calls) == 2 + 2
    torch.testing.assert_close(batched, looped, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(first, looped, rtol=1e-6, atol=1e-9)


def test_task_loss_falls_back_to_the_loop_for_a_loss_vmap_cannot_run(pose_cfg):
    cfg = copy.deepcopy(pose_cfg)
    cfg.model.estimator.head.loss = dict(type='BranchyMSELoss')
    model = build(cfg)
    model.eval()
    data = model.data_preprocessor(batch(cfg, 4), True)
    calls = _count_calls(model.task_model.head.loss_module)
    with torch.no_grad():
        feats, _ = model._extract(data['inputs'])
        _, first = model.task_loss(feats, data['data_samples'])
        # head.loss's two calls, one vmap attempt that fails, then the loop for both stacks
        assert len(calls) == 2 + 1 + 2 * 4
        assert model._batched_loss_types == {BranchyMSELoss: False}
        calls.clear()
        _, second = model.task_loss(feats, data['data_samples'])
    assert len(calls) == 2 + 2 * 4  # remembered: no second attempt
    heatmaps = model.task_model.head.forward(feats)
    gt = torch.stack([s.gt_fields.heatmaps for s in data['data_samples']])
    w = torch.cat([s.gt_instance_labels.keypoint_weights for s in data['data_samples']])
    by_hand = sum(((h - gt) ** 2 * w[:, :, None, None]).flatten(1).mean(1) for h in heatmaps)
    torch.testing.assert_close(first, by_hand, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(second, first)


def test_missing_joints_get_zero_weight_from_mmposes_pipeline(pose_cfg, mpii_root):
    records = json.loads((mpii_root / 'annotations/mpii_train.json').read_text())
    index = next(i for i, r in enumerate(records) if 0 < sum(r['joints_vis']) < 16)
    ds = dataset(pose_cfg)
    sample = ds[index]['data_samples']
    weights = sample.gt_instance_labels.keypoint_weights[0]
    for j, vis in enumerate(records[index]['joints_vis']):
        if not vis:
            assert weights[j] == 0, MPII_JOINTS[j]


# ------------------------------------------------------------ training behaviour
def test_train_step_logs_and_backpropagates(pose_cfg):
    model = build(pose_cfg)
    model.train()
    data = model.data_preprocessor(batch(pose_cfg, 4), True)
    losses = model.loss(**data)
    assert {'loss_kpt', 'acc_pose', 'loss_rank', 'loss_target'} <= set(losses)
    loss, log_vars = model.parse_losses(losses)
    assert float(log_vars['loss']) == pytest.approx(
        float(log_vars['loss_target'] + log_vars['loss_rank']), rel=1e-5)
    assert float(log_vars['loss_target']) == pytest.approx(float(losses['loss_kpt']), rel=1e-5)
    loss.backward()
    assert model.loss_prediction.out.weight.grad.abs().sum() > 0
    assert model.task_model.head.multi_final_layers[0].weight.grad.abs().sum() > 0


def test_ranking_gradient_reaches_the_hourglass_until_the_stop_point(pose_cfg):
    model = build(pose_cfg)
    model.train()
    data = model.data_preprocessor(batch(pose_cfg, 4), True)
    hook = LossPredictionStopGradientHook(stop_epoch=3)
    tapped = model.task_model.backbone.hourglass_modules[1]

    class FakeRunner:
        def __init__(self, epoch):
            self.model, self.epoch, self.iter = model, epoch, 0

    def rank_grads():
        model.zero_grad()
        model.loss(**data)['loss_rank'].backward()
        inner = sum(p.grad.abs().sum().item() for p in tapped.parameters()
                    if p.grad is not None)
        return inner, model.loss_prediction.out.weight.grad.abs().sum().item()

    hook.before_train_iter(FakeRunner(epoch=2), 0)
    inner, module = rank_grads()
    assert model.detach_features is False and inner > 0 and module > 0
    hook.before_train_iter(FakeRunner(epoch=3), 0)
    inner, module = rank_grads()
    assert model.detach_features is True and inner == 0 and module > 0


def test_full_hourglass52_config_builds_and_trains_one_step_at_batch_2(mpii_root):
    """mmpose's Hourglass-52 MPII config, 256x256, as shipped (no pretrained init)."""
    from mmengine.optim import build_optim_wrapper
    cfg = use_mpii_root(Config.fromfile(str(REPO / FULL_CONFIG)), mpii_root)
    assert cfg.model.estimator.backbone.num_stacks == 1
    assert cfg.codec.input_size == (256, 256) and cfg.codec.heatmap_size == (64, 64)
    assert cfg.val_dataloader.dataset.headbox_file.endswith('annotations/mpii_gt_val.mat')
    assert cfg.val_evaluator.type == 'MpiiPCKAccuracy'
    hooks = {h.type: h for h in cfg.custom_hooks}
    assert hooks['LossPredictionStopGradientHook'].stop_fraction == 0.6
    assert cfg.model.rank_loss_weight == 1e-4  # the paper's lambda for pose
    _drop_pretrained(cfg.model)
    model = build(cfg)
    assert isinstance(model, LearningLossPoseEstimator)
    model.train()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    before = model.task_model.backbone.out_convs[0].conv.weight.detach().clone()
    log_vars = model.train_step(batch(cfg, 2), optim)
    assert all(np.isfinite(float(v)) for v in log_vars.values())
    assert {'loss', 'loss_kpt', 'loss_rank', 'loss_target'} <= set(log_vars)
    assert not torch.equal(before, model.task_model.backbone.out_convs[0].conv.weight)
    maps = model.score_step(batch(cfg, 2, split='val'), ('features',))['features']
    assert maps.shape == (2, 512 + 384 + 384 + 256 + 256)


def _drop_pretrained(node):
    if isinstance(node, dict):
        if isinstance(node.get('init_cfg'), dict) and node['init_cfg'].get('type') == 'Pretrained':
            node['init_cfg'] = None
        for value in node.values():
            _drop_pretrained(value)
    elif isinstance(node, list):
        for value in node:
            _drop_pretrained(value)


# ------------------------------------------------------------ scoring API
def test_score_step_serves_every_strategy_and_predicts_like_mmpose(pose_cfg):
    model = build(pose_cfg)
    model.eval()
    data = batch(pose_cfg, 3, split='val')
    out = model.score_step(data, ('pred_loss', 'features', 'heatmaps', 'predictions'))
    assert out['pred_loss'].shape == (3,)
    assert out['features'].shape == (3, 64 + 96 + 96 + 64 + 64)
    # CPMHead: one heatmap batch per stack; the final one is the prediction
    stacks = model.task_model.head.forward(model.task_model.extract_feat(
        model.data_preprocessor(copy.deepcopy(data), False)['inputs']))
    torch.testing.assert_close(out['heatmaps'], stacks[-1])
    assert out['heatmaps'].shape == (3, 16, 16, 16)
    with pytest.raises(ValueError, match='pose estimator gives heatmaps'):
        model.score_step(data, ('posteriors',))
    # the same keypoints as mmpose's own predict, flip test included
    assert model.task_model.test_cfg['flip_test'] is True
    processed = model.data_preprocessor(copy.deepcopy(data), False)
    reference = model.task_model.predict(processed['inputs'], processed['data_samples'])
    for ours, theirs in zip(out['predictions'], reference):
        np.testing.assert_allclose(ours.pred_instances.keypoints,
                                   theirs.pred_instances.keypoints, rtol=1e-5, atol=1e-4)
    # 'predict' mode is mmpose's entry point: what the evaluator sees
    predicted = model(**model.data_preprocessor(copy.deepcopy(data), False), mode='predict')
    np.testing.assert_allclose(predicted[0].pred_instances.keypoints,
                               reference[0].pred_instances.keypoints, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------ configuration errors
@pytest.mark.parametrize('change,error,match', [
    (lambda m: m.estimator.update(type='BottomupPoseEstimator'), TypeError,
     r"model.estimator.type='BottomupPoseEstimator' is not a top-down"),
    (lambda m: m.update(taps=['backbone.hourglas_modules.1.low2']), ValueError,
     r"model.taps\[0\].*Did you mean 'backbone.hourglass_modules.1.low2'"),
    (lambda m: m.loss_prediction.update(in_channels=[64, 96, 96, 64, 32]), ValueError,
     r'in_channels\[4\]=32.*set in_channels\[4\]=64'),
    (lambda m: m.update(rank_loss_weight=-1), ValueError, 'rank_loss_weight=-1'),
])
def test_bad_model_config_names_the_key(pose_cfg, change, error, match):
    cfg = copy.deepcopy(pose_cfg)
    change(cfg.model)
    with pytest.raises(error, match=match):
        model = build(cfg)
        model.loss_prediction(model._extract(torch.zeros(1, 3, 64, 64))[1])


def test_compact_hourglass_is_mmposes_hourglass_with_a_configurable_stem():
    from mmpose.models.backbones import HourglassNet
    kwargs = dict(downsample_times=2, num_stacks=2, stage_channels=(256, 64, 64),
                  stage_blocks=(1, 1, 1), feat_channel=32)
    ours = CompactHourglassNet(stem_channels=128, **kwargs).state_dict()
    theirs = HourglassNet(**kwargs).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    small = CompactHourglassNet(stem_channels=16, **dict(kwargs, stage_channels=(32, 48, 48)))
    outs = small(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 16, 16)] * 2


# ------------------------------------------------------------ generated MPII data
def test_generated_files_have_exactly_the_mpii_fields(mpii_root):
    for split in ('train', 'val'):
        records = json.loads((mpii_root / f'annotations/mpii_{split}.json').read_text())
        assert records
        for r in records:
            assert tuple(r) == MPII_RECORD_KEYS
            assert len(r['joints']) == len(r['joints_vis']) == 16
            assert re.fullmatch(r'\d{9}\.jpg', r['image'])
            assert (mpii_root / 'images' / r['image']).is_file()
            assert r['scale'] > 0 and len(r['center']) == 2
            for (x, y), vis in zip(r['joints'], r['joints_vis']):
                assert vis in (0, 1)
                assert (x, y) == (-1.0, -1.0) if not vis else x >= 1 and y >= 1
    val = json.loads((mpii_root / 'annotations/mpii_val.json').read_text())
    mat = loadmat(str(mpii_root / 'annotations/mpii_gt_val.mat'))
    assert set(MPII_HEADBOX_KEYS) <= set(mat)
    n = len(val)
    assert mat['headboxes_src'].shape == (2, 2, n)
    assert mat['pos_gt_src'].shape == mat['pos_pred_src'].shape == (16, 2, n)
    assert mat['jnt_missing'].shape == (16, n)
    assert mat['dataset_joints'].shape == (1, 16)
    assert [str(v[0]) for v in mat['dataset_joints'][0]] == list(MPII_MAT_JOINT_NAMES)
    # the evaluation tooling's way to find a joint (HRNet / pytorch-pose eval scripts)
    assert np.where(mat['dataset_joints'] == 'head')[1][0] == MPII_JOINTS.index('head_top')
    vis = np.array([r['joints_vis'] for r in val])
    np.testing.assert_array_equal(mat['jnt_missing'].T, 1 - vis)
    np.testing.assert_allclose(mat['pos_gt_src'].transpose(2, 0, 1),
                               np.array([r['joints'] for r in val]))


def test_generation_is_seeded_per_image_and_atomic(tmp_path):
    cfg = MPIISceneConfig(num_train=6, num_val=3, seed=4)
    a = generate_mpii_dataset(tmp_path / 'a' / 'mpii', cfg)
    b = generate_mpii_dataset(tmp_path / 'b' / 'mpii', cfg)
    for name in ('annotations/mpii_train.json', 'annotations/mpii_val.json',
                 'images/000000005.jpg'):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert generate_mpii_dataset(a, cfg) == a  # the same set is kept
    with pytest.raises(FileExistsError, match='other settings'):
        generate_mpii_dataset(a, MPIISceneConfig(num_train=7, num_val=3, seed=4))
    assert sorted(p.name for p in (tmp_path / 'a').iterdir()) == ['mpii']  # no temp left
    meta = json.loads((a / 'mmal_meta.json').read_text())
    assert len(meta['records']['train']) == len(json.loads(
        (a / 'annotations/mpii_train.json').read_text()))
    assert all(0 <= r['difficulty'] <= 1 for r in meta['records']['train'])


def test_mmpose_reads_and_scores_the_generated_data_unchanged(pose_cfg, mpii_root):
    """MpiiDataset loads it; MpiiPCKAccuracy gives 100 PCKh to the ground truth."""
    from mmpose.evaluation import MpiiPCKAccuracy
    ds = dataset(pose_cfg, 'val', with_targets=False)
    val = json.loads((mpii_root / 'annotations/mpii_val.json').read_text())
    assert len(ds) == len(val)
    metric = MpiiPCKAccuracy()
    metric.dataset_meta = ds.metainfo
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        assert info['head_size'].shape == (1, 1) and info['head_size'][0, 0] > 0
        gt = dict(keypoints=info['keypoints'], keypoints_visible=info['keypoints_visible'],
                  head_size=info['head_size'])
        # the metric adds 1 to predictions (MATLAB indexing): predict gt - 1
        metric.process([], [dict(gt_instances=gt,
                                 pred_instances=dict(keypoints=info['keypoints'] - 1))])
    result = metric.compute_metrics(metric.results)
    assert result['PCK'] == pytest.approx(100.0) and result['PCK@0.1'] == pytest.approx(100.0)


def test_pool_ids_are_image_paths_with_a_suffix_per_further_person(pose_cfg, mpii_root):
    init_default_scope('mmpose')
    pool = build_pool(pose_cfg.train_dataloader.dataset)
    records = json.loads((mpii_root / 'annotations/mpii_train.json').read_text())
    assert len(pool) == len(records) and len(set(pool.ids)) == len(pool.ids)
    seen = {}
    for sample_id, r in zip(pool.ids, records):
        k = seen.get(r['image'], 0)
        seen[r['image']] = k + 1
        base = 'images/' + r['image'][:-4]
        assert sample_id == (base if k == 0 else f'{base}#{k}')
    assert any('#1' in i for i in pool.ids)
    assert build_pool(pose_cfg.train_dataloader.dataset).ids == pool.ids  # stable


# ------------------------------------------------------------ bad annotations
def _corrupt(tmp_path, mpii_root, change):
    records = json.loads((mpii_root / 'annotations/mpii_train.json').read_text())
    change(records)
    path = tmp_path / 'mpii_train.json'
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize('change,match', [
    (lambda r: r[3].pop('joints_vis'), r"record 3 \(image '\d+\.jpg'\): missing field\(s\) "
                                       r"\['joints_vis'\]"),
    (lambda r: r[2].update(joints=r[2]['joints'][:15]),
     r"record 2 \(image '\d+\.jpg'\): \"joints\" must list 16 \[x, y\] points.*got 15"),
    (lambda r: r[1].update(joints_vis=r[1]['joints_vis'] + [1]),
     r'record 1 .*"joints_vis" must list 16 flags.*got 17'),
    (lambda r: r[4].update(image='999999999.jpg'),
     r"record 4 \(image '999999999.jpg'\): image file .*999999999.jpg' not found"),
    (lambda r: r[0].update(image='person.jpg'), r"record 0 .*'person.jpg' is not numeric"),
    (lambda r: r[5].update(scale=0), r'record 5 .*"scale" must be a positive number'),
])
def test_a_corrupted_annotation_is_refused_naming_file_and_record(
        tmp_path, mpii_root, change, match):
    path = _corrupt(tmp_path, mpii_root, change)
    with pytest.raises(MPIIAnnotationError, match=match) as err:
        validate_mpii_annotations(path, img_dir=str(mpii_root / 'images'))
    assert str(path) in str(err.value)


def test_the_experiment_checks_refuse_a_corrupted_annotation(tmp_path, pose_cfg, mpii_root):
    path = _corrupt(tmp_path, mpii_root, lambda r: r[3].pop('joints_vis'))
    cfg = copy.deepcopy(pose_cfg)
    cfg.train_dataloader.dataset.ann_file = str(path)
    with pytest.raises(ConfigError, match=r"train_dataloader.dataset: .*mpii_train.json: "
                                          r"record 3 \(image '\d+.jpg'\): missing field"):
        check_data_paths(cfg, ('train_dataloader',))
    cfg = copy.deepcopy(pose_cfg)
    cfg.test_dataloader.dataset.headbox_file = str(tmp_path / 'none.mat')
    with pytest.raises(ConfigError, match=r"test_dataloader.dataset.headbox_file=.*none.mat"):
        check_data_paths(cfg, ('test_dataloader',))
    check_data_paths(pose_cfg)  # the generated set passes


def test_a_headbox_file_for_other_records_is_refused(tmp_path, mpii_root):
    mat = loadmat(str(mpii_root / 'annotations/mpii_gt_val.mat'))
    savemat(str(tmp_path / 'short.mat'), {'headboxes_src': mat['headboxes_src'][:, :, :-1]})
    with pytest.raises(MPIIAnnotationError, match=r'short.mat: "headboxes_src" has shape '
                                                  r'\(2, 2, \d+\), expected \(2, 2, \d+\)'):
        validate_mpii_annotations(mpii_root / 'annotations/mpii_val.json',
                                  headbox_file=str(tmp_path / 'short.mat'))


def test_files_in_the_real_mpii_format_load_the_same_way(tmp_path, mpii_root):
    """Records as the HRNet / mmpose conversion writes them (indent 4, integer
    flags, float coordinates, missing joints at -1) and a headbox file with the
    real file's arrays, written here without our writer."""
    root = tmp_path / 'mpii'
    (root / 'annotations').mkdir(parents=True)
    (root / 'images').symlink_to(mpii_root / 'images')
    generated = json.loads((mpii_root / 'annotations/mpii_val.json').read_text())[:3]
    real = []
    for r in generated:
        joints = [[float(x), float(y)] for x, y in r['joints']]
        real.append({'joints_vis': [int(v) for v in r['joints_vis']], 'joints': joints,
                     'image': r['image'], 'scale': float(r['scale']),
                     'center': [float(c) for c in r['center']]})
    real[0]['joints_vis'][0] = 0
    real[0]['joints'][0] = [-1.0, -1.0]
    (root / 'annotations/mpii_val.json').write_text(json.dumps(real, indent=4))
    n = len(real)
    names = np.empty((1, 16), dtype=object)
    names[0] = MPII_MAT_JOINT_NAMES
    boxes = np.array([[[10.0, 10.0], [30.0, 34.0]]] * n).transpose(1, 2, 0)
    savemat(str(root / 'annotations/mpii_gt_val.mat'), dict(
        dataset_joints=names,
        jnt_missing=np.array([[1 - v for v in r['joints_vis']] for r in real]).T,
        pos_pred_src=np.zeros((16, 2, n)),
        pos_gt_src=np.array([r['joints'] for r in real]).transpose(1, 2, 0),
        headboxes_src=boxes))
    headbox = str(root / 'annotations/mpii_gt_val.mat')
    assert validate_mpii_annotations(root / 'annotations/mpii_val.json',
                                     img_dir=str(root / 'images'), headbox_file=headbox) == n
    init_default_scope('mmpose')

    def load(data_root, headbox_file):
        ds = DATASETS.build(dict(type='MpiiDataset', data_root=str(data_root) + '/',
                                 ann_file='annotations/mpii_val.json',
                                 headbox_file=headbox_file, data_prefix=dict(img='images/'),
                                 test_mode=True, pipeline=[]))
        return [ds.get_data_info(i) for i in range(len(ds))]

    theirs = load(root, headbox)
    ours = load(mpii_root, str(mpii_root / 'annotations/mpii_gt_val.mat'))[:n]
    for a, b in zip(theirs, ours):
        assert set(a) == set(b)
        for key in ('bbox_center', 'bbox_scale', 'keypoints', 'keypoints_visible', 'head_size'):
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
    assert theirs[0]['keypoints_visible'][0, 0] == 0
    np.testing.assert_allclose(theirs[1]['keypoints'], ours[1]['keypoints'])
    assert theirs[0]['head_size'][0, 0] == pytest.approx(0.6 * np.hypot(20, 24))
