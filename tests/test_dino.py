"""DINO (mmdet's DETR family) under Learning Loss: per-image matching targets, query outputs.

The relations checked: each image's target is mmdet's own matching loss of
that image alone (every decoder layer and the encoder's proposals, the
denoising part left out) times the image's box count, and the images'
targets add up to the batch's terms times the batch's box count (mmdet's
DETR heads divide by it); the target does not move with the denoising
queries' random draw. Scoring: one row per query, however many classes it
is confident in; the gradient embedding against autograd.
"""
import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from mmdet.models.dense_heads import DeformableDETRHead
from torch import nn
from torch.nn import functional as F  # noqa: N812

from mmal.loop.checks import model_refusals
from mmal.models import LearningLossDetector
from mmal.models.detectors.candidates import posteriors_from_logits
from mmal.models.detectors.learning_loss_detr import query_candidates
from mmal.models.plain_models import wrap_plain_model

from .conftest import REPO, voc_config
from .test_learning_loss_detector import batch, build

CONFIG = 'configs/learning_loss/dino-tiny_ll_synthetic-voc.py'
AL_CONFIG = 'configs/active_learning/ll_dino-tiny_synthetic-voc.py'


@pytest.fixture
def dino_cfg(voc_root):
    return voc_config(CONFIG, voc_root)


@pytest.fixture
def model(dino_cfg):
    return build(dino_cfg)


def frozen_norms(model):
    """Train mode (DINO builds its denoising queries and encoder outputs only then) with
    BatchNorm on its running statistics, so an image alone and in a batch see one network."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


def matching_terms(losses):
    """mmdet's loss terms of the matching part: decoder layers and encoder, no ``dn``."""
    return {k: float(v) for k, v in losses.items() if 'loss' in k and 'dn_' not in k}


def test_builds_dino_and_refuses_it_in_the_dense_wrapper(dino_cfg, model):
    assert type(model.task_model).__name__ == 'DINO'
    assert model.posterior_kind == 'sigmoid'
    assert model.loss_prediction.in_channels == [256] * 4
    with pytest.raises(TypeError, match="LearningLossDETR"):
        LearningLossDetector(detector=copy.deepcopy(dino_cfg.model.detector))
    # a plain DINO config is wrapped by this wrapper
    assert wrap_plain_model(dino_cfg.model.detector)['type'] == 'LearningLossDETR'


def test_per_image_targets_are_mmdets_matching_loss_of_each_image(dino_cfg, model):
    frozen_norms(model)
    data = model.data_preprocessor(batch(dino_cfg, 3), True)
    samples = data['data_samples']
    counts = [len(s.gt_instances) for s in samples]
    assert min(counts) >= 1 and len(set(counts)) > 1   # normalisers that differ
    with torch.no_grad():
        feats = model.task_model.extract_feat(data['inputs'])
        losses, per_image = model.task_loss(feats, samples)
    terms = matching_terms(losses)
    # every decoder layer (2) and the encoder's proposals: cls (focal), L1, GIoU each
    assert sorted(terms) == sorted(['loss_cls', 'loss_bbox', 'loss_iou', 'd0.loss_cls',
                                    'd0.loss_bbox', 'd0.loss_iou', 'enc_loss_cls',
                                    'enc_loss_bbox', 'enc_loss_iou'])
    assert any('dn_loss' in k for k in losses)   # training keeps the denoising terms
    assert per_image.shape == (3,) and not per_image.requires_grad
    # mmdet divides every term by the batch's box count (sigmoid focal: no background
    # weight), so the summed per-image objectives are the terms times that count
    assert float(per_image.sum()) == pytest.approx(sum(terms.values()) * sum(counts),
                                                   rel=1e-4)
    # and each image's is mmdet's loss of that image alone times its own box count
    for i, count in enumerate(counts):
        with torch.no_grad():
            alone = model.task_model.loss(data['inputs'][i:i + 1], samples[i:i + 1])
        assert float(per_image[i]) == pytest.approx(
            sum(matching_terms(alone).values()) * count, rel=1e-3)


def test_denoising_draw_leaves_the_target_alone(dino_cfg, model):
    frozen_norms(model)
    data = model.data_preprocessor(batch(dino_cfg, 2), True)
    with torch.no_grad():
        feats = model.task_model.extract_feat(data['inputs'])
        runs = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            runs.append(model.task_loss(feats, data['data_samples']))
    (first, target_1), (second, target_2) = runs
    assert float(first['dn_loss_bbox']) != pytest.approx(float(second['dn_loss_bbox']))
    torch.testing.assert_close(target_1, target_2)


def test_a_query_confident_in_two_classes_is_one_candidate():
    # 4 queries, 3 classes: query 0 is confident in classes 0 and 1, query 2 in class 2,
    # queries 1 and 3 in nothing
    logits = torch.tensor([[[3.0, 2.0, -6.0], [-6.0, -6.0, -6.0],
                            [-6.0, -6.0, 1.0], [-5.0, -4.0, -6.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1],
                           [0.25, 0.75, 0.5, 0.5], [0.9, 0.9, 0.1, 0.1]]])
    cfg = dict(num_boxes=10, score_thr=0.05)
    posteriors, xyxy, rows = query_candidates(logits, boxes, [(100, 200)], 'sigmoid', cfg)
    assert rows[0].tolist() == [0, 2]   # each confident query once, the surest first
    p = logits[0].sigmoid()
    torch.testing.assert_close(posteriors[0][:, :3], p[[0, 2]])
    torch.testing.assert_close(posteriors[0][:, 3], (1 - p[[0, 2]]).prod(dim=1))
    torch.testing.assert_close(xyxy[0], torch.tensor([[80.0, 30.0, 120.0, 70.0],
                                                      [0.0, 50.0, 100.0, 100.0]]))
    # mmdet's own predict ranks queries x classes: query 0 comes back twice
    head = DeformableDETRHead(num_classes=3, embed_dims=8, num_pred_layer=1,
                              loss_cls=dict(type='FocalLoss', use_sigmoid=True),
                              test_cfg=dict(max_per_img=3))
    (result,) = head.predict_by_feat(logits[None], boxes[None],
                                     [dict(img_shape=(100, 200))])
    assert sorted(result.labels.tolist()) == [0, 1, 2]
    assert (result.bboxes == result.bboxes[0]).all(dim=1).sum() == 2
    # num_boxes cuts by foreground confidence; the threshold drops the unsure
    _, _, rows = query_candidates(logits, boxes, [(100, 200)], 'sigmoid',
                                  dict(num_boxes=1, score_thr=0.05))
    assert rows[0].tolist() == [0]


def test_softmax_rows_for_detrs_no_object_class():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 4.0]]])   # 2 classes + no-object
    posteriors, _, rows = query_candidates(logits, torch.full((1, 2, 4), 0.5), [(10, 10)],
                                           'softmax', dict(num_boxes=5, score_thr=0.05))
    torch.testing.assert_close(posteriors[0], posteriors_from_logits(logits[0], 'softmax')
                               [rows[0]])
    torch.testing.assert_close(posteriors[0].sum(dim=1), torch.ones(len(rows[0])))


def test_task_outputs_and_gradient_embedding_against_autograd(dino_cfg, model):
    model.eval()
    model.score_cfg.update(score_thr=0.0, num_boxes=7)
    data = model.data_preprocessor(batch(dino_cfg, 2), False)
    with torch.no_grad():
        feats = model.task_model.extract_feat(data['inputs'])
        out = model.task_outputs(data['inputs'], feats, data['data_samples'],
                                 frozenset({'posteriors', 'boxes', 'grad_embedding',
                                            'box_features'}))
        logits, _, hidden = model.head_outputs(feats, data['data_samples'])
    layer = model.class_layer()
    assert layer is model.task_model.bbox_head.cls_branches[1]   # the last decoder layer's
    torch.testing.assert_close(layer(hidden), logits)
    assert out['grad_embedding'].shape == (2, 5 * 256)
    for i in range(2):
        assert out['posteriors'][i].shape == (7, 6) and out['boxes'][i].shape == (7, 4)
        assert out['box_features'][i].shape == (7, 256)
        fg = out['posteriors'][i][:, :5].amax(dim=1)
        assert (fg[:-1] >= fg[1:]).all()
        # the pseudo-label loss of the same queries, by autograd
        weight = layer.weight.detach().clone().requires_grad_(True)
        rows = out['posteriors'][i][:, :5]
        chosen = torch.stack([torch.isclose(logits[i].sigmoid(), r).all(dim=1).nonzero()[0, 0]
                              for r in rows])
        z = F.linear(hidden[i][chosen], weight, layer.bias.detach())
        loss = F.binary_cross_entropy_with_logits(z, (z.sigmoid() > 0.5).float().detach(),
                                                  reduction='sum')
        (grad,) = torch.autograd.grad(loss, weight)
        torch.testing.assert_close(out['grad_embedding'][i], grad.flatten(), rtol=1e-4,
                                   atol=1e-5)


def test_refusals_before_training(dino_cfg):
    refusals = model_refusals(dino_cfg, {'posteriors', 'boxes', 'proposals', 'heatmaps',
                                         'grad_embedding', 'box_features'})
    assert sorted(refusals) == ['heatmaps', 'proposals']
    assert 'no RPN' in refusals['proposals']
    quality = copy.deepcopy(dino_cfg)
    quality.model.detector.bbox_head.loss_cls = dict(
        type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0)
    refusals = model_refusals(quality, {'posteriors', 'grad_embedding', 'pred_loss'})
    assert sorted(refusals) == ['grad_embedding', 'posteriors']
    assert 'QualityFocalLoss' in refusals['posteriors']


# ------------------------------------------------------------------ two cycles
def shrunk(voc_root, strategy, path):
    cfg = voc_config(AL_CONFIG, voc_root)
    cfg.train_dataloader.batch_size = 4
    cfg.train_cfg.max_epochs = 2
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, max_keep_ckpts=1)
    cfg.active_learning.update(initial_size=8, budget_per_cycle=8, num_cycles=2,
                               candidate_pool=24, score_batch_size=8, score_num_workers=0,
                               strategy=dict(type=strategy), seed=0,
                               # both run, on a few samples: the suite must stay short
                               ranking_eval_size=8, stopping=dict(stop_set_size=8))
    if strategy == 'EntropyStrategy':
        # untrained for 2 epochs, every query is below the default 0.05
        cfg.model.score_cfg = dict(num_boxes=30, score_thr=0.0)
        # the ranking evaluation and the stop set run in the Learning Loss case; once is
        # enough for a suite that must stay short
        cfg.active_learning.update(ranking_eval_size=0, stopping=dict(stop_set_size=0))
    cfg.dump(str(path))
    return path


def al_train(config, work_dir):
    env = dict(os.environ, PYTHONPATH=str(REPO))  # threads: conftest's share
    return subprocess.run([sys.executable, 'tools/al_train.py', str(config), '--work-dir',
                           str(work_dir)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1200)


@pytest.mark.slow
@pytest.mark.parametrize('strategy', ['LearningLossStrategy', 'EntropyStrategy',
                                      'LocalizationTightnessStrategy'])
def test_two_cycles_through_the_tool(strategy, voc_root, tmp_path):
    config = shrunk(voc_root, strategy, tmp_path / 'dino.py')
    result = al_train(config, tmp_path / 'work')
    if strategy == 'LocalizationTightnessStrategy':
        # no RPN proposals: refused before any training, naming why
        assert result.returncode == 2, result.stderr[-3000:]
        assert 'no RPN' in result.stderr
        assert not (tmp_path / 'work' / 'cycle_00').exists()
        return
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / 'work' / 'al_state.json').read_text())
    assert data['status'] == 'finished'
    c0, c1 = data['cycles']
    picked = [p['id'] for p in c0['selected']]
    assert len(set(picked)) == 8 and not set(picked) & set(c0['labeled'])
    assert c1['labeled_added'] == picked
    assert all(math.isfinite(p['score']) for p in c0['selected'])
    for cycle in (c0, c1):
        assert 0.0 <= cycle['metrics']['pascal_voc/mAP'] <= 1.0



def test_scoring_target_loss_in_eval_mode_is_the_training_target(dino_cfg, model):
    """The ranking evaluation and the oracle read ``target_loss`` from an eval-mode model,
    where mmdet's DINO gives the head no encoder proposals: the target is the same."""
    frozen_norms(model)
    data = batch(dino_cfg, 2)
    processed = model.data_preprocessor(copy.deepcopy(data), True)
    with torch.no_grad():
        feats = model.task_model.extract_feat(processed['inputs'])
        _, trained = model.task_loss(feats, processed['data_samples'])
    model.eval()
    state = torch.random.get_rng_state()
    scored = model.score_step(copy.deepcopy(data), outputs=('target_loss',))['target_loss']
    torch.testing.assert_close(scored, trained, rtol=1e-4, atol=1e-4)
    assert not model.task_model.training
    assert torch.equal(torch.random.get_rng_state(), state)   # the denoising draw forked


@pytest.fixture(params=['deformable_detr/deformable-detr-refine-twostage_r50_16xb2-50e_coco.py',
                        'detr/detr_r18_8xb2-500e_coco.py'])
def other_detr(request, dino_cfg):
    """mmdet's two-stage Deformable DETR and DETR under the same wrapper, the small DINO's
    backbone, one encoder and two decoder layers, 30 queries, no dropout."""
    import mmdet
    from mmengine.config import Config
    path = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs', request.param)
    detector = Config.fromfile(path).model
    detector.backbone = copy.deepcopy(dino_cfg.model.detector.backbone)
    if detector.type == 'DETR':
        detector.backbone.out_indices = (3,)
        detector.neck.in_channels = [128]
    else:
        detector.neck.in_channels = [32, 64, 128]
    detector.encoder.num_layers, detector.decoder.num_layers = 1, 2
    for layer in (detector.encoder.layer_cfg, detector.decoder.layer_cfg):
        for value in layer.values():
            for drop in ('dropout', 'ffn_drop'):
                if drop in value:
                    value[drop] = 0.0
    detector.update(num_queries=30)
    detector.bbox_head.num_classes = 5
    detector.test_cfg.max_per_img = 30
    cfg = copy.deepcopy(dino_cfg)
    cfg.model.detector = detector
    cfg.model.loss_prediction.in_channels = None
    return cfg


def test_deformable_detr_and_detr_targets_and_outputs(other_detr):
    model = frozen_norms(build(other_detr))
    detr = type(model.task_model).__name__ == 'DETR'
    data = model.data_preprocessor(batch(other_detr, 3), True)
    samples = data['data_samples']
    counts = [len(s.gt_instances) for s in samples]
    with torch.no_grad():
        feats = model.task_model.extract_feat(data['inputs'])
        losses, per_image = model.task_loss(feats, samples)
    terms = matching_terms(losses)
    assert any(k.startswith('enc_') for k in terms) != detr   # two-stage: encoder proposals
    boxes = sum(counts)
    if detr:
        # DETR's cross-entropy divides by the matched queries plus 0.1 (its no-object
        # weight) times the unmatched ones, per decoder layer
        cls = sum(v for k, v in terms.items() if k.endswith('loss_cls'))
        expected = cls * (boxes + 0.1 * (3 * 30 - boxes)) + (sum(terms.values()) - cls) * boxes
    else:
        expected = sum(terms.values()) * boxes
    assert float(per_image.sum()) == pytest.approx(expected, rel=1e-4)
    model.eval()
    assert model.posterior_kind == ('softmax' if detr else 'sigmoid')
    model.score_cfg.update(score_thr=0.0)
    out = model.score_step(batch(other_detr, 2), outputs=('posteriors', 'boxes',
                                                          'grad_embedding', 'target_loss'))
    assert out['posteriors'][0].shape == (30, 6) and out['boxes'][0].shape == (30, 4)
    assert out['grad_embedding'].shape == (2, (6 if detr else 5) * 256)
    assert torch.isfinite(out['target_loss']).all()


def test_a_dropout_committee_scores_dino_like_any_detector(dino_cfg, model):
    """Query by committee's dropout members drop the neck's maps before the transformer;
    their query rows differ, and the committee's disagreement is a number per image."""
    from mmal.scoring.score_loop import run_passes, split_per_sample, stack_outputs
    from mmal.strategies.query_by_committee import QueryByCommitteeStrategy
    model.eval()
    model.score_cfg.update(score_thr=0.0, num_boxes=10)
    strategy = QueryByCommitteeStrategy(task='detection', committee='dropout', members=3)
    out = run_passes(model, batch(dino_cfg, 2), strategy.candidate_passes())
    members = out['posteriors'][0]
    assert len(members) == 3 and all(m.shape == (10, 6) for m in members)
    assert not torch.allclose(torch.as_tensor(members[0]), torch.as_tensor(members[1]))
    outputs = stack_outputs(split_per_sample(out), 2, model.posterior_kind)
    scores = strategy.scores(outputs, {})
    assert scores.shape == (2,) and all(0.0 <= s <= 1.0 for s in scores)
