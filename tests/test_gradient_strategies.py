"""Gradient embeddings of the last layer (EGL, BADGE): the closed form against autograd,
the strategies on hand-built embeddings, and one real cycle each."""
import copy
import math

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmpose.codecs.utils import generate_gaussian_heatmaps, generate_unbiased_gaussian_heatmaps
from torch.nn import functional as F  # noqa: N812

from mmal.models.detectors.candidates import dense_candidates
from mmal.models.gradient_embeddings import (
    final_cls_convs,
    pseudo_label_heatmaps,
    pseudo_label_residual,
)
from mmal.models.learning_loss import SCORE_OUTPUTS, UnsupportedScoreOutputError
from mmal.registry import STRATEGIES
from mmal.scoring import ScorePass, score_batches
from mmal.strategies.badge import BadgeStrategy, kmeans_pp_seeding
from mmal.strategies.expected_gradient_length import ExpectedGradientLengthStrategy

from .conftest import REPO, voc_config

RETINANET = REPO / 'tests/data/retinanet-tiny_ll_synthetic-voc.py'
FASTER_RCNN = 'configs/learning_loss/faster-rcnn-tiny_ll_synthetic-voc.py'


# ------------------------------------------------------------------ detection: closed form
def detection_reference(model, data):
    """Autograd's gradient of each image's pseudo-label loss, laid out as the embedding."""
    head = model.task_model.bbox_head
    kind = model.posterior_kind
    processed = model.data_preprocessor(copy.deepcopy(data), False)
    inputs = torch.stack(list(processed['inputs'])) if isinstance(processed['inputs'], list) \
        else processed['inputs']
    with torch.no_grad():
        feats = model.task_model.extract_feat(inputs)
    cls_scores, bbox_preds = head(feats)
    shapes = [s.metainfo['img_shape'] for s in processed['data_samples']]
    posteriors, _, rows = dense_candidates(head, (cls_scores, bbox_preds), shapes, kind,
                                           model.score_cfg, return_rows=True)
    channels = head.cls_out_channels
    logits = torch.cat([c.permute(0, 2, 3, 1).reshape(len(inputs), -1, channels)
                        for c in cls_scores], dim=1)
    convs = list({id(c): c for c in final_cls_convs(head)}.values())
    expected = []
    for i in range(len(inputs)):
        z = logits[i, rows[i]]
        if kind == 'softmax':
            loss = F.cross_entropy(z, z.argmax(dim=-1), reduction='sum')
        else:
            loss = F.binary_cross_entropy_with_logits(
                z, (z.sigmoid() > 0.5).float(), reduction='sum')
        grads = torch.autograd.grad(loss, [c.weight for c in convs], retain_graph=True)
        # center tap, anchor blocks summed: the gradient of one offset shared by the anchors
        expected.append(torch.cat([
            g[:, :, g.shape[2] // 2, g.shape[3] // 2].reshape(-1, channels, g.shape[1])
            .sum(dim=0).flatten() for g in grads]))
    return torch.stack(expected), posteriors


def assert_close_relative(ours, theirs):
    """Equal up to float32 rounding, at the scale of the largest entry (an untrained
    hourglass's features are ~1e-9, so a fixed absolute tolerance would pass anything)."""
    scale = theirs.abs().max()
    torch.testing.assert_close(ours / scale, theirs / scale, rtol=1e-4, atol=1e-6)


def build_detector(cfg):
    from .test_learning_loss_detector import build
    return build(cfg).eval()


def detection_batch(cfg, n):
    from .test_learning_loss_detector import batch
    return batch(cfg, n)


def test_detection_embedding_is_autograds_gradient_on_the_small_ssd(tiny_cfg):
    model = build_detector(tiny_cfg)
    data = detection_batch(tiny_cfg, 2)
    out = model.score_step(copy.deepcopy(data), ('grad_embedding', 'posteriors'))
    embedding = out['grad_embedding']
    # C+1 = 6 classes times the five level convs' inputs 32 + 64 + 128 + 128 + 128
    assert embedding.shape == (2, 6 * 480)
    expected, posteriors = detection_reference(model, data)
    for ours, theirs in zip(out['posteriors'], posteriors):
        torch.testing.assert_close(ours, theirs.detach())
    assert all(len(p) > 0 for p in posteriors)
    assert_close_relative(embedding, expected)
    assert embedding.abs().sum(dim=1).min() > 0


def test_detection_embedding_is_autograds_gradient_on_a_sigmoid_head_shared_over_levels(
        tiny_cfg):
    model = build_detector(Config.fromfile(str(RETINANET)))
    # a fresh RetinaNet's prior (p = 0.01) is below the default threshold
    model.score_cfg = dict(num_boxes=30, score_thr=0.0)
    data = detection_batch(tiny_cfg, 2)
    out = model.score_step(copy.deepcopy(data), ('grad_embedding',))
    assert out['grad_embedding'].shape == (2, 5 * 32)   # C classes, one shared conv
    expected, _ = detection_reference(model, data)
    assert_close_relative(out['grad_embedding'], expected)


def test_an_image_without_candidates_has_a_zero_embedding(tiny_cfg):
    model = build_detector(tiny_cfg)
    model.score_cfg = dict(num_boxes=5, score_thr=1.0)
    out = model.score_step(detection_batch(tiny_cfg, 2), ('grad_embedding', 'posteriors'))
    assert [len(p) for p in out['posteriors']] == [0, 0]
    assert out['grad_embedding'].shape == (2, 2880) and not out['grad_embedding'].any()


def test_the_other_outputs_do_not_change_when_the_embedding_is_asked_too(tiny_cfg):
    model = build_detector(tiny_cfg)
    data = detection_batch(tiny_cfg, 2)
    alone = model.score_step(copy.deepcopy(data), ('posteriors', 'boxes'))
    both = model.score_step(copy.deepcopy(data), ('posteriors', 'boxes', 'grad_embedding'))
    for key in ('posteriors', 'boxes'):
        for a, b in zip(alone[key], both[key]):
            torch.testing.assert_close(a, b)


def test_wrappers_without_the_embedding_refuse_it_by_name(tiny_cfg, monkeypatch):
    assert 'grad_embedding' in SCORE_OUTPUTS
    model = build_detector(tiny_cfg)
    monkeypatch.setattr(type(model), 'task_output_names', frozenset({'posteriors', 'boxes'}))
    with pytest.raises(UnsupportedScoreOutputError, match="does not compute 'grad_embedding'"):
        model.score_step(detection_batch(tiny_cfg, 1), ('grad_embedding',))


# ------------------------------------------------------------------ two-stage: closed form
@pytest.fixture
def frcnn(voc_root):
    """The small Faster R-CNN, in eval mode, and its config pointed at the generated data."""
    from .test_two_stage_detector import build
    cfg = voc_config(FASTER_RCNN, voc_root)
    return build(cfg.model).eval(), cfg


def roi_reference(model, data):
    """Autograd's gradient of each image's pseudo-label loss over its scored RoIs.

    The RoIs are picked here from the posteriors as ``score_cfg`` says (top
    foreground confidence, at least ``score_thr``), independently of the
    wrapper's own selection.
    """
    from mmdet.structures.bbox import bbox2roi
    roi_head = model.task_model.roi_head
    fc_cls = roi_head.bbox_head.fc_cls
    num_classes = roi_head.bbox_head.num_classes
    processed = model.data_preprocessor(copy.deepcopy(data), False)
    with torch.no_grad():
        feats = model.task_model.extract_feat(processed['inputs'])
        proposals = [r.bboxes for r in
                     model.task_model.rpn_head.predict(feats, processed['data_samples'],
                                                       rescale=False)]
    logits = roi_head._bbox_forward(feats, bbox2roi(proposals))['cls_score']
    expected, posteriors = [], []
    for z in logits.split([len(p) for p in proposals]):
        probs = z.detach().softmax(dim=-1)
        fg = probs[:, :num_classes].max(dim=1).values
        order = fg.argsort(descending=True)[:model.score_cfg['num_boxes']]
        keep = order[fg[order] >= model.score_cfg['score_thr']]
        loss = F.cross_entropy(z[keep], z[keep].argmax(dim=-1), reduction='sum')
        grad, = torch.autograd.grad(loss, [fc_cls.weight], retain_graph=True)
        expected.append(grad.flatten())
        posteriors.append(probs[keep])
    return torch.stack(expected), posteriors


def test_roi_embedding_is_autograds_gradient_on_the_small_faster_rcnn(frcnn):
    model, cfg = frcnn
    model.score_cfg = dict(num_boxes=30, score_thr=0.05)
    data = detection_batch(cfg, 2)
    out = model.score_step(copy.deepcopy(data), ('grad_embedding', 'posteriors'))
    # C+1 = 6 classes times fc_cls's input, the 128 outputs of the shared fcs
    assert out['grad_embedding'].shape == (2, 6 * 128)
    expected, posteriors = roi_reference(model, data)
    assert [len(p) for p in posteriors] == [30, 30]
    for ours, theirs in zip(out['posteriors'], posteriors):
        torch.testing.assert_close(ours, theirs)
    assert_close_relative(out['grad_embedding'], expected)
    assert out['grad_embedding'].abs().sum(dim=1).min() > 0
    # the embedding is per image: the two images' gradients differ
    assert not torch.allclose(out['grad_embedding'][0], out['grad_embedding'][1])


def test_roi_embedding_leaves_the_other_outputs_and_is_zero_without_rois(frcnn):
    model, cfg = frcnn
    data = detection_batch(cfg, 2)
    keys = ('posteriors', 'boxes', 'proposals')
    alone = model.score_step(copy.deepcopy(data), keys)
    both = model.score_step(copy.deepcopy(data), (*keys, 'grad_embedding'))
    for key in keys:
        for a, b in zip(alone[key], both[key]):
            torch.testing.assert_close(a, b)
    model.score_cfg = dict(num_boxes=5, score_thr=1.0)
    out = model.score_step(copy.deepcopy(data), ('grad_embedding', 'posteriors'))
    assert [len(p) for p in out['posteriors']] == [0, 0]
    assert out['grad_embedding'].shape == (2, 768) and not out['grad_embedding'].any()


def test_roi_embedding_refuses_a_class_loss_with_its_own_activation(frcnn, monkeypatch):
    model, cfg = frcnn
    head = model.task_model.roi_head.bbox_head
    monkeypatch.setattr(type(head.loss_cls), 'custom_cls_channels', True, raising=False)
    with pytest.raises(UnsupportedScoreOutputError, match='custom_cls_channels'):
        model.score_step(detection_batch(cfg, 1), ('grad_embedding',))


def test_softmax_residual_is_posterior_minus_its_argmax():
    p = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    torch.testing.assert_close(pseudo_label_residual(p, 'softmax'),
                               torch.tensor([[0.2, -0.5, 0.3], [0.1, 0.1, -0.2]]))
    # sigmoid: per class against its own rounding; the background column is dropped
    q = torch.tensor([[0.9, 0.2, 0.5, 0.0]])
    torch.testing.assert_close(pseudo_label_residual(q, 'sigmoid'),
                               torch.tensor([[-0.1, 0.2, 0.5]]))


# ------------------------------------------------------------------ pose: closed form
def test_pose_embedding_is_autograds_gradient_on_the_small_hourglass(pose_cfg):
    from .test_pose import batch, build
    model = build(pose_cfg).eval()
    head = model.task_model.head
    data = batch(pose_cfg, 2, split='val')
    out = model.score_step(copy.deepcopy(data), ('grad_embedding', 'heatmaps'))
    assert out['grad_embedding'].shape == (2, 16 * 64)
    processed = model.data_preprocessor(copy.deepcopy(data), False)
    with torch.no_grad():
        feats = model.task_model.extract_feat(processed['inputs'])
    final = head.multi_final_layers[-1]
    pred = head.forward(feats)[-1]          # the same batch of 2, with autograd on
    torch.testing.assert_close(pred.detach(), out['heatmaps'])
    expected = []
    for i in range(2):
        # the codec's own target at each joint's argmax, drawn by mmpose
        hm = pred.detach()[i]
        peaks = np.stack([np.unravel_index(int(h.argmax()), h.shape)[::-1] for h in hm])
        target = torch.as_tensor(mmpose_target(head.decoder, peaks, hm.shape[-2:]))
        loss = 0.5 * ((pred[i] - target) ** 2).sum()
        grad, = torch.autograd.grad(loss, [final.weight], retain_graph=True)
        expected.append(grad[:, :, 0, 0].flatten())
    expected = torch.stack(expected)
    assert expected.abs().max() > 0
    assert_close_relative(out['grad_embedding'], expected)


def mmpose_target(decoder, peaks, size):
    """mmpose's Gaussian heatmaps for keypoints ``peaks`` (K, 2) xy, as its codec draws them."""
    draw = generate_unbiased_gaussian_heatmaps if decoder.unbiased \
        else generate_gaussian_heatmaps
    height, width = size
    heatmaps, _ = draw(heatmap_size=(width, height), keypoints=peaks[None].astype(np.float32),
                       keypoints_visible=np.ones((1, len(peaks)), np.float32),
                       sigma=decoder.sigma)
    return heatmaps


@pytest.mark.parametrize('unbiased', [False, True])
@pytest.mark.parametrize('sigma', [1, 2])
def test_pseudo_label_heatmaps_are_mmposes_targets(unbiased, sigma):
    heatmaps = torch.rand(2, 3, 12, 10)
    heatmaps[0, 0, 0, 9] = 5.0        # a peak at a corner: the window is cut there
    ours = pseudo_label_heatmaps(heatmaps, sigma, unbiased)
    decoder = type('Codec', (), dict(sigma=sigma, unbiased=unbiased))
    for b in range(2):
        peaks = np.stack([np.unravel_index(int(h.argmax()), h.shape)[::-1]
                          for h in heatmaps[b]])
        np.testing.assert_allclose(ours[b].numpy(), mmpose_target(decoder, peaks, (12, 10)),
                                   rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ strategies, hand-built
def outputs_of(embedding):
    embedding = np.asarray(embedding, dtype=np.float32)
    return {'grad_embedding': embedding, 'num_samples': len(embedding)}


def box_embedding(probs, h):
    """One box's ``(p - onehot(argmax)) ⊗ h``, flattened: what the detector gives per box."""
    residual = pseudo_label_residual(torch.tensor([probs]), 'softmax')[0]
    return torch.outer(residual, torch.tensor(h)).flatten().numpy()


def test_egl_ranks_a_uniform_posterior_above_a_peaked_one():
    h = [1.0, -2.0, 0.5]
    uniform = box_embedding([0.25] * 4, h)
    peaked = box_embedding([0.94, 0.02, 0.02, 0.02], h)
    certain = box_embedding([1.0, 0.0, 0.0, 0.0], h)
    strategy = STRATEGIES.build(dict(type='ExpectedGradientLengthStrategy'),
                                default_args=dict(task='detection'))
    scores = strategy.scores(outputs_of([peaked, uniform, certain]), {})
    assert scores[1] > scores[0] > scores[2] == 0.0
    # ||(p - e) ⊗ h|| = ||p - e|| ||h||: for the uniform box sqrt(0.75) * sqrt(5.25)
    assert scores[1] == pytest.approx(math.sqrt(0.75 * 5.25), rel=1e-6)
    order, _ = strategy.select(outputs_of([peaked, uniform, certain]), {}, 1,
                               np.random.default_rng(0))
    assert order.tolist() == [1]


def test_egl_and_badge_refuse_a_committee_and_name_the_shape():
    for name in ('ExpectedGradientLengthStrategy', 'BadgeStrategy'):
        strategy = STRATEGIES.build(dict(type=name), default_args=dict(task='pose'))
        stacked = {'grad_embedding': np.zeros((4, 3, 5)), 'num_samples': 4}
        with pytest.raises(ValueError, match=r'\(4, E\); got \(4, 3, 5\)'):
            strategy.select(stacked, {}, 2, np.random.default_rng(0))
        with pytest.raises(ValueError, match="needs the candidate outputs \\['grad_embedding'\\]"):
            strategy.select({'num_samples': 4}, {}, 2, np.random.default_rng(0))


def clusters_and_cloud(cluster_size, cloud_size, seed=0):
    """Cluster a (norm ~12, the largest), cluster b opposite it (norm ~10), a cloud near 0."""
    rng = np.random.default_rng(seed)
    a = np.array([12.0, 0.0, 0.0]) + rng.normal(0, 0.1, (cluster_size, 3))
    b = np.array([-10.0, 0.0, 0.0]) + rng.normal(0, 0.1, (cluster_size, 3))
    cloud = rng.normal(0, 0.1, (cloud_size, 3))
    half = cloud_size // 2
    # the clusters in the middle: no pick may follow from positions
    embedding = np.concatenate([cloud[:half], a, cloud[half:], b])
    group = np.array(['cloud'] * half + ['a'] * cluster_size + ['cloud'] * (cloud_size - half)
                     + ['b'] * cluster_size)
    return embedding, group


def test_badge_picks_one_of_each_large_cluster_before_any_small_point():
    embedding, group = clusters_and_cloud(cluster_size=20, cloud_size=4)
    strategy = BadgeStrategy(task='detection', chunk_size=7)   # blocks smaller than N
    second = []
    for seed in range(50):
        order, scores = strategy.select(outputs_of(embedding), {}, 2,
                                        np.random.default_rng(seed))
        assert group[order[0]] == 'a' and order[0] == int(np.argmax(scores))
        second.append(group[order[1]])
    # D^2 ~ 484 for each b point, ~144 for each cloud point: b with probability 0.94
    assert second.count('b') >= 42
    np.testing.assert_allclose(scores, np.linalg.norm(embedding, axis=1), rtol=1e-6)
    # top-K by norm (EGL) takes both from cluster a
    top, _ = ExpectedGradientLengthStrategy(task='detection').select(
        outputs_of(embedding), {}, 2, np.random.default_rng(0))
    assert set(group[top]) == {'a'}


def test_badge_draws_the_next_pick_with_probability_proportional_to_d_squared():
    embedding, group = clusters_and_cloud(cluster_size=10, cloud_size=40)
    first = int(np.argmax(np.linalg.norm(embedding, axis=1)))
    d2 = ((embedding - embedding[first]) ** 2).sum(axis=1)
    law = {g: d2[group == g].sum() / d2.sum() for g in ('a', 'b', 'cloud')}
    assert 0.3 < law['b'] < 0.7            # a real draw, not a foregone conclusion
    runs = 400
    seconds = [group[kmeans_pp_seeding(embedding, 2, np.random.default_rng(seed),
                                       chunk_size=16)[1]] for seed in range(runs)]
    for g, p in law.items():
        sd = math.sqrt(p * (1 - p) / runs)
        assert abs(seconds.count(g) / runs - p) <= 4 * sd + 1e-9, (g, p)


def test_badge_is_reproducible_and_never_draws_a_duplicate_of_a_pick():
    embedding = np.repeat(np.eye(3, dtype=np.float32) * [3.0, 2.0, 1.0], 4, axis=0)
    strategy = BadgeStrategy(task='pose')
    order, _ = strategy.select(outputs_of(embedding), {}, 3, np.random.default_rng(5))
    # 3 distinct directions, 4 copies each: the 3 picks are one copy of each
    assert sorted(order // 4) == [0, 1, 2] and order[0] // 4 == 0
    again, _ = strategy.select(outputs_of(embedding), {}, 3, np.random.default_rng(5))
    assert order.tolist() == again.tolist()
    # past the distinct points, the duplicates left are drawn uniformly, all distinct
    everything = kmeans_pp_seeding(embedding, 12, np.random.default_rng(1))
    assert sorted(everything.tolist()) == list(range(12))
    zeros = kmeans_pp_seeding(np.zeros((5, 2)), 5, np.random.default_rng(1))
    assert sorted(zeros.tolist()) == list(range(5))


def test_badge_refuses_a_bad_chunk_size_and_too_many_picks():
    with pytest.raises(ValueError, match='chunk_size=0 must be an integer >= 1'):
        BadgeStrategy(chunk_size=0)
    with pytest.raises(ValueError, match='cannot pick 4 of 3'):
        kmeans_pp_seeding(np.ones((3, 2)), 4, np.random.default_rng(0))


# ------------------------------------------------------------------ the scoring loop
def test_the_scoring_loop_hands_strategies_an_n_by_e_matrix(tiny_cfg):
    model = build_detector(tiny_cfg)
    strategy = BadgeStrategy(task='detection')
    data = detection_batch(tiny_cfg, 3)
    out = score_batches(model, [data], strategy.candidate_passes())
    assert out['grad_embedding'].shape == (3, 2880) and out['num_samples'] == 3
    order, scores = strategy.select(out, {}, 2, np.random.default_rng(0))
    assert len(set(order.tolist())) == 2 and scores.shape == (3,)
    assert set(strategy.candidate_passes()) == {'main'}
    assert strategy.candidate_passes()['main'] == ScorePass(('grad_embedding',))


# ------------------------------------------------------------------ real cycles (slow)
def run_cycle(cfg, tmp_path, strategy):

    from .cycles import one_epoch_two_cycles, run_and_check_selection
    cfg = one_epoch_two_cycles(copy.deepcopy(cfg))
    cfg.active_learning.strategy = strategy
    c0, c1, picked = run_and_check_selection(cfg, tmp_path)
    assert c1['labeled'] == c0['labeled'] + picked
    scores = [p['score'] for p in c0['selected']]
    assert all(math.isfinite(s) and s >= 0 for s in scores)
    return c0, c1


GRADIENT_STRATEGIES = [dict(type='ExpectedGradientLengthStrategy'), dict(type='BadgeStrategy')]


@pytest.mark.slow
@pytest.mark.parametrize('strategy', GRADIENT_STRATEGIES, ids=lambda s: s['type'])
def test_detection_cycle(tiny_cfg, tmp_path, strategy):
    c0, c1 = run_cycle(tiny_cfg, tmp_path, strategy)
    assert 'pascal_voc/mAP' in c1['metrics']
    if strategy['type'] == 'BadgeStrategy':
        # the seeding's first pick is the largest gradient norm among the candidates
        assert c0['selected'][0]['score'] == max(p['score'] for p in c0['selected'])


@pytest.mark.slow
@pytest.mark.parametrize('strategy', GRADIENT_STRATEGIES, ids=lambda s: s['type'])
def test_pose_cycle(pose_cfg, tmp_path, strategy):
    _, c1 = run_cycle(pose_cfg, tmp_path, strategy)
    assert 'PCK' in c1['metrics']
