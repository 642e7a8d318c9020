"""The scoring pass runs on mmengine's Runner as a registered test loop."""
import copy

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS, init_default_scope

from mmal.datasets import build_pool, leaf_configs, scoring_config
from mmal.loop.runner import CycleRunner
from mmal.scoring import HorizontalFlip, ScorePass, score_batches

from .test_learning_loss_detector import batch, build


@HOOKS.register_module(force=True)
class CountScoringIters(Hook):
    """A user's hook: sees every scoring iteration, as in testing."""

    iters: list = []

    def before_test_iter(self, runner, batch_idx, data_batch=None):
        CountScoringIters.iters.append(batch_idx)


def score_runner(cfg, tmp_path, positions, passes, fp16=False, **loop):
    cfg = copy.deepcopy(cfg)
    init_default_scope(cfg.default_scope)  # other tests may leave mmpose's scope active
    pool = build_pool(cfg.train_dataloader.dataset)
    pipeline = leaf_configs(cfg.test_dataloader.dataset)[0]['pipeline']
    cfg.test_dataloader = dict(
        batch_size=3, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=scoring_config(cfg.train_dataloader.dataset, pool, positions, pipeline))
    cfg.test_cfg = dict(type='ScoreLoop', fp16=fp16, passes=passes, **loop)
    cfg.work_dir = str(tmp_path)
    cfg.custom_hooks = [dict(type='CountScoringIters')]
    return CycleRunner.from_cfg(cfg), pool


def test_the_runner_runs_scoring_as_its_test_loop_with_hooks_in_sample_order(tiny_cfg, tmp_path):
    positions = [0, 2, 3, 5, 7, 8, 11]
    runner, pool = score_runner(tiny_cfg, tmp_path, positions, dict(
        main=dict(outputs=('pred_loss', 'features', 'posteriors'))))
    CountScoringIters.iters = []
    out = runner.test()
    assert CountScoringIters.iters == [0, 1, 2]          # 7 samples, batches of 3
    assert out['num_samples'] == 7 and out['posterior_kind'] == 'softmax'
    assert out['pred_loss'].shape == (7,) and out['pred_loss'].dtype == np.float64
    assert out['features'].shape[0] == 7 and len(out['posteriors']) == 7
    # the same numbers as one batch of the same samples in this order
    model = runner.model
    alone = score_batches(model, [batch_of(tiny_cfg, pool, positions)],
                          dict(main=ScorePass(('pred_loss',))))
    np.testing.assert_allclose(out['pred_loss'], alone['pred_loss'], rtol=1e-4, atol=1e-5)


def test_big_outputs_spill_to_compact_memory_maps_with_the_same_values(tiny_cfg, tmp_path):
    positions = [0, 2, 3, 5, 7, 8, 11]
    passes = dict(main=dict(outputs=('pred_loss', 'features', 'posteriors')))
    in_memory = score_runner(tiny_cfg, tmp_path / 'a', positions, passes)[0].test()
    spill = tmp_path / 'spill'
    spilled = score_runner(tiny_cfg, tmp_path / 'b', positions, passes, spill_dir=str(spill),
                           spill_bytes=0)[0].test()
    assert isinstance(spilled['features'], np.memmap) and spilled['features'].dtype == np.float16
    assert isinstance(spilled['pred_loss'], np.memmap) and spilled['pred_loss'].dtype == np.float32
    assert (spill / 'features.rank0.npy').exists()
    assert not isinstance(in_memory['features'], np.memmap)
    np.testing.assert_allclose(spilled['features'], in_memory['features'], rtol=2e-3, atol=1e-3)
    np.testing.assert_allclose(spilled['pred_loss'], in_memory['pred_loss'], rtol=1e-6)
    for a, b in zip(spilled['posteriors'], in_memory['posteriors']):  # ragged: as before
        np.testing.assert_array_equal(a, b)


def test_the_store_puts_rows_where_their_indices_say(tmp_path):
    from mmal.scoring.store import OutputStore
    rng = np.random.default_rng(0)
    values = rng.normal(size=(10, 4)).astype(np.float32)
    for spill_bytes in (None, 0):
        store = OutputStore(10, tmp_path / str(spill_bytes), spill_bytes)
        order = rng.permutation(10).tolist()
        for lo in range(0, 10, 3):
            rows = order[lo:lo + 3]
            store.add(rows, [dict(features=values[r], pred_loss=np.float32(r),
                                  boxes=np.zeros((r, 4))) for r in rows])
        arrays, ragged = store.gather()
        np.testing.assert_allclose(arrays['features'], values, rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(arrays['pred_loss'], np.arange(10))
        assert [len(item['boxes']) for item in ragged] == sorted(
            len(item['boxes']) for item in ragged)  # ragged outputs in index order too


def batch_of(cfg, pool, positions):
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS
    pipeline = leaf_configs(cfg.test_dataloader.dataset)[0]['pipeline']
    dataset = DATASETS.build(scoring_config(cfg.train_dataloader.dataset, pool, positions,
                                            pipeline))
    return pseudo_collate([dataset[i] for i in range(len(dataset))])


def test_views_and_committees_are_passes_of_the_same_loop(tiny_cfg):
    model = build(tiny_cfg).eval()
    model.score_cfg = dict(num_boxes=10, score_thr=0.0)
    data = batch(tiny_cfg, 2)
    passes = dict(
        main=ScorePass(('boxes', 'posteriors')),
        flip=ScorePass(('boxes',), transform=dict(type='HorizontalFlip')),
        mc=ScorePass(('posteriors',), members=3, dropout=0.3),
    )
    out = score_batches(model, [copy.deepcopy(data)], passes)
    assert set(out) >= {'boxes', 'posteriors', 'flip/boxes', 'mc/posteriors'}
    assert out['mc/posteriors'].shape == (2, 3, 10, 6)   # samples, members, boxes, C+1
    members = out['mc/posteriors'][0]
    assert not np.allclose(members[0], members[1])      # dropout: the members differ
    again = score_batches(model, [copy.deepcopy(data)], dict(mc=passes['mc']))
    np.testing.assert_array_equal(again['mc/posteriors'], out['mc/posteriors'])  # seeded
    # flipped boxes come back in the image's frame: within it, and not mirrored
    width = model.data_preprocessor(copy.deepcopy(data), False)['inputs'].shape[-1]
    for boxes in out['flip/boxes']:
        assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 2] <= width + 1e-3).all()
    flip = HorizontalFlip()
    flip(torch.zeros(1, 3, 8, 100))
    back = flip.invert('boxes', [torch.tensor([[10.0, 1.0, 30.0, 5.0]])])[0]
    torch.testing.assert_close(back, torch.tensor([[70.0, 1.0, 90.0, 5.0]]))
    with pytest.raises(ValueError, match='members > 1 with dropout=0'):
        ScorePass(('posteriors',), members=2)


def test_a_strategy_asking_for_outputs_the_model_cannot_give_is_refused_before_training(
        tiny_cfg, tmp_path):
    from mmal.loop import ActiveLearningExperiment
    from mmal.utils import ConfigError
    cfg = copy.deepcopy(tiny_cfg)
    cfg.active_learning = dict(initial_size=8, budget_per_cycle=8, num_cycles=2, seed=0,
                               strategy=dict(type='LocalizationTightnessStrategy'))
    with pytest.raises(ConfigError, match=r"needs the score outputs \['proposals'\], which "
                                          r"model.type='LearningLossDetector' does not give"):
        ActiveLearningExperiment(cfg, str(tmp_path / 'run'))
    assert not (tmp_path / 'run' / 'cycle_00').exists()


def test_a_samples_noise_and_dropout_do_not_depend_on_its_batch(tiny_cfg):
    """Seeds come from the sample, not the batch: 1 or N processes perturb it alike."""
    model = build(tiny_cfg).eval()
    model.score_cfg = dict(num_boxes=10, score_thr=0.0)
    data = batch(tiny_cfg, 3)
    passes = dict(noise=ScorePass(('posteriors',), transform=dict(type='GaussianNoise', std=0.5)),
                  mc=ScorePass(('posteriors',), members=2, dropout=0.3))
    together = score_batches(model, [copy.deepcopy(data)], passes)
    last_alone = dict(inputs=data['inputs'][2:], data_samples=data['data_samples'][2:])
    alone = score_batches(model, [copy.deepcopy(last_alone)], passes)
    np.testing.assert_allclose(alone['noise/posteriors'][0], together['noise/posteriors'][2],
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(alone['mc/posteriors'][0], together['mc/posteriors'][2],
                               rtol=1e-4, atol=1e-6)
    # and the perturbation is real: it changes the outputs
    clean = score_batches(model, [copy.deepcopy(data)], dict(main=ScorePass(('posteriors',))))
    assert not np.allclose(clean['posteriors'][2], together['noise/posteriors'][2])
