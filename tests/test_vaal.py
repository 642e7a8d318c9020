"""VAAL (Sinha et al., ICCV 2019): hand-built image sets, resume, arguments, real cycles."""
import copy
import csv
import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook

from mmal.models.vaal import BalancedBatchSampler
from mmal.models.vaal_trainer import RUN_FILE
from mmal.registry import STRATEGIES
from mmal.scoring import MAIN, ScorePass

from .cycles import one_epoch_two_cycles, run_and_check_selection

REPO = Path(__file__).resolve().parents[1]

#: Small enough for a CPU: 16 px images, narrow networks.
SMALL = dict(image_size=16, latent_dim=8, channels=8, discriminator_width=64, batch_size=16,
             iterations=60, checkpoint_interval=1000, log_interval=1000)


def build(task='detection', **kw):
    return STRATEGIES.build(dict(type='VAALStrategy', **kw), default_args=dict(task=task))


def images(rng, n, low, high, size=16):
    """``n`` noise images with values uniform in [low, high)."""
    return (low + (high - low) * rng.random((n, 3, size, size))).astype(np.float32)


def dark_and_bright(seed, size=16):
    """Labeled: 24 dark images; candidates: 12 dark, then 12 bright ones."""
    rng = np.random.default_rng(seed)
    labeled = dict(num_samples=24, images=images(rng, 24, 0.0, 0.3, size))
    candidates = dict(num_samples=24, images=np.concatenate(
        [images(rng, 12, 0.0, 0.3, size), images(rng, 12, 0.7, 1.0, size)]))
    return candidates, labeled


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_declares_resized_images_for_both_sets():
    strategy = build(image_size=64)
    expected = {MAIN: ScorePass(('images',), image_size=64)}
    assert strategy.candidate_passes() == expected
    assert strategy.labeled_passes() == expected


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_the_bright_candidates_unlike_the_dark_labeled_set_come_first(seed, tmp_path):
    strategy = build(**SMALL)
    strategy.work_dir = tmp_path
    candidates, labeled = dark_and_bright(seed)
    order, scores = strategy.select(candidates, labeled, 12, np.random.default_rng(seed))
    assert sorted(order.tolist()) == list(range(12, 24))
    assert scores[12:].min() > scores[:12].max()
    assert np.all((scores > 0) & (scores < 1))  # 1 - D(mu), a probability
    assert (tmp_path / 'last_checkpoint').exists() and (tmp_path / RUN_FILE).exists()


def test_without_a_work_dir_it_trains_in_a_temporary_folder():
    strategy = build(**dict(SMALL, iterations=5))
    candidates, labeled = dark_and_bright(0)
    order, scores = strategy.select(candidates, labeled, 3, np.random.default_rng(0))
    assert len(order) == 3 and scores.shape == (24,) and strategy.train_time > 0


def test_the_same_rng_gives_the_same_scores_and_global_random_states_are_kept(tmp_path):
    candidates, labeled = dark_and_bright(0)
    torch_state, np_state, py_state = (torch.get_rng_state(), np.random.get_state(),
                                       random.getstate())
    runs = []
    for name in ('a', 'b'):
        strategy = build(**dict(SMALL, iterations=10))
        strategy.work_dir = tmp_path / name
        runs.append(strategy.select(candidates, labeled, 5, np.random.default_rng(3)))
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert random.getstate() == py_state
    other = build(**dict(SMALL, iterations=10))
    other.work_dir = tmp_path / 'c'
    _, scores = other.select(candidates, labeled, 5, np.random.default_rng(4))
    assert not np.array_equal(scores, runs[0][1])  # the seed comes from the rng


class KilledError(Exception):
    pass


class KillAfter(Hook):
    """Dies after iteration ``n`` (1-based), once the checkpoint hook has saved it."""

    priority = 'LOWEST'

    def __init__(self, n):
        self.n = n

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 >= self.n:
            raise KilledError(f'killed after iteration {self.n}')


class RecordIterations(Hook):
    def __init__(self):
        self.seen = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.seen.append(runner.iter)


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_one(tmp_path):
    settings = dict(SMALL, iterations=30, checkpoint_interval=10)
    candidates, labeled = dark_and_bright(1)

    reference = build(**settings)
    reference.work_dir = tmp_path / 'whole'
    _, expected = reference.select(candidates, labeled, 12, np.random.default_rng(5))

    killed = build(**settings, custom_hooks=[KillAfter(13)])
    killed.work_dir = tmp_path / 'killed'
    with pytest.raises(KilledError):
        killed.select(candidates, labeled, 12, np.random.default_rng(5))
    assert (killed.work_dir / 'iter_10.pth').exists()
    assert not (killed.work_dir / 'iter_20.pth').exists()

    record = RecordIterations()
    resumed = build(**settings, custom_hooks=[record])
    resumed.work_dir = killed.work_dir
    order, scores = resumed.select(candidates, labeled, 12, np.random.default_rng(5))
    assert record.seen == list(range(10, 30))  # iterations 11..30 only
    # Two Runners started within one second share mmengine's timestamped log
    # folder, so look for the resumed run's log among all of them.
    text = '\n'.join(log.read_text() for log in sorted(killed.work_dir.glob('*/*.log')))
    assert re.search(r'resumed epoch: 0, iter: 10', text), text[-2000:]
    assert 'Advance dataloader 10 steps' in text
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)


def test_a_work_dir_of_another_run_is_refused(tmp_path):
    candidates, labeled = dark_and_bright(0)
    first = build(**dict(SMALL, iterations=4, checkpoint_interval=2))
    first.work_dir = tmp_path
    first.select(candidates, labeled, 3, np.random.default_rng(0))
    second = build(**dict(SMALL, iterations=4, checkpoint_interval=2, beta=0.5))
    second.work_dir = tmp_path
    with pytest.raises(ValueError, match=r"holds checkpoints of another VAAL run.*'beta': "
                                         r"\(1.0, 0.5\).*delete the folder"):
        second.select(candidates, labeled, 3, np.random.default_rng(0))
    recorded = json.loads((tmp_path / RUN_FILE).read_text())
    assert recorded['beta'] == 1.0  # the refused run left the record alone


def test_a_finished_run_is_not_trained_again(tmp_path):
    candidates, labeled = dark_and_bright(0)
    first = build(**dict(SMALL, iterations=4, checkpoint_interval=2))
    first.work_dir = tmp_path
    _, expected = first.select(candidates, labeled, 3, np.random.default_rng(0))
    record = RecordIterations()
    again = build(**dict(SMALL, iterations=4, checkpoint_interval=2), custom_hooks=[record])
    again.work_dir = tmp_path
    _, scores = again.select(candidates, labeled, 3, np.random.default_rng(0))
    assert record.seen == []
    np.testing.assert_array_equal(scores, expected)


@pytest.mark.parametrize('kwargs, match', [
    (dict(latent_dim=0), r'latent_dim=0 must be an integer >= 1'),
    (dict(latent_dim=2.5), r'latent_dim=2.5 must be an integer'),
    (dict(image_size=48), r'image_size=48 must be a power of 2 >= 8'),
    (dict(image_size=4), r'image_size=4 must be a power of 2 >= 8'),
    (dict(epochs=0), r'epochs=0 must be a finite number > 0'),
    (dict(epochs=10, iterations=100), r'give epochs=10 or iterations=100, not both'),
    (dict(iterations=0), r'iterations=0 must be an integer >= 1'),
    (dict(batch_size=True), r'batch_size=True must be an integer >= 1'),
    (dict(beta=-1), r'beta=-1 must be a finite number >= 0'),
    (dict(adversarial_weight=float('nan')), r'adversarial_weight=nan must be a finite'),
    (dict(vae_lr=0), r'vae_lr=0 must be a finite number > 0'),
    (dict(discriminator_lr='1e-3'), r"discriminator_lr='1e-3' must be a finite number"),
    (dict(vae_steps=0), r'vae_steps=0 must be an integer >= 1'),
    (dict(discriminator_steps=-1), r'discriminator_steps=-1 must be an integer >= 1'),
    (dict(checkpoint_interval=0), r'checkpoint_interval=0 must be an integer >= 1'),
    (dict(custom_hooks=dict(type='EMAHook')), r'custom_hooks=.* must be a list'),
])
def test_bad_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


def test_images_of_another_size_or_missing_are_refused():
    strategy = build(**SMALL)
    candidates, labeled = dark_and_bright(0, size=8)
    with pytest.raises(ValueError, match=r'candidate images have shape \(24, 3, 8, 8\); '
                                         r'expected \(N >= 1, 3, 16, 16\)'):
        strategy.select(candidates, labeled, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"needs the labeled-set outputs \['images'\]"):
        strategy.select(dark_and_bright(0)[0], dict(num_samples=0), 3,
                        np.random.default_rng(0))


def test_batches_hold_both_sets_in_equal_parts_and_repeat_for_a_seed():
    is_labeled = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    sampler = BalancedBatchSampler(is_labeled, batch_size=4, chunks=2, seed=0)
    stream = iter(sampler)
    batches = [next(stream) for _ in range(6)]
    for batch in batches:
        chunks = [batch[:8], batch[8:]]
        for chunk in chunks:
            assert all(is_labeled[chunk[:4]]) and not any(is_labeled[chunk[4:]])
    # every labeled image appears once per pass through the labeled set
    labeled_draws = [i for b in batches for c in (b[:4], b[8:12]) for i in c]
    assert sorted(labeled_draws[:3]) == [0, 1, 2]
    again = iter(BalancedBatchSampler(is_labeled, batch_size=4, chunks=2, seed=0))
    assert [next(again) for _ in range(6)] == batches


# ------------------------------------------------------------------ real cycles
#: 8 labeled + 24 candidates, batches of 8 + 8: 20 epochs are 80 iterations.
CYCLE_VAAL = dict(type='VAALStrategy', image_size=32, latent_dim=16, channels=16,
                  discriminator_width=128, batch_size=8, epochs=20, checkpoint_interval=40,
                  log_interval=20)


def run_vaal_cycle(cfg, tmp_path):
    cfg.active_learning.strategy = dict(CYCLE_VAAL)
    c0, c1, picked = run_and_check_selection(cfg, tmp_path)
    assert c1['labeled'] == c0['labeled'] + picked and c0['num_candidates'] == 24
    with open(tmp_path / 'cycle_00' / 'al_scores.csv') as f:
        scores = {r['id']: float(r['score']) for r in csv.DictReader(f)}
    assert len(scores) == 24 and all(0 < s < 1 for s in scores.values())
    assert all(scores[p['id']] == p['score'] for p in c0['selected'])
    # top-K of 1 - D(mu): the picks are the highest scores
    assert min(p['score'] for p in c0['selected']) >= sorted(scores.values())[-8]
    strategy_dir = tmp_path / 'cycle_00' / 'strategy'
    assert (strategy_dir / 'iter_80.pth').exists()
    run = json.loads((strategy_dir / RUN_FILE).read_text())
    assert (run['num_labeled'], run['num_unlabeled'], run['iterations']) == (8, 24, 80)
    log = next(strategy_dir.glob('*/*.log')).read_text()
    seconds = float(re.search(r'VAAL: 80 iterations on 8 labeled and 24 unlabeled images '
                              r'in ([\d.]+) s', log).group(1))
    print(f'VAAL training: {seconds:.1f} s per cycle; scoring + training '
          f'{c0["timings"]["score_s"]:.1f} s')
    return c0, c1


@pytest.mark.slow
def test_vaal_runs_a_real_detection_cycle(tiny_cfg, tmp_path):
    cfg = one_epoch_two_cycles(copy.deepcopy(tiny_cfg))
    c0, c1 = run_vaal_cycle(cfg, tmp_path)
    assert 'pascal_voc/mAP' in c1['metrics'] and math.isfinite(c1['metrics']['pascal_voc/mAP'])


@pytest.mark.slow
def test_vaal_runs_a_real_pose_cycle(pose_cfg, tmp_path):
    cfg = one_epoch_two_cycles(copy.deepcopy(pose_cfg))
    c0, c1 = run_vaal_cycle(cfg, tmp_path)
    assert 'PCK' in c1['metrics']
