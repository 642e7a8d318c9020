"""LearningLossTwoStageDetector: per-image losses, mmdet's batch loss, scoring outputs."""
import copy

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmal.models import LearningLossTwoStageDetector
from mmal.models.replay import summed_losses

from .conftest import REPO, voc_config
from .test_learning_loss_detector import batch

register_all_modules()

CONFIG = 'configs/learning_loss/faster-rcnn-tiny_ll_synthetic-voc.py'


@pytest.fixture
def frcnn_cfg(voc_root):
    """The small LL Faster R-CNN config pointed at the generated data."""
    return voc_config(CONFIG, voc_root)


def build(model_cfg, seed=0):
    init_default_scope('mmdet')
    torch.manual_seed(seed)
    model = MODELS.build(copy.deepcopy(model_cfg))
    model.init_weights()
    return model


def summed_objective(detector, inputs, data_samples):
    """mmdet's own loss with every loss module summing: the batch's summed objective."""
    heads = [detector.rpn_head, detector.roi_head.bbox_head]
    with summed_losses(heads[0]), summed_losses(heads[1]):
        losses = detector.loss(inputs, data_samples)
    return sum(t.sum() for k, v in losses.items() if 'loss' in k
               for t in (v if isinstance(v, (list, tuple)) else [v]))


def test_builds_from_the_config(frcnn_cfg):
    model = build(frcnn_cfg.model)
    assert isinstance(model, LearningLossTwoStageDetector)
    assert type(model.task_model).__name__ == 'FasterRCNN'
    assert model.posterior_kind == 'softmax'
    assert LearningLossTwoStageDetector.unsupported_outputs(
        {'posteriors', 'boxes', 'proposals', 'grad_embedding', 'heatmaps'}) == ['heatmaps']
    assert model.score_cfg == dict(num_boxes=100, score_thr=0.05)
    assert model.loss_prediction.in_channels == [32, 32, 32, 32]
    data = model.data_preprocessor(batch(frcnn_cfg, 2), False)
    _, maps = model._extract(data['inputs'])
    assert [m.shape[1:] for m in maps] == [(32, 32, 32), (32, 16, 16), (32, 8, 8), (32, 4, 4)]


def test_per_image_losses_add_up_to_the_summed_objective(frcnn_cfg):
    """Same seed: per-image losses sum to mmdet's loss with summing loss modules."""
    model = build(frcnn_cfg.model).train()
    for n in (1, 3):
        data = model.data_preprocessor(batch(frcnn_cfg, n, seed=n), True)
        torch.manual_seed(7)
        feats, _ = model._extract(data['inputs'])
        _, per_image = model.task_loss(feats, data['data_samples'])
        assert per_image.shape == (n,)
        assert torch.isfinite(per_image).all() and (per_image > 0).all()
        assert not per_image.requires_grad
        torch.manual_seed(7)
        expected = summed_objective(model.task_model, data['inputs'], data['data_samples'])
        # a batch of one: the image's loss is exactly its summed objective
        assert per_image.sum().item() == pytest.approx(expected.item(), rel=1e-5)


def test_per_image_losses_use_the_batch_sampling(frcnn_cfg):
    """Another seed samples other anchors and RoIs; the per-image loss follows the batch's."""
    model = build(frcnn_cfg.model).train()
    data = model.data_preprocessor(batch(frcnn_cfg, 2), True)
    feats, _ = model._extract(data['inputs'])
    results = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        _, per_image = model.task_loss(feats, data['data_samples'])
        torch.manual_seed(seed)
        results.append((per_image.sum().item(),
                        summed_objective(model.task_model, data['inputs'],
                                         data['data_samples']).item()))
    (a, a_expected), (b, b_expected) = results
    assert a != pytest.approx(b, rel=1e-6)  # the sampling matters ...
    assert a == pytest.approx(a_expected, rel=1e-5)  # ... and is the batch's own
    assert b == pytest.approx(b_expected, rel=1e-5)


def test_batch_loss_is_plain_mmdet_faster_rcnn(frcnn_cfg):
    """Same weights, same seed: the loss dict is the one mmdet's FasterRCNN returns."""
    model = build(frcnn_cfg.model).train()
    plain = MODELS.build(copy.deepcopy(frcnn_cfg.model.detector)).train()
    plain.load_state_dict(model.task_model.state_dict())
    data = model.data_preprocessor(batch(frcnn_cfg, 3), True)
    torch.manual_seed(3)
    ours = model.loss(**data)
    after_ours = torch.rand(1)
    torch.manual_seed(3)
    theirs = plain.loss(data['inputs'], data['data_samples'])
    after_theirs = torch.rand(1)
    assert {'loss_rank', 'loss_target'} <= set(ours)
    assert set(ours) - set(theirs) <= {'loss_rank', 'loss_target', 'rank_acc'}
    for key, value in theirs.items():
        mine = ours[key]
        if isinstance(value, (list, tuple)):
            assert len(mine) == len(value)
            for a, b in zip(mine, value):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        else:
            torch.testing.assert_close(mine, value, rtol=0, atol=0)
    # the per-image losses drew nothing more from the random state
    assert after_ours.item() == after_theirs.item()
    loss, log_vars = model.parse_losses(ours)
    loss.backward()
    assert model.loss_prediction.out.weight.grad.abs().sum() > 0
    assert model.task_model.roi_head.bbox_head.fc_cls.weight.grad.abs().sum() > 0


def test_task_outputs_shapes_and_posteriors(frcnn_cfg):
    model = build(frcnn_cfg.model).eval()
    model.score_cfg = dict(num_boxes=20, score_thr=0.0)
    data = batch(frcnn_cfg, 3)
    for sample in data['data_samples']:
        del sample.gt_instances
    data = model.data_preprocessor(data, False)
    with torch.no_grad():
        feats, _ = model._extract(data['inputs'])
        out = model.task_outputs(data['inputs'], feats, data['data_samples'],
                                 frozenset({'posteriors', 'boxes', 'proposals'}))
        only = model.task_outputs(data['inputs'], feats, data['data_samples'],
                                  frozenset({'posteriors'}))
        proposals = model._rpn_results(feats, data['data_samples'])
    assert set(out) == {'posteriors', 'boxes', 'proposals'} and set(only) == {'posteriors'}
    num_classes = model.task_model.roi_head.bbox_head.num_classes
    for i, (post, boxes, props) in enumerate(zip(out['posteriors'], out['boxes'],
                                                 out['proposals'])):
        assert post.shape == (20, num_classes + 1)
        assert boxes.shape == props.shape == (20, 4)
        torch.testing.assert_close(post.sum(1), torch.ones(20))
        torch.testing.assert_close(only['posteriors'][i], post)
        fg = post[:, :num_classes].max(1).values
        assert (fg[:-1] >= fg[1:]).all()  # most confident first
        # each proposal is one of the image's RPN proposals
        rpn_boxes = proposals[i].bboxes
        assert ((props[:, None] == rpn_boxes[None]).all(-1)).any(1).all()
        h, w = data['data_samples'][i].metainfo['img_shape']
        assert (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all()
        assert (boxes[:, :2] <= boxes[:, 2:]).all()
    # a row's box is its proposal moved by the box head's deltas for the top class
    head = model.task_model.roi_head.bbox_head
    from mmdet.structures.bbox import bbox2roi
    with torch.no_grad():
        rois = bbox2roi([out['proposals'][0]])
        res = model.task_model.roi_head._bbox_forward(feats, rois)
    probs = res['cls_score'].softmax(-1)
    torch.testing.assert_close(probs, out['posteriors'][0], rtol=1e-4, atol=1e-5)
    label = probs[:, :num_classes].argmax(1)
    deltas = res['bbox_pred'].view(20, num_classes, 4)[torch.arange(20), label]
    decoded = head.bbox_coder.decode(out['proposals'][0], deltas,
                                     max_shape=data['data_samples'][0].metainfo['img_shape'])
    torch.testing.assert_close(decoded, out['boxes'][0], rtol=1e-4, atol=1e-3)


def test_background_is_the_last_posterior_column(frcnn_cfg):
    """A box head biased to background puts its mass on the last column."""
    model = build(frcnn_cfg.model).eval()
    model.score_cfg = dict(num_boxes=5, score_thr=0.0)
    fc_cls = model.task_model.roi_head.bbox_head.fc_cls
    with torch.no_grad():
        fc_cls.weight.zero_()
        fc_cls.bias.zero_()
        fc_cls.bias[-1] = 5.0
        data = model.data_preprocessor(batch(frcnn_cfg, 1), False)
        feats, _ = model._extract(data['inputs'])
        post = model.task_outputs(data['inputs'], feats, data['data_samples'],
                                  frozenset({'posteriors'}))['posteriors'][0]
    assert post.shape == (5, 6)
    assert (post[:, -1] > 0.9).all()


def test_score_thr_can_leave_an_image_without_rows(frcnn_cfg):
    model = build(frcnn_cfg.model).eval()
    model.score_cfg = dict(num_boxes=100, score_thr=1.0)
    data = model.data_preprocessor(batch(frcnn_cfg, 2), False)
    with torch.no_grad():
        feats, _ = model._extract(data['inputs'])
        out = model.task_outputs(data['inputs'], feats, data['data_samples'],
                                 frozenset({'posteriors', 'boxes', 'proposals'}))
    assert [p.shape for p in out['posteriors']] == [(0, 6), (0, 6)]
    assert [b.shape for b in out['boxes']] == [(0, 4), (0, 4)]
    assert [b.shape for b in out['proposals']] == [(0, 4), (0, 4)]
    from mmal.models.detectors.learning_loss_detector import UnsupportedScoreOutputError
    with pytest.raises(UnsupportedScoreOutputError, match='heatmaps'):
        model.task_outputs(data['inputs'], feats, data['data_samples'],
                           frozenset({'heatmaps'}))


def test_predictions_are_mmdets(frcnn_cfg):
    model = build(frcnn_cfg.model).eval()
    data = model.data_preprocessor(batch(frcnn_cfg, 2), False)
    with torch.no_grad():
        feats, _ = model._extract(data['inputs'])
        ours = model.predict_from_feats(data['inputs'], feats, copy.deepcopy(data['data_samples']))
        theirs = model.task_model.predict(data['inputs'], copy.deepcopy(data['data_samples']))
    for a, c in zip(ours, theirs):
        torch.testing.assert_close(a.pred_instances.bboxes, c.pred_instances.bboxes)
        torch.testing.assert_close(a.pred_instances.scores, c.pred_instances.scores)


def test_single_stage_detector_is_refused(frcnn_cfg):
    cfg = copy.deepcopy(frcnn_cfg.model)
    cfg.detector = Config.fromfile(str(REPO / 'configs/_base_/models/ssd_tiny.py')).model
    with pytest.raises(TypeError, match=r"model.detector.type='SingleStageDetector' is not a "
                       r"two-stage detector.*model.type='LearningLossDetector'"):
        build(cfg)


@pytest.mark.parametrize('score_cfg,match', [
    (dict(num_box=10), r"model.score_cfg: unknown keys \['num_box'\]"),
    (dict(num_boxes=0), r'model.score_cfg.num_boxes=0 must be an integer >= 1'),
    (dict(num_boxes=2.5), r'model.score_cfg.num_boxes=2.5 must be an integer'),
    (dict(score_thr=1.5), r'model.score_cfg.score_thr=1.5 must lie in \[0, 1\]'),
])
def test_bad_score_cfg_names_the_key(frcnn_cfg, score_cfg, match):
    cfg = copy.deepcopy(frcnn_cfg.model)
    cfg.score_cfg = score_cfg
    with pytest.raises(ValueError, match=match):
        build(cfg)


def test_mask_branch_is_refused(frcnn_cfg):
    cfg = copy.deepcopy(frcnn_cfg.model)
    cfg.detector.type = 'MaskRCNN'
    cfg.detector.roi_head.update(
        mask_roi_extractor=dict(type='SingleRoIExtractor',
                                roi_layer=dict(type='RoIAlign', output_size=14,
                                               sampling_ratio=0),
                                out_channels=32, featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(type='FCNMaskHead', num_convs=1, in_channels=32, conv_out_channels=32,
                       num_classes=5))
    cfg.detector.train_cfg.rcnn.mask_size = 28
    with pytest.raises(TypeError, match='mask branch'):
        build(cfg)


def test_trains_a_few_steps_with_the_runner(frcnn_cfg, tmp_path):
    from mmengine.runner import Runner
    cfg = copy.deepcopy(frcnn_cfg)
    cfg.work_dir = str(tmp_path)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=6, val_interval=6)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=6)
    cfg.custom_hooks = []
    cfg.train_dataloader.batch_size = 4
    cfg.val_dataloader.batch_size = 4
    cfg.test_dataloader.batch_size = 4
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    assert 'pascal_voc/mAP' in metrics
