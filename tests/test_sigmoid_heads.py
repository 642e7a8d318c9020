"""Uncertainty on sigmoid heads (RetinaNet, FCOS), measured on the real heads' outputs.

Each head's class logits are recomputed here from its own forward pass and
read independently of :mod:`mmal.models.detectors.candidates`: the
candidates must be the boxes with the largest per-class sigmoid, their
posteriors those sigmoids with ``prod(1 - p_c)`` appended as background,
and each measure the formula :class:`~mmal.strategies.uncertainty.UncertaintyStrategy`
documents, applied to them.
"""
import copy
import math

import numpy as np
import pytest
import torch

from mmal.datasets import deterministic_pipeline
from mmal.registry import STRATEGIES
from mmal.scoring import score_batches

from .conftest import voc_config
from .test_learning_loss_detector import batch, build

SIGMOID_HEADS = {
    'retinanet': 'tests/data/retinanet-tiny_ll_synthetic-voc.py',
    'fcos': 'tests/data/fcos-tiny_ll_synthetic-voc.py',
}
MEASURES = ('LeastConfidenceStrategy', 'MarginStrategy', 'EntropyStrategy')
NUM_BOXES = 20
NUM_IMAGES = 2


def fixed_batch(cfg):
    """``NUM_IMAGES`` training images without the random flip: the same on every run."""
    cfg = copy.deepcopy(cfg)
    dataset = cfg.train_dataloader.dataset
    dataset.pipeline = deterministic_pipeline(dataset.pipeline)
    return batch(cfg, NUM_IMAGES)


def documented_measure(measure: str, probs: np.ndarray) -> np.ndarray:
    """A box's uncertainty ``(N, C) -> (N,)`` as the uncertainty docstring defines it.

    Each class is a binary decision ``(p_c, 1 - p_c)``; least confidence and
    margin take the least sure decision of the box, entropy the summed
    binary entropies divided by ``C log 2``.
    """
    if measure == 'LeastConfidenceStrategy':
        return (1.0 - np.maximum(probs, 1.0 - probs)).max(axis=1)
    if measure == 'MarginStrategy':
        return (1.0 - np.abs(probs - (1.0 - probs))).max(axis=1)
    with np.errstate(divide='ignore', invalid='ignore'):
        entropy = -(np.nan_to_num(probs * np.log(probs))
                    + np.nan_to_num((1.0 - probs) * np.log(1.0 - probs)))
    return entropy.sum(axis=1) / (probs.shape[1] * math.log(2))


def head_outputs(model, data) -> tuple:
    """The head's own outputs for ``data``, from its forward pass (eval mode)."""
    model.eval()
    with torch.no_grad():
        inputs = model.data_preprocessor(copy.deepcopy(data), False)['inputs']
        return model.task_model.bbox_head(model.task_model.extract_feat(inputs))


def spread_class_logits(model, data, std: float = 2.0) -> None:
    """Give the untrained class conv random weights, so probabilities cover (0, 1).

    Initialised, every class logit sits near ``log(0.01 / 0.99)`` (mmdet's
    ``bias_prob``), and the measures would only be checked on one side of
    0.5, where ``max(p, 1 - p)`` never switches branch. The weights are
    scaled to class logits of standard deviation ``std`` on ``data``: larger
    ones round many float32 probabilities to exactly 1, and the candidates'
    order would then rest on ties.
    """
    head = model.task_model.bbox_head
    conv = head.retina_cls if hasattr(head, 'retina_cls') else head.conv_cls
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        conv.bias.zero_()
        logits = torch.cat([c.flatten() for c in head_outputs(model, data)[0]])
        conv.weight.mul_(std / logits.std())


def per_image_rows(maps: list, image: int, width: int) -> torch.Tensor:
    """One image's per-level maps ``(A * width, H, W)`` as rows ``(H * W * A, width)``."""
    return torch.cat([m[image].permute(1, 2, 0).reshape(-1, width) for m in maps])


@pytest.fixture(scope='module', params=sorted(SIGMOID_HEADS))
def sigmoid_head(request, voc_root):
    """(name, model with spread class logits, a batch, the head's class probabilities).

    The probabilities are per image ``(priors, C)``, the sigmoid of the
    head's class logits in the order of its priors.
    """
    cfg = voc_config(SIGMOID_HEADS[request.param], voc_root)
    model = build(cfg)
    model.score_cfg = dict(num_boxes=NUM_BOXES, score_thr=0.0)
    data = fixed_batch(cfg)
    spread_class_logits(model, data)
    head = model.task_model.bbox_head
    num_classes = len(cfg.train_dataloader.dataset.metainfo['classes'])
    assert head.num_classes == num_classes and head.cls_out_channels == num_classes
    cls_scores = head_outputs(model, data)[0]
    probs = [per_image_rows(cls_scores, i, num_classes).double().sigmoid()
             for i in range(NUM_IMAGES)]
    return request.param, model, data, probs


@pytest.mark.parametrize('measure', MEASURES)
def test_each_measure_reads_the_real_heads_per_class_sigmoids(sigmoid_head, measure):
    name, model, data, head_probs = sigmoid_head
    assert model.posterior_kind == 'sigmoid'
    strategy = STRATEGIES.build(dict(type=measure), default_args=dict(task='detection'))
    outputs = score_batches(model, [copy.deepcopy(data)], strategy.candidate_passes())
    assert outputs['posterior_kind'] == 'sigmoid'
    scores = strategy.scores(outputs, {})
    assert scores.shape == (NUM_IMAGES,) and np.isfinite(scores).all()
    expected_scores = []
    for probs, posteriors in zip(head_probs, outputs['posteriors']):
        num_classes = probs.shape[1]
        # every real class is a foreground column; only the derived one is background
        assert posteriors.shape == (NUM_BOXES, num_classes + 1)
        # the candidates: the largest per-class sigmoids, best first
        top = probs.max(dim=1).values.topk(NUM_BOXES).indices
        expected = probs[top].numpy()
        assert expected.min() < 0.5 < expected.max(), f'{name}: probabilities on one side'
        # the model ranks in float32: distinct values there, or the order rests on ties
        confidence = probs.float().max(dim=1).values.topk(NUM_BOXES + 1).values
        assert len(set(confidence.tolist())) == NUM_BOXES + 1, f'{name}: tied candidates'
        np.testing.assert_allclose(posteriors[:, :-1], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(posteriors[:, -1], np.prod(1.0 - expected, axis=1),
                                   rtol=1e-4, atol=1e-7)
        per_box = strategy.per_box(torch.as_tensor(posteriors), 'sigmoid').numpy()
        np.testing.assert_allclose(per_box, documented_measure(measure, expected),
                                   rtol=1e-4, atol=1e-6)
        expected_scores.append(documented_measure(measure, expected).max())
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, atol=1e-6)
    # read as a softmax posterior, the same rows give other numbers: the kind is used
    as_softmax = strategy.scores(dict(outputs, posterior_kind='softmax'), {})
    assert not np.allclose(scores, as_softmax)


def test_on_sigmoid_heads_margin_is_twice_least_confidence(sigmoid_head):
    """One binary decision's margin ``1 - |2p - 1|`` is twice its ``1 - max(p, 1 - p)``.

    So the two strategies rank the images of a sigmoid head alike (as the
    uncertainty docstring says), empty images included.
    """
    _, model, data, _ = sigmoid_head
    scores = {}
    for measure in ('LeastConfidenceStrategy', 'MarginStrategy'):
        strategy = STRATEGIES.build(dict(type=measure), default_args=dict(task='detection'))
        outputs = score_batches(model, [copy.deepcopy(data)], strategy.candidate_passes())
        empty = dict(outputs, posteriors=[np.zeros((0, outputs['posteriors'][0].shape[1]))])
        scores[measure] = np.append(strategy.scores(outputs, {}), strategy.scores(empty, {}))
    np.testing.assert_allclose(scores['MarginStrategy'], 2 * scores['LeastConfidenceStrategy'],
                               rtol=1e-5)


def test_fcos_candidates_are_cut_on_class_scores_not_on_centerness(voc_root):
    """FCOS ranks its candidates as mmdet's ``nms_pre`` cut does: by class score alone.

    mmdet multiplies by ``sigmoid(centerness)`` only after that cut, for
    NMS; ranking by the product here would keep other boxes, which this
    untrained head shows (so the first check can fail).
    """
    cfg = voc_config(SIGMOID_HEADS['fcos'], voc_root)
    model = build(cfg)
    model.score_cfg = dict(num_boxes=NUM_BOXES, score_thr=0.0)
    data = fixed_batch(cfg)
    spread_class_logits(model, data)
    cls_scores, _, centernesses = head_outputs(model, data)
    strategy = STRATEGIES.build(dict(type='EntropyStrategy'), default_args=dict(task='detection'))
    outputs = score_batches(model, [copy.deepcopy(data)], strategy.candidate_passes())
    for i, posteriors in enumerate(outputs['posteriors']):
        probs = per_image_rows(cls_scores, i, cls_scores[0].shape[1]).sigmoid()
        centerness = per_image_rows(centernesses, i, 1).sigmoid()
        by_class = probs.max(dim=1).values.topk(NUM_BOXES).indices
        with_centerness = (probs * centerness).max(dim=1).values.topk(NUM_BOXES).indices
        np.testing.assert_allclose(posteriors[:, :-1], probs[by_class].numpy(), rtol=1e-5,
                                   atol=1e-6)
        assert set(by_class.tolist()) != set(with_centerness.tolist())
