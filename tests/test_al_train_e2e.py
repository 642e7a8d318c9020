"""End to end: tools/al_train.py on tiny generated data."""
import copy
import csv
import json
import subprocess
import sys

import pytest
from mmengine.config import Config

from mmal.loop import ActiveLearningExperiment
from mmal.loop.state import ExperimentState

from .conftest import REPO, voc_config

pytestmark = pytest.mark.slow


def _exp_cfg(voc_root):
    cfg = voc_config('configs/learning_loss/ssd-tiny_ll_synthetic-voc.py', voc_root)
    cfg.train_dataloader.batch_size = 4
    cfg.train_cfg.max_epochs = 2
    cfg.train_cfg.val_interval = 100
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.custom_hooks = [dict(type='LossPredictionStopGradientHook', stop_fraction=0.5)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, max_keep_ckpts=3)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.active_learning = dict(initial_size=8, budget_per_cycle=8, num_cycles=2,
                               candidate_pool=24, strategy=dict(type='LearningLossStrategy'),
                               score_batch_size=8, score_num_workers=0, seed=0)
    return cfg


@pytest.fixture
def exp_cfg(voc_root):
    return _exp_cfg(voc_root)


@pytest.fixture(scope='module')
def uninterrupted(voc_root, tmp_path_factory):
    """One uninterrupted run of ``exp_cfg``: its folder and final state, read by
    the tests of its outputs and of resuming (each would otherwise rerun it)."""
    work_dir = tmp_path_factory.mktemp('uninterrupted')
    return work_dir, run(_exp_cfg(voc_root), work_dir)


def run(cfg, work_dir, resume=False):
    return ActiveLearningExperiment(copy.deepcopy(cfg), str(work_dir), resume=resume).run()


def essence(state_data):
    """What must not depend on interruptions: who was labeled, picked, and scored how."""
    return [dict(cycle=c['cycle'], labeled=c['labeled'], selected=c['selected'],
                 metrics=c['metrics'], status=c['status']) for c in state_data['cycles']]


def test_two_cycle_run_writes_every_output(uninterrupted):
    tmp_path, state = uninterrupted
    data = json.loads((tmp_path / 'al_state.json').read_text())
    assert data['status'] == 'finished'
    assert {'settings', 'seed', 'config_digests', 'versions', 'pool', 'cycles'} <= set(data)
    assert data['versions']['mmdet'] == '3.3.0'
    c0, c1 = data['cycles']
    assert c0['num_labeled'] == 8 and c1['num_labeled'] == 16
    assert all(i.startswith('VOC2007/JPEGImages/') for i in c0['labeled'])
    assert len(c0['selected']) == 8 and c0['num_candidates'] == 24
    assert {'id', 'score'} == set(c0['selected'][0])
    scores = [p['score'] for p in c0['selected']]
    assert scores == sorted(scores, reverse=True)
    # labeled and unlabeled never overlap; the new labeled set is old + selected
    assert not set(c0['labeled']) & {p['id'] for p in c0['selected']}
    # on disk a later cycle stores what it added; loading gives the whole set
    assert 'labeled' not in c1 and c1['labeled_added'] == [p['id'] for p in c0['selected']]
    assert state.cycle(1)['labeled'] == c0['labeled'] + c1['labeled_added']
    assert ExperimentState.load(tmp_path).data == state.data
    assert c1['selected'] == [] and c1['status'] == 'evaluated'
    for c in (c0, c1):
        assert 0.0 <= c['metrics']['pascal_voc/mAP'] <= 1.0  # VOCMetric ran on our SSD
        assert {'train_s', 'eval_s'} <= set(c['timings'])
    with open(tmp_path / 'al_metrics.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['num_labeled'] for r in rows] == ['8', '16']
    assert rows[0]['strategy'] == 'LearningLossStrategy' and 'pascal_voc/mAP' in rows[0]
    assert (tmp_path / 'al_curve.png').stat().st_size > 1000
    assert (tmp_path / 'cycle_00' / 'al_scores.csv').exists()
    assert any((tmp_path / 'cycle_01').glob('*/vis_data')) or any(
        (tmp_path / 'cycle_01').glob('*/*.log'))
    assert state.data['cycles'][1]['checkpoint'].endswith('.pth')


class SimulatedKillError(Exception):
    pass


@pytest.mark.parametrize('stop_at', [(0, 'trained'), (0, 'evaluated'), (0, 'selected'),
                                     (1, 'trained')])
def test_resume_after_each_step_gives_the_same_state(exp_cfg, uninterrupted, tmp_path,
                                                     monkeypatch, stop_at):
    reference = uninterrupted[1].data
    original = ExperimentState.mark

    def mark_then_die(self, index, phase, **fields):
        original(self, index, phase, **fields)
        if (index, phase) == stop_at:
            raise SimulatedKillError

    monkeypatch.setattr(ExperimentState, 'mark', mark_then_die)
    with pytest.raises(SimulatedKillError):
        run(exp_cfg, tmp_path / 'cut')
    monkeypatch.setattr(ExperimentState, 'mark', original)
    calls = []
    monkeypatch.setattr(ActiveLearningExperiment, '_train',
                        lambda self, c, e, f=ActiveLearningExperiment._train:
                        (calls.append(c), f(self, c, e))[1])
    resumed = run(exp_cfg, tmp_path / 'cut', resume=True).data
    assert essence(resumed) == essence(reference)
    # finished training is never redone
    assert calls == ([1] if stop_at[0] == 0 else [])


def test_killed_mid_training_resumes_from_its_checkpoint(exp_cfg, tmp_path):
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    marker = tmp_path / 'killed_once'

    @HOOKS.register_module(force=True)
    class DieOnceInSecondEpoch(Hook):
        """Dies after epoch 1's checkpoint exists and before epoch 2's is written."""

        def after_train_epoch(self, runner):
            if runner.epoch == 1 and not marker.exists():
                marker.touch()
                raise SimulatedKillError

    # Real, persistent data workers as the shipped configs have them: their
    # augmentation streams are what a resume must reproduce.
    cfg = copy.deepcopy(exp_cfg)
    cfg.train_dataloader.num_workers = 2
    cfg.train_dataloader.persistent_workers = True
    uninterrupted = run(cfg, tmp_path / 'whole').data
    cfg.custom_hooks = cfg.custom_hooks + [dict(type='DieOnceInSecondEpoch')]
    with pytest.raises(SimulatedKillError):
        run(cfg, tmp_path / 'wd')
    cycle_dir = tmp_path / 'wd' / 'cycle_00'
    assert (cycle_dir / 'epoch_1.pth').exists() and not (cycle_dir / 'epoch_2.pth').exists()
    assert ExperimentState.load(tmp_path / 'wd').cycle(0)['status'] == 'started'
    state = run(cfg, tmp_path / 'wd', resume=True).data
    assert state['status'] == 'finished'
    assert (cycle_dir / 'epoch_2.pth').exists()
    logs = '\n'.join(p.read_text() for p in cycle_dir.glob('*/*.log'))
    assert 'resumed epoch: 1' in logs.lower()
    # Augmentations are a function of (seed, epoch, worker) (EpochSeedHook):
    # the resumed training repeats the uninterrupted one, and so does
    # everything after it.
    assert essence(state) == essence(uninterrupted)


def test_resume_with_other_settings_is_refused(exp_cfg, tmp_path):
    cfg = copy.deepcopy(exp_cfg)
    cfg.active_learning.num_cycles = 1
    run(cfg, tmp_path)
    changed = copy.deepcopy(cfg)
    changed.active_learning.seed = 5
    changed.active_learning.budget_per_cycle = 4
    changed.train_cfg.max_epochs = 3
    from mmal.utils import ConfigError
    with pytest.raises(ConfigError) as err:
        run(changed, tmp_path, resume=True)
    msg = str(err.value)
    assert 'active_learning.seed: state has 0, config has 5' in msg
    assert 'active_learning.budget_per_cycle: state has 8, config has 4' in msg
    assert 'config key `train_cfg` changed' in msg
    with pytest.raises(ConfigError, match='pass --resume'):
        run(cfg, tmp_path)


def test_random_and_learning_loss_pick_different_subsets_of_the_pool(exp_cfg, tmp_path):
    cfg = copy.deepcopy(exp_cfg)
    cfg.active_learning.num_cycles = 2
    ll = run(cfg, tmp_path / 'll').data['cycles'][0]
    cfg.active_learning.strategy = dict(type='RandomStrategy')
    rnd = run(cfg, tmp_path / 'rnd').data['cycles'][0]
    assert ll['labeled'] == rnd['labeled']  # same seeded initial set
    ll_ids = {p['id'] for p in ll['selected']}
    rnd_ids = {p['id'] for p in rnd['selected']}
    assert ll_ids != rnd_ids
    for ids in (ll_ids, rnd_ids):
        assert not ids & set(ll['labeled'])
        pool = json.loads((tmp_path / 'll' / 'al_state.json').read_text())['pool']
        assert len(ids) == 8 and pool['size'] == 48


def _al_train(*args, cwd=REPO):
    return subprocess.run([sys.executable, 'tools/al_train.py', *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize('options,match', [
    (['active_learning.num_cycles=20'], 'impossible plan.*the pool has 48'),
    (['active_learning.candidate_pool=4'], r'budget_per_cycle \(8\) > candidate_pool \(4\)'),
    (['train_dataloader.dataset.data_root=/nonexistent/'],
     r"train_dataloader.dataset.data_root='/nonexistent/' does not exist"),
    (['train_dataloader.dataset.ann_file=VOC2007/ImageSets/Main/none.txt'],
     r"ann_file='VOC2007/ImageSets/Main/none.txt' not found"),
])
def test_refused_inputs_exit_non_zero_with_the_message(exp_cfg, tmp_path, options, match):
    import re
    cfg_file = tmp_path / 'exp.py'
    exp_cfg.dump(str(cfg_file))
    result = _al_train(str(cfg_file), '--work-dir', str(tmp_path / 'wd'),
                       '--cfg-options', *options)
    assert result.returncode == 2, result.stderr[-2000:]
    assert re.search(match, result.stderr), result.stderr[-2000:]
    assert not (tmp_path / 'wd' / 'cycle_00').exists()


def test_empty_pool_is_refused(exp_cfg, tmp_path, voc_root):
    empty = tmp_path / 'empty.txt'
    empty.write_text('')
    cfg_file = tmp_path / 'exp.py'
    exp_cfg.dump(str(cfg_file))
    result = _al_train(str(cfg_file), '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                       f'train_dataloader.dataset.ann_file={empty}')
    assert result.returncode == 2 and 'empty' in result.stderr, result.stderr[-2000:]


def test_config_loads_and_flags_parse(exp_cfg, tmp_path):
    """The CLI runs a real one-cycle experiment with --cfg-options and --work-dir."""
    cfg_file = tmp_path / 'exp.py'
    exp_cfg.dump(str(cfg_file))
    result = _al_train(str(cfg_file), '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                       'active_learning.num_cycles=1', 'train_cfg.max_epochs=1')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'pascal_voc/mAP' in (tmp_path / 'wd' / 'al_metrics.csv').read_text()
    assert Config.fromfile(str(tmp_path / 'wd' / 'cycle_00' / next(
        p.name for p in (tmp_path / 'wd' / 'cycle_00').glob('*.py')))).train_cfg.max_epochs == 1
