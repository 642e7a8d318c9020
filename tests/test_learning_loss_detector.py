import copy

import numpy as np
import pytest
import torch
from mmdet.models.dense_heads import SSDHead
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.registry import init_default_scope

from mmal.hooks import LossPredictionStopGradientHook
from mmal.models import LearningLossDetector

register_all_modules()


def build(cfg):
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    return model


def batch(cfg, n, seed=0):
    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    ds = DATASETS.build(cfg.train_dataloader.dataset)
    from mmengine.dataset import pseudo_collate
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n].tolist()
    return pseudo_collate([ds[i] for i in idx])


def test_builds_from_registry_with_our_pieces(tiny_cfg):
    model = build(tiny_cfg)
    assert isinstance(model, LearningLossDetector)
    assert model.taps.num_hooks == 1
    assert model.loss_prediction.in_channels == [32, 64, 128, 128, 128]


def test_train_step_logs_and_backpropagates(tiny_cfg):
    model = build(tiny_cfg)
    model.train()
    data = model.data_preprocessor(batch(tiny_cfg, 4), True)
    losses = model.loss(**data)
    assert {'loss_cls', 'loss_bbox', 'loss_rank', 'loss_target'} <= set(losses)
    loss, log_vars = model.parse_losses(losses)
    assert {'loss', 'loss_rank', 'loss_target', 'rank_acc'} <= set(log_vars)
    # loss_target is logged, not added a second time
    total = float(log_vars['loss_target'] + log_vars['loss_rank'])
    assert float(log_vars['loss']) == pytest.approx(total, rel=1e-5)
    loss.backward()
    assert model.loss_prediction.out.weight.grad.abs().sum() > 0


def _rank_grads(model, data):
    model.zero_grad()
    losses = model.loss(**data)
    losses['loss_rank'].backward()
    neck = sum(p.grad.abs().sum().item() for p in model.task_model.neck.parameters()
               if p.grad is not None)
    module = model.loss_prediction.out.weight.grad.abs().sum().item()
    return neck, module


def test_ranking_gradient_reaches_taps_until_stop_point(tiny_cfg):
    model = build(tiny_cfg)
    model.train()
    data = model.data_preprocessor(batch(tiny_cfg, 4), True)
    hook = LossPredictionStopGradientHook(stop_epoch=3)

    class FakeRunner:
        def __init__(self, epoch):
            self.model, self.epoch, self.iter = model, epoch, 0

    hook.before_train_iter(FakeRunner(epoch=2), 0)
    assert model.detach_features is False
    neck, module = _rank_grads(model, data)
    assert neck > 0 and module > 0
    hook.before_train_iter(FakeRunner(epoch=3), 0)
    assert model.detach_features is True
    neck, module = _rank_grads(model, data)
    assert neck == 0 and module > 0


def test_stop_hook_by_iteration_and_bad_arguments(tiny_cfg):
    model = build(tiny_cfg)

    class FakeRunner:
        epoch, iter = 0, 10

    FakeRunner.model = model
    LossPredictionStopGradientHook(stop_iter=11).before_train_iter(FakeRunner, 0)
    assert model.detach_features is False
    LossPredictionStopGradientHook(stop_iter=10).before_train_iter(FakeRunner, 0)
    assert model.detach_features is True
    with pytest.raises(ValueError, match='exactly one'):
        LossPredictionStopGradientHook()
    with pytest.raises(ValueError, match='stop_epoch'):
        LossPredictionStopGradientHook(stop_epoch=-1)


def test_per_image_losses_recombine_to_the_batch_loss(tiny_cfg):
    """Summed per-image losses over the batch's positives are mmdet's batch loss."""
    model = build(tiny_cfg)
    head = model.task_model.bbox_head
    assert head.per_image_normalizer == 'none'
    data = model.data_preprocessor(batch(tiny_cfg, 3), True)
    feats = model.task_model.extract_feat(data['inputs'])
    from mmdet.models.utils import unpack_gt_instances
    gts, ignore, metas = unpack_gt_instances(data['data_samples'])
    outs = head(feats)
    losses, summed = head.loss_by_feat_per_image(*outs, gts, metas, ignore)
    head.per_image_normalizer = 'positives'
    _, normalised = head.loss_by_feat_per_image(*outs, gts, metas, ignore)
    batch_loss = sum(losses['loss_cls']) + sum(losses['loss_bbox'])
    num_pos = summed / normalised
    assert torch.allclose(num_pos, num_pos.round()) and (num_pos >= 1).all()
    assert (summed.sum() / num_pos.sum()).item() == pytest.approx(batch_loss.item(), rel=1e-5)
    # normalised by its own positives, an image's loss is the loss it has alone
    for i in range(3):
        one = tuple([lvl[i:i + 1] for lvl in out] for out in outs)
        alone = head.loss_by_feat(*one, [gts[i]], [metas[i]], None)
        alone = sum(alone['loss_cls']) + sum(alone['loss_bbox'])
        assert normalised[i].item() == pytest.approx(alone.item(), rel=1e-4)
    # the training loss is mmdet's, unchanged
    plain = SSDHead.loss_by_feat(head, *outs, gts, metas, ignore)
    plain_loss = sum(plain['loss_cls']) + sum(plain['loss_bbox'])
    assert batch_loss.item() == pytest.approx(plain_loss.item(), rel=1e-6)
    assert not summed.requires_grad
    with pytest.raises(ValueError, match='per_image_normalizer'):
        MODELS.build(dict(tiny_cfg.model.detector.bbox_head, per_image_normalizer='batch'))


def test_generic_head_fallback_matches_ssd_fast_path(tiny_cfg):
    from mmdet.models.utils import unpack_gt_instances

    from mmal.models.detectors.learning_loss_detector import per_image_losses_by_slicing
    model = build(tiny_cfg)
    data = model.data_preprocessor(batch(tiny_cfg, 3), True)
    feats = model.task_model.extract_feat(data['inputs'])
    head = model.task_model.bbox_head
    head.per_image_normalizer = 'positives'  # what a batch of one computes
    _, fast = model.task_loss(feats, data['data_samples'])
    gts, ignore, metas = unpack_gt_instances(data['data_samples'])
    slow = per_image_losses_by_slicing(head, head(feats), gts, metas, ignore)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


def test_score_step_needs_no_labels_and_no_head(tiny_cfg):
    model = build(tiny_cfg).eval()
    data = batch(tiny_cfg, 2)
    for sample in data['data_samples']:
        del sample.gt_instances
    calls = []
    handle = model.task_model.bbox_head.register_forward_hook(lambda *a: calls.append(1))
    out = model.score_step(data, ('pred_loss', 'features'))
    assert out['pred_loss'].shape == (2,)
    assert out['features'].shape == (2, 32 + 64 + 128 + 128 + 128)
    assert calls == []
    out = model.score_step(data, ('predictions', 'posteriors', 'boxes'))
    assert len(out['predictions']) == 2 and 'bboxes' in out['predictions'][0].pred_instances
    assert len(out['posteriors']) == len(out['boxes']) == 2
    handle.remove()
    with pytest.raises(ValueError, match='unknown score outputs'):
        model.score_step(data, ('head_outputs',))


def test_candidate_boxes_are_decoded_like_mmdet_and_posteriors_have_background_last(tiny_cfg):
    """The most confident candidate is mmdet's own top detection (it survives NMS)."""
    model = build(tiny_cfg).eval()
    model.score_cfg = dict(num_boxes=50, score_thr=0.0)
    data = batch(tiny_cfg, 2)
    out = model.score_step(data, ('posteriors', 'boxes'))
    pre = model.data_preprocessor(copy.deepcopy(data), False)
    feats = model.task_model.extract_feat(pre['inputs'])
    head = model.task_model.bbox_head
    metas = [s.metainfo for s in pre['data_samples']]
    detections = head.predict_by_feat(*head(feats), batch_img_metas=metas, rescale=False)
    for probs, boxes, det in zip(out['posteriors'], out['boxes'], detections):
        probs, boxes = probs.numpy(), boxes.numpy()
        assert probs.shape == (50, 6) and boxes.shape == (50, 4)
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
        foreground = probs[:, :-1].max(1)
        assert (np.diff(foreground) <= 1e-7).all()           # best first
        top = int(det.scores.argmax())
        assert foreground[0] == pytest.approx(float(det.scores[top]), rel=1e-5)
        assert probs[0, :-1].argmax() == int(det.labels[top])
        np.testing.assert_allclose(boxes[0], det.bboxes[top].numpy(), rtol=1e-4, atol=1e-3)
    # score_cfg keeps the most confident foreground boxes, at least score_thr
    model.score_cfg = dict(num_boxes=3, score_thr=0.0)
    assert all(len(p) == 3 for p in model.score_step(data, ('posteriors',))['posteriors'])
    model.score_cfg = dict(num_boxes=50, score_thr=1.0)
    assert all(len(p) == 0 for p in model.score_step(data, ('posteriors',))['posteriors'])
    with pytest.raises(ValueError, match='a single-stage detector has no proposals'):
        model.score_step(data, ('proposals',))


def test_score_cfg_is_checked_naming_the_key():
    from mmal.models.detectors.candidates import check_score_cfg
    assert check_score_cfg(None) == dict(num_boxes=100, score_thr=0.05)
    with pytest.raises(ValueError, match=r"model.score_cfg: unknown keys \['nms_pre'\]"):
        check_score_cfg(dict(nms_pre=10))
    with pytest.raises(ValueError, match='model.score_cfg.num_boxes=0'):
        check_score_cfg(dict(num_boxes=0))
    with pytest.raises(ValueError, match='model.score_cfg.score_thr=2'):
        check_score_cfg(dict(score_thr=2))


def test_upstream_ssd_head_still_cannot_predict(tiny_cfg):
    """Guards our fix: when mmdet fixes SSDHead, PerImageLossSSDHead can go."""
    model = build(tiny_cfg).eval()
    head_cfg = copy.deepcopy(tiny_cfg.model.detector.bbox_head)
    head_cfg.type = 'SSDHead'
    head_cfg.test_cfg = tiny_cfg.model.detector.test_cfg
    plain = MODELS.build(head_cfg).eval()
    data = model.data_preprocessor(batch(tiny_cfg, 1), False)
    feats = model.task_model.extract_feat(data['inputs'])
    with pytest.raises(AttributeError, match='loss_cls'):
        plain.predict(feats, data['data_samples'])
    results = model.task_model.bbox_head.predict(feats, data['data_samples'])
    assert len(results) == 1


@pytest.mark.parametrize('change,match', [
    (lambda m: m.update(taps=['nek']), r"model.taps\[0\]='nek'.*Did you mean 'neck'"),
    (lambda m: m.update(rank_loss_weight=-1.0), 'rank_loss_weight=-1.0'),
    (lambda m: m.loss_prediction.update(in_channels=[32, 64, 100, 128, 128]),
     r'in_channels\[2\]=100.*set in_channels\[2\]=128'),
    (lambda m: m.detector.update(type='FasterRCNN'), 'not a single-stage|FasterRCNN'),
])
def test_bad_config_names_the_key(tiny_cfg, change, match):
    cfg = copy.deepcopy(tiny_cfg)
    change(cfg.model)
    with pytest.raises((ValueError, TypeError, KeyError), match=match):
        model = build(cfg)
        model.train()
        data = model.data_preprocessor(batch(tiny_cfg, 2), True)
        model.loss(**data)


def test_missing_data_root_names_the_key(tiny_cfg, tmp_path):
    from mmal.datasets.dataset_configs import check_data_paths
    from mmal.utils import ConfigError
    tiny_cfg.train_dataloader.dataset.data_root = str(tmp_path / 'nowhere')
    with pytest.raises(ConfigError, match=r"train_dataloader.dataset.data_root='.*nowhere'"):
        check_data_paths(tiny_cfg)


def test_plain_detector_checkpoints_load_into_the_wrapper(tiny_cfg, tmp_path):
    """load_from with an ordinary mmdet checkpoint (keys without task_model.)."""
    from mmengine.runner import load_checkpoint
    plain = MODELS.build(copy.deepcopy(tiny_cfg.model.detector))
    torch.manual_seed(1)
    plain.init_weights()
    path = tmp_path / 'plain.pth'
    torch.save(dict(state_dict=plain.state_dict()), path)
    model = build(tiny_cfg)
    module_before = model.loss_prediction.out.weight.clone()
    load_checkpoint(model, str(path), map_location='cpu')
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(model.task_model.state_dict()[name], value)
    torch.testing.assert_close(model.loss_prediction.out.weight, module_before)
    # our own checkpoints still load as they are
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'ours.pth')
    again = build(tiny_cfg)
    load_checkpoint(again, str(tmp_path / 'ours.pth'), map_location='cpu')
    torch.testing.assert_close(again.loss_prediction.out.weight, model.loss_prediction.out.weight)
