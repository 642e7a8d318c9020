"""RTMDet and YOLOX under Learning Loss: each image's summed objective, mmdet's loss kept.

The relation checked: the per-image objectives sum to the loss mmdet's own
head reports for the batch times the normaliser mmdet divides by (read
from mmdet's own ``reduce_mean`` calls), and each image's objective is the
loss mmdet computes for that image alone times that image's own normaliser.
"""
import copy
import math

import pytest
import torch
from mmdet.models.dense_heads import RTMDetSepBNHead, YOLOXHead, rtmdet_head, yolox_head
from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import MODELS

from mmal.models import LearningLossDetector, PerImageLossRTMDetSepBNHead, PerImageLossYOLOXHead
from mmal.models.heads import with_per_image_loss_head
from mmal.models.plain_models import wrap_plain_model
from mmal.models.replay import recorded_calls
from mmal.models.taps import FeatureTaps, tapped_channels

from .conftest import voc_config
from .test_learning_loss_detector import batch, build

CONFIGS = {
    'rtmdet': 'configs/learning_loss/rtmdet-tiny_ll_synthetic-voc.py',
    'yolox': 'configs/learning_loss/yolox-tiny_ll_synthetic-voc.py',
}
OURS = {'rtmdet': PerImageLossRTMDetSepBNHead, 'yolox': PerImageLossYOLOXHead}
MMDET = {'rtmdet': RTMDetSepBNHead, 'yolox': YOLOXHead}
NUM_IMAGES = 3


@pytest.fixture(params=sorted(CONFIGS))
def family(request, voc_root):
    return request.param, voc_config(CONFIGS[request.param], voc_root)


def head_inputs(model, cfg):
    """The head's outputs on a real batch (train mode), and its labels."""
    model.train()
    data = model.data_preprocessor(batch(cfg, NUM_IMAGES), True)
    feats = model.task_model.extract_feat(data['inputs'])
    gts, ignore, metas = unpack_gt_instances(data['data_samples'])
    return data, feats, model.task_model.bbox_head(feats), gts, ignore, metas


def mmdet_loss(name, head, outs, gts, metas, ignore):
    """mmdet's own ``loss_by_feat`` on ``head``, its terms times the normalisers it divided
    by, and those normalisers."""
    module = rtmdet_head if name == 'rtmdet' else yolox_head
    with recorded_calls([module], 'reduce_mean') as calls:
        losses = MMDET[name].loss_by_feat(head, *outs, gts, metas, ignore)
    if name == 'rtmdet':   # cls_avg_factor, then bbox_avg_factor, each clamped to >= 1 in place
        cls_factor, bbox_factor = (float(c.output) for c in calls)
        return losses, (sum(losses['loss_cls']) * cls_factor
                        + sum(losses['loss_bbox']) * bbox_factor), (cls_factor, bbox_factor)
    (call,) = calls
    factor = max(float(call.output), 1.0)
    return losses, sum(losses.values()) * factor, (factor,)


def boxes_of_some_size(model):
    """Untrained, RTMDet predicts boxes of almost no size, whose IoUs, its assign metrics,
    sum below 1, so mmdet's normalisers would all be the clamp's 1 and the relation
    would not be seen. Distances of two strides give the boxes sizes."""
    head = model.task_model.bbox_head
    if hasattr(head, 'rtm_reg'):
        with torch.no_grad():
            for conv in head.rtm_reg:
                conv.bias.fill_(2.0)


def test_the_wrapper_builds_our_head_from_mmdets_config(family):
    name, cfg = family
    assert cfg.model.detector.bbox_head.type == MMDET[name].__name__   # the user's config
    model = build(cfg)
    assert type(model.task_model.bbox_head) is OURS[name]
    scoped = dict(bbox_head=dict(cfg.model.detector.bbox_head,
                                 type=f'mmdet.{MMDET[name].__name__}'))
    assert type(MODELS.build(with_per_image_loss_head(scoped)['bbox_head'])) is OURS[name]
    wrapped = wrap_plain_model(cfg.model.detector)
    assert wrapped['type'] == 'LearningLossDetector'
    assert wrapped['detector']['bbox_head']['type'] == OURS[name].__name__
    assert cfg.model.detector.bbox_head.type == MMDET[name].__name__   # not changed in place


def test_a_plain_heads_state_dict_loads_strictly_into_ours(family):
    name, cfg = family
    head_cfg = copy.deepcopy(cfg.model.detector.bbox_head)
    head_cfg.update(train_cfg=cfg.model.detector.train_cfg, test_cfg=cfg.model.detector.test_cfg)
    torch.manual_seed(1)
    plain = MODELS.build(head_cfg)
    plain.init_weights()
    assert type(plain) is MMDET[name]
    ours = build(cfg).task_model.bbox_head
    assert set(ours.state_dict()) == set(plain.state_dict())
    ours.load_state_dict(plain.state_dict(), strict=True)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value)


@pytest.mark.parametrize('use_l1', [False, True])
def test_per_image_objectives_times_the_normaliser_are_mmdets_batch_loss(family, use_l1):
    name, cfg = family
    if use_l1 and name != 'yolox':
        pytest.skip('only YOLOX has an L1 term')
    model = build(cfg)
    head = model.task_model.bbox_head
    head.use_l1 = use_l1
    boxes_of_some_size(model)
    _, _, outs, gts, ignore, metas = head_inputs(model, cfg)
    ours, per_image = head.loss_by_feat_per_image(*outs, gts, metas, ignore)
    assert per_image.shape == (NUM_IMAGES,) and not per_image.requires_grad
    assert (per_image > 0).all()
    plain, unnormalised, factors = mmdet_loss(name, head, outs, gts, metas, ignore)
    assert min(factors) > 1.5, f'{name}: normalisers {factors}'
    assert set(ours) == set(plain) and ('loss_l1' in ours) == use_l1
    for key in plain:   # the training loss is mmdet's
        torch.testing.assert_close(torch.stack(list(ours[key])) if name == 'rtmdet'
                                   else ours[key],
                                   torch.stack(list(plain[key])) if name == 'rtmdet'
                                   else plain[key], rtol=1e-5, atol=1e-6)
    assert per_image.sum().item() == pytest.approx(unnormalised.item(), rel=1e-5)
    # and each image's objective is the loss mmdet gives it alone, times its own normaliser
    for i in range(NUM_IMAGES):
        one = tuple([level[i:i + 1] for level in out] for out in outs)
        _, alone, _ = mmdet_loss(name, head, one, [gts[i]], [metas[i]], None)
        assert per_image[i].item() == pytest.approx(alone.item(), rel=1e-4)
    # a per-positive target would differ: the images' normalisers are not all one
    normalised = [mmdet_loss(name, head, tuple([lvl[i:i + 1] for lvl in out] for out in outs),
                             [gts[i]], [metas[i]], None)[0] for i in range(NUM_IMAGES)]
    normalised = torch.stack([sum(v.sum() if torch.is_tensor(v) else sum(v)
                                  for v in losses.values()) for losses in normalised])
    assert not torch.allclose(normalised.detach(), per_image, rtol=1e-3)


def test_training_step_uses_the_heads_per_image_objectives(family):
    name, cfg = family
    model = build(cfg)
    data, feats, outs, gts, ignore, metas = head_inputs(model, cfg)
    losses, per_image = model.task_loss(feats, data['data_samples'])
    _, expected = model.task_model.bbox_head.loss_by_feat_per_image(*outs, gts, metas, ignore)
    torch.testing.assert_close(per_image, expected, rtol=1e-5, atol=1e-5)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert {'loss_cls', 'loss_bbox', 'loss_rank', 'loss_target'} <= set(losses)
    loss, log_vars = model.parse_losses(losses)
    loss.backward()
    assert model.loss_prediction.out.weight.grad.abs().sum() > 0
    assert next(model.task_model.backbone.parameters()).grad.abs().sum() > 0


def test_default_taps_are_the_necks_outputs_and_stages_can_be_named(family):
    name, cfg = family
    model = build(cfg)
    assert isinstance(model, LearningLossDetector)
    assert model.loss_prediction.in_channels == [96, 96, 96]
    del cfg.model['taps'], cfg.model.loss_prediction['in_channels']
    model = build(cfg)
    assert model.loss_prediction.in_channels == [96, 96, 96]   # read off the neck
    # CSPNeXt (RTMDet) / CSPDarknet (YOLOX) at widen_factor 0.375: stages of 48, 96, 192, 384
    task_model = model.task_model
    stages = FeatureTaps(task_model, ['backbone.stage2', 'backbone.stage3', 'backbone.stage4'])
    assert tapped_channels(task_model, stages) == [96, 192, 384]
    assert tapped_channels(task_model, FeatureTaps(task_model, ['backbone'])) == [96, 192, 384]


def test_bad_settings_are_refused_naming_the_key(family):
    name, cfg = family
    cfg.model.per_image_normalizer = 'positives'
    with pytest.raises(ValueError, match=r"model.per_image_normalizer='positives'.*summed"):
        build(cfg)
    if name == 'yolox':
        head = copy.deepcopy(cfg.model.detector.bbox_head)
        head.loss_obj.reduction = 'mean'
        with pytest.raises(ValueError, match=r"bbox_head.loss_obj.reduction='mean'.*'sum'"):
            MODELS.build(with_per_image_loss_head(dict(bbox_head=head))['bbox_head'])


def test_yolox_mode_switch_hook_turns_on_l1_through_the_wrapper(voc_root):
    """mmdet's YOLOXModeSwitchHook reaches the head as ``runner.model.detector.bbox_head``."""
    from mmdet.engine.hooks import YOLOXModeSwitchHook
    model = build(voc_config(CONFIGS['yolox'], voc_root))

    class Mixed:
        def update_skip_type_keys(self, keys):
            self.keys = keys

    class Runner:
        epoch, max_epochs = 9, 10
        train_dataloader = type('Loader', (), dict(dataset=Mixed()))()
        logger = type('Logger', (), dict(info=staticmethod(lambda *a: None)))()

    Runner.model = model
    assert model.task_model.bbox_head.use_l1 is False
    YOLOXModeSwitchHook(num_last_epochs=1).before_train_epoch(Runner)
    assert model.task_model.bbox_head.use_l1 is True


# ------------------------------------------------------------------ uncertainty on these heads
def hand_made_yolox_outputs(num_classes, seed=0):
    """YOLOX head outputs for one 64x64 input (levels 8x8, 4x4, 2x2), logits spread over
    both sides of 0 so that classes, objectness and boxes all differ."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [(8, 8), (4, 4), (2, 2)]
    cls = [2 * torch.randn(1, num_classes, h, w, generator=generator) for h, w in sizes]
    boxes = [0.5 * torch.randn(1, 4, h, w, generator=generator) for h, w in sizes]
    obj = [2 * torch.randn(1, 1, h, w, generator=generator) for h, w in sizes]
    return cls, boxes, obj


def test_yolox_posteriors_are_objectness_times_class_shares_cut_as_mmdet_cuts(voc_root):
    from mmal.models.detectors.candidates import dense_candidates
    model = build(voc_config(CONFIGS['yolox'], voc_root)).eval()
    head = model.task_model.bbox_head
    assert model.posterior_kind == 'softmax'
    outs = hand_made_yolox_outputs(head.num_classes)
    k = 12
    posteriors, boxes = dense_candidates(head, outs, [(64, 64)], model.posterior_kind,
                                         dict(num_boxes=k, score_thr=0.0))
    (rows,), (boxes,) = posteriors, boxes

    def flat(maps, width):
        return torch.cat([m[0].permute(1, 2, 0).reshape(-1, width) for m in maps])

    scores, objectness = flat(outs[0], head.num_classes).sigmoid(), flat(outs[2], 1).sigmoid()
    expected = torch.cat([objectness * scores / scores.sum(1, keepdim=True), 1 - objectness], 1)
    # the head's own detections, before NMS: mmdet's score, box and label per prior
    metas = [dict(img_shape=(64, 64), scale_factor=(1.0, 1.0))]
    cfg = copy.deepcopy(head.test_cfg)
    cfg.score_thr = 0.0
    (mmdet,) = head.predict_by_feat(*outs, batch_img_metas=metas, cfg=cfg, rescale=False,
                                    with_nms=False)
    order = mmdet.scores.argsort(descending=True)[:k]
    top = (scores * objectness).max(1).values.argsort(descending=True)[:k]
    torch.testing.assert_close(rows, expected[top], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rows.sum(1), torch.ones(k), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(boxes, mmdet.bboxes[order], rtol=1e-5, atol=1e-4)
    assert rows[:, :-1].argmax(1).tolist() == mmdet.labels[order].tolist()
    # read as mmdet scores them (class score times objectness) rows would differ
    assert not torch.allclose(rows[:, :-1], (scores * objectness)[top], atol=1e-3)


def test_rtmdet_posteriors_are_refused_reading_the_heads_class_loss(family):
    from mmal.models.learning_loss import UnsupportedScoreOutputError
    name, cfg = family
    model = build(cfg).eval()
    data = batch(cfg, 2)
    if name == 'yolox':
        assert LearningLossDetector.unsupported_outputs(['posteriors'], cfg.model) == []
        out = model.score_step(data, ('posteriors', 'boxes'))
        assert all(p.shape[1] == 6 for p in out['posteriors'])
        with pytest.raises(UnsupportedScoreOutputError, match=r"'grad_embedding'.*onehot \* IoU"):
            model.score_step(data, ('grad_embedding',))
        assert LearningLossDetector.unsupported_outputs(['grad_embedding'], cfg.model) == \
            ['grad_embedding']
        return
    with pytest.raises(UnsupportedScoreOutputError, match="'posteriors'.*QualityFocalLoss"):
        model.score_step(data, ('posteriors',))
    assert len(model.score_step(data, ('boxes', 'pred_loss'))['boxes']) == 2
    assert LearningLossDetector.unsupported_outputs(['posteriors', 'grad_embedding'],
                                                    cfg.model) == ['grad_embedding', 'posteriors']
    assert LearningLossDetector.unsupported_outputs(['posteriors']) == []   # the class alone
    # the same RTMDet trained with a probability loss: its scores are posteriors
    cfg.model.detector.bbox_head.loss_cls = dict(type='FocalLoss', use_sigmoid=True,
                                                 gamma=2.0, alpha=0.25, loss_weight=1.0)
    assert LearningLossDetector.unsupported_outputs(['posteriors'], cfg.model) == []
    model = build(cfg).eval()
    assert model.posterior_kind == 'sigmoid'
    assert all(p.shape[1] == 6 for p in model.score_step(data, ('posteriors',))['posteriors'])


def test_the_class_logit_convs_are_found_from_the_head(family):
    from mmal.models.gradient_embeddings import final_cls_convs
    name, cfg = family
    head = build(cfg).task_model.bbox_head
    expected = head.rtm_cls if name == 'rtmdet' else head.multi_level_conv_cls
    assert [id(c) for c in final_cls_convs(head)] == [id(c) for c in expected]
    head.train()
    final_cls_convs(head)
    assert head.training   # the probe leaves the mode as it was
    if name == 'rtmdet':   # with an objectness the logits are computed after the conv
        cfg.model.detector.bbox_head.with_objectness = True
        from mmal.models.learning_loss import UnsupportedScoreOutputError
        with pytest.raises(UnsupportedScoreOutputError, match='level 0.*not the direct output'):
            final_cls_convs(build(cfg).task_model.bbox_head)


def test_rtmdets_shared_head_gets_the_same_per_image_objective(voc_root):
    """``RTMDetHead`` (one conv stack for every level) is swapped and measured as the
    SepBN head is."""
    from mmal.models import PerImageLossRTMDetHead
    cfg = voc_config(CONFIGS['rtmdet'], voc_root)
    model = build(cfg)
    boxes_of_some_size(model)
    head_cfg = dict(
        type='RTMDetHead', num_classes=5, in_channels=96, feat_channels=96, stacked_convs=2,
        anchor_generator=dict(type='MlvlPointGenerator', offset=0, strides=[8, 16, 32]),
        bbox_coder=dict(type='DistancePointBBoxCoder'),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        norm_cfg=dict(type='BN'), act_cfg=dict(type='SiLU'),
        train_cfg=cfg.model.detector.train_cfg)
    torch.manual_seed(0)
    head = MODELS.build(with_per_image_loss_head(dict(bbox_head=head_cfg))['bbox_head'])
    head.init_weights()
    assert type(head) is PerImageLossRTMDetHead
    with torch.no_grad():   # this head takes exp() of its distances: two strides again
        head.rtm_reg.bias.fill_(math.log(2.0))
    _, feats, _, gts, ignore, metas = head_inputs(model, cfg)
    outs = head(feats)
    ours, per_image = head.loss_by_feat_per_image(*outs, gts, metas, ignore)
    plain, unnormalised, factors = mmdet_loss('rtmdet', head, outs, gts, metas, ignore)
    assert min(factors) > 1.5
    for key in plain:
        torch.testing.assert_close(torch.stack(list(ours[key])), torch.stack(list(plain[key])),
                                   rtol=1e-5, atol=1e-6)
    assert per_image.sum().item() == pytest.approx(unnormalised.item(), rel=1e-5)


def test_the_experiment_refuses_a_strategy_the_head_cannot_serve_before_training(family):
    from mmal.loop.checks import check_model_outputs
    from mmal.strategies import build_strategy
    from mmal.utils import ConfigError
    name, cfg = family
    entropy = build_strategy(dict(type='EntropyStrategy'), 'detection')
    if name == 'yolox':
        check_model_outputs(cfg, entropy)  # objectness x class shares: posteriors exist
        return
    with pytest.raises(ConfigError, match=r"EntropyStrategy needs the score outputs "
                                          r"\['posteriors'\].*QualityFocalLoss"):
        check_model_outputs(cfg, entropy)
    check_model_outputs(cfg, build_strategy(dict(type='LearningLossStrategy'), 'detection'))
