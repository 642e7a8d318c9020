"""Scoring under mixed precision: ``ScoreLoop(fp16=True)`` run by the Runner.

The loop wraps each batch in mmengine's ``autocast``, which on a CPU is
bfloat16 autocast: the same code path as fp16 scoring on a GPU, with
fewer mantissa bits. The outputs strategies read must come back finite,
float32, of the full-precision shapes, and close to the full-precision
values of the same model on the same samples.

Tolerances. bfloat16 keeps 8 significant bits (relative rounding error up
to 2**-9, about 0.2%); each layer's output is rounded again, so through
these networks a value drifts by a few tenths of a percent to about 1%
(measured: predicted losses 0.5%, heatmaps 0.6%, embeddings 1.8%). Hence
2% on predicted losses, 3% (relative L2, per sample) on heatmaps and 5% on
gradient embeddings, whose argmax pseudo-labels flip where an untrained
posterior is nearly uniform. Probabilities are compared to 5e-3 absolute:
a logit off by ``d`` moves a sigmoid or softmax probability by at most
``d / 2``, and the logits here are of order one.
"""
import copy

import numpy as np
import pytest
import torch

from .conftest import voc_config
from .test_score_loop import score_runner

FCOS_CONFIG = 'tests/data/fcos-tiny_ll_synthetic-voc.py'
TWO_STAGE_CONFIG = 'configs/learning_loss/faster-rcnn-tiny_ll_synthetic-voc.py'
POSITIONS = [0, 2, 3, 5, 7, 8]
DETECTION_OUTPUTS = ('pred_loss', 'posteriors', 'grad_embedding')
POSE_OUTPUTS = ('pred_loss', 'heatmaps', 'grad_embedding')
PRED_LOSS_RTOL = 2e-2
HEATMAP_RTOL = 3e-2
EMBEDDING_RTOL = 5e-2
PROBABILITY_ATOL = 5e-3


@pytest.fixture(params=['ssd', 'fcos', 'two_stage', 'pose'])
def scored(request, tmp_path):
    """(case, outputs, full-precision outputs, mixed-precision outputs, backbone dtypes).

    One Runner scores the same samples twice with the same weights: first
    as configured, ``fp16=True``, then with the loop's ``fp16`` off.
    """
    if request.param == 'pose':
        cfg, outputs = request.getfixturevalue('pose_cfg'), POSE_OUTPUTS
    else:
        cfg = (request.getfixturevalue('tiny_cfg') if request.param == 'ssd' else voc_config(
            FCOS_CONFIG if request.param == 'fcos' else TWO_STAGE_CONFIG,
            request.getfixturevalue('voc_root')))
        cfg = copy.deepcopy(cfg)
        # every prior a candidate: an untrained head's confidences nearly tie, and
        # at a cut any rounding swaps candidates, which would test tie-breaking
        cfg.model.score_cfg = dict(num_boxes=10**6, score_thr=0.0)
        outputs = DETECTION_OUTPUTS
    runner, _ = score_runner(cfg, tmp_path, POSITIONS, dict(main=dict(outputs=outputs)),
                             fp16=True)
    dtypes = []
    backbone = runner.model.task_model.backbone
    handle = backbone.register_forward_hook(
        lambda module, args, out: dtypes.append(
            (out[0] if isinstance(out, (tuple, list)) else out).dtype))
    try:
        mixed = runner.test()
        mixed_dtypes, dtypes[:] = list(dtypes), []
        runner.test_loop.fp16 = False
        full = runner.test()
    finally:
        handle.remove()
    return request.param, outputs, full, mixed, (mixed_dtypes, dtypes)


def relative_l2(mixed: np.ndarray, full: np.ndarray) -> np.ndarray:
    """Per sample, ``|mixed - full| / |full|`` over all its values."""
    difference = (mixed - full).reshape(len(full), -1)
    return np.linalg.norm(difference, axis=1) / np.linalg.norm(full.reshape(len(full), -1),
                                                               axis=1)


def test_scoring_under_autocast_gives_float32_outputs_close_to_full_precision(scored):
    case, outputs, full, mixed, (mixed_dtypes, full_dtypes) = scored
    # the loop did autocast (bf16 on a CPU) the network, and only when asked
    assert set(mixed_dtypes) == {torch.bfloat16} and set(full_dtypes) == {torch.float32}
    assert mixed['num_samples'] == full['num_samples'] == len(POSITIONS)
    for key in outputs:
        got, want = mixed[key], full[key]
        arrays = got if isinstance(got, list) else [got]
        assert all(a.dtype in (np.float32, np.float64) and np.isfinite(a).all()
                   for a in arrays), f'{case} {key}: not finite float32'
        assert np.shape(got) == np.shape(want), f'{case} {key}: shape'
    np.testing.assert_allclose(mixed['pred_loss'], full['pred_loss'], rtol=PRED_LOSS_RTOL,
                               atol=PRED_LOSS_RTOL * np.abs(full['pred_loss']).max())
    assert (relative_l2(mixed['grad_embedding'], full['grad_embedding'])
            < EMBEDDING_RTOL).all()
    if case == 'pose':
        assert (relative_l2(mixed['heatmaps'], full['heatmaps']) < HEATMAP_RTOL).all()
        return
    if case == 'two_stage':
        # the RPN and RoI head ran in float32 (mmcv's nms and RoIAlign refuse bf16),
        # on proposals from bf16 features: other RoIs, so no row-wise comparison
        assert all(np.allclose(p.sum(axis=1), 1, atol=1e-5) for p in mixed['posteriors'])
        return
    for got, want in zip(mixed['posteriors'], full['posteriors']):
        # the same boxes (every prior), ranked by their own rounded confidences:
        # each class's sorted probabilities compare whatever the order
        np.testing.assert_allclose(np.sort(got, axis=0), np.sort(want, axis=0),
                                   atol=PROBABILITY_ATOL, rtol=0)
