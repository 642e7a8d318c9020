"""active_learning.initial_strategy: the initial set chosen by a strategy before cycle 0."""
import copy
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from mmengine.config import Config

from mmal.compare.runs import SHARED_DIR, shared_initial_dir
from mmal.loop import ActiveLearningExperiment, ActiveLearningSettings, ExperimentState
from mmal.loop.shared_initial import SharedInitialCycle, shared_initial_set
from mmal.registry import STRATEGIES
from mmal.utils import ConfigError

from .conftest import REPO
from .cycles import one_epoch_two_cycles

TYPICLUST = dict(type='TypiClustStrategy')


def settings(**kw):
    return ActiveLearningSettings.from_config(
        dict(initial_size=10, budget_per_cycle=5, num_cycles=3, **kw))


def build(type_, task='detection', **kw):
    return STRATEGIES.build(dict(type=type_, **kw), default_args=dict(task=task))


# ------------------------------------------------------------------ settings
def test_random_is_the_default_and_old_records_resume_unchanged():
    s = settings()
    assert s.initial_strategy == 'random'
    old = {k: v for k, v in s.to_dict().items() if k != 'initial_strategy'}
    assert s.differences(old) == []
    assert settings(initial_strategy=TYPICLUST).differences(old) == [
        "active_learning.initial_strategy: state has 'random', config has "
        "{'type': 'TypiClustStrategy'}"]


@pytest.mark.parametrize('kw,match', [
    (dict(initial_strategy='typiclust'),
     r"initial_strategy='typiclust' must be 'random' or a strategy config"),
    (dict(initial_strategy=dict(k_neighbors=3)), r'initial_strategy=.*must be'),
    (dict(initial_strategy=TYPICLUST, oracle='human', initial_size=None),
     r"initial_strategy=.*with oracle='human'.*Remove it"),
])
def test_bad_initial_strategies_name_the_key_and_the_fix(kw, match):
    with pytest.raises(ConfigError, match=match):
        ActiveLearningSettings.from_config(
            {**dict(initial_size=10, budget_per_cycle=5, num_cycles=3), **kw})


def test_an_initial_set_larger_than_the_candidates_is_refused():
    with pytest.raises(ConfigError, match=r'initial_size \(10\) > candidate_pool \(8\)'):
        settings(initial_strategy=TYPICLUST, candidate_pool=8).check_plan(100)
    settings(candidate_pool=8).check_plan(100)  # a random draw takes from the whole pool


# ------------------------------------------------------- which strategies may
@pytest.mark.parametrize('type_,kw,match', [
    ('LearningLossStrategy', {}, 'loss-prediction module'),
    ('LearningLossDiversityStrategy', {}, 'loss-prediction module'),
    ('OracleLossStrategy', dict(diagnostic=True), "candidates' labels"),
    ('QueryByCommitteeStrategy', dict(committee='snapshots', members=2), 'checkpoints'),
    ('VAALStrategy', {}, 'nothing is labeled'),
])
def test_strategies_that_need_training_or_labels_cannot_choose_it(type_, kw, match):
    assert re.search(match, build(type_, **kw).initial_set_refusal())


@pytest.mark.parametrize('type_', ['TypiClustStrategy', 'ProbCoverStrategy', 'CoreSetStrategy',
                                   'RandomStrategy', 'EntropyStrategy', 'BadgeStrategy'])
def test_strategies_reading_the_model_as_built_can(type_):
    assert build(type_).initial_set_refusal() is None


def test_core_set_chooses_with_nothing_labeled():
    features = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0], [0.0, 9.0]])
    picks, scores = build('CoreSetStrategy').select(
        dict(num_samples=5, features=features), dict(num_samples=0), 3,
        np.random.default_rng(0))
    assert sorted(p // 2 if p < 4 else 2 for p in picks) == [0, 1, 2]  # one per group
    assert all(scores[picks] == 0) and scores.max() == pytest.approx(0.1)


def test_an_experiment_refuses_an_initial_strategy_before_any_work(tiny_cfg, tmp_path):
    cfg = one_epoch_two_cycles(copy.deepcopy(tiny_cfg))
    cfg.active_learning['initial_strategy'] = dict(type='LearningLossStrategy')
    with pytest.raises(ConfigError, match=r"initial_strategy=\{'type': 'LearningLossStrategy'\} "
                                          r'cannot choose the initial set: .*untrained'):
        ActiveLearningExperiment(cfg, str(tmp_path / 'wd'))
    assert not (tmp_path / 'wd').exists()
    cfg.active_learning['initial_strategy'] = dict(type='TypiClustStrategy', k_neighbours=3)
    with pytest.raises(ConfigError, match=r'active_learning.initial_strategy=.*k_neighbours'):
        ActiveLearningExperiment(cfg, str(tmp_path / 'wd'))
    cfg.active_learning['initial_strategy'] = dict(type='TypiClust')
    with pytest.raises(ConfigError, match=r"initial_strategy.type='TypiClust' is not a "
                                          r"strategy; did you mean \['TypiClustStrategy'\]"):
        ActiveLearningExperiment(cfg, str(tmp_path / 'wd'))


# --------------------------------------------------------- the shared cycle 0
def test_runs_share_cycle_0_only_with_the_same_initial_strategy(tmp_path):
    cfg = Config(dict(active_learning=dict(initial_size=4)))
    assert shared_initial_dir(tmp_path, cfg, 3) == tmp_path / SHARED_DIR / 'seed3'
    cfg.active_learning['initial_strategy'] = TYPICLUST
    typiclust = shared_initial_dir(tmp_path, cfg, 3)
    cfg.active_learning['initial_strategy'] = dict(type='ProbCoverStrategy')
    prob_cover = shared_initial_dir(tmp_path, cfg, 3)
    assert typiclust.name == prob_cover.name == 'seed3'
    assert len({typiclust.parent, prob_cover.parent, tmp_path / SHARED_DIR}) == 3
    # and the record's key says which, so a folder mixed up by hand is refused
    keys = [SharedInitialCycle.of_experiment(tmp_path, Config(dict(model=dict(a=1))), 0, ['x'],
                                             initial).key
            for initial in ('random', TYPICLUST)]
    assert 'initial_strategy' not in keys[0] and keys[1]['initial_strategy'] == TYPICLUST
    shared = SharedInitialCycle(tmp_path, keys[0])
    with shared.locked():
        shared.write(checkpoint='x.pth')
    with pytest.raises(ConfigError, match=r"differs in \['initial_strategy'\]"):
        SharedInitialCycle(tmp_path, keys[1]).read()


def test_the_initial_set_is_chosen_once_per_shared_folder(tmp_path):
    cfg = Config(dict(model=dict(a=1)))
    chosen = []

    def choose():
        chosen.append(1)
        return ['b', 'a'], dict(strategy=TYPICLUST, num_candidates=2)
    logs = []
    first = shared_initial_set(tmp_path, cfg, 0, TYPICLUST, choose, logs.append)
    second = shared_initial_set(tmp_path, cfg, 0, TYPICLUST, choose, logs.append)
    assert first == second and first[0] == ['b', 'a'] and len(chosen) == 1
    assert first[1]['shared_from'] == str(tmp_path) and 'chosen before' in logs[0]
    with pytest.raises(ConfigError, match=r"another experiment \(differs in \['seed'\]\)"):
        shared_initial_set(tmp_path, cfg, 1, TYPICLUST, choose, logs.append)


# ----------------------------------------------------------- a real experiment
def initial_features(cfg, work_dir, seed):
    """The pool's features on the model as built, scored outside the experiment."""
    from mmal.datasets import build_pool
    from mmal.loop.runner import CycleRunner, phase_config
    from mmal.scoring import MAIN, ScorePass, Scorer, ScoringSettings
    pool = build_pool(cfg.train_dataloader.dataset)

    def make_runner(phase, loader, test_cfg):
        runner = CycleRunner.from_cfg(phase_config(cfg, phase, work_dir, test=(loader, test_cfg),
                                                   seed=seed, name='features_as_built'))
        runner.init_weights()
        return runner
    scorer = Scorer(cfg, pool, ScoringSettings.from_config(cfg), make_runner, work_dir)
    return pool, scorer.score(list(range(len(pool))), {MAIN: ScorePass(('features',))})


@pytest.mark.slow
def test_al_train_chooses_the_initial_set_by_typiclust_and_resume_keeps_it(
        tiny_cfg, tmp_path, monkeypatch):
    cfg = one_epoch_two_cycles(copy.deepcopy(tiny_cfg))
    cfg.active_learning.update(candidate_pool='all', ranking_eval_size=0,
                               strategy=dict(type='RandomStrategy'),
                               initial_strategy=TYPICLUST)
    cfg_file = tmp_path / 'exp.py'
    cfg.dump(str(cfg_file))
    work = tmp_path / 'wd'

    def al_train(*args):
        result = subprocess.run([sys.executable, 'tools/al_train.py', str(cfg_file),
                                 '--work-dir', str(work), *args], cwd=REPO,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout + result.stderr

    # killed once cycle 0 has trained, in process, then resumed through the CLI
    original = ExperimentState.mark

    def mark_then_die(self, index, phase, **fields):
        original(self, index, phase, **fields)
        if (index, phase) == (0, 'trained'):
            raise KeyboardInterrupt
    monkeypatch.setattr(ExperimentState, 'mark', mark_then_die)
    with pytest.raises(KeyboardInterrupt):
        ActiveLearningExperiment(Config.fromfile(str(cfg_file)), str(work)).run()
    monkeypatch.setattr(ExperimentState, 'mark', original)
    first = json.loads((work / 'al_state.json').read_text())['cycles'][0]['labeled']
    scores = work / 'initial' / 'al_scores.csv'
    assert 'initial set: scoring 48 samples with TypiClustStrategy' in (
        work / 'al_train.log').read_text()
    written = scores.stat().st_mtime_ns
    resumed = al_train('--resume')

    data = ExperimentState.load(work).data
    c0, c1 = data['cycles']
    assert data['status'] == 'finished' and data['settings']['initial_strategy'] == TYPICLUST
    assert c0['labeled'] == first and len(first) == 8  # resume did not choose again
    assert c0['initial']['strategy'] == TYPICLUST and c0['initial']['num_candidates'] == 48
    assert 'initial set: scoring' not in resumed and scores.stat().st_mtime_ns == written
    assert c1['labeled'][:8] == first

    # the set is TypiClust's on the features of the model as built ...
    pool, outputs = initial_features(Config.fromfile(str(cfg_file)), tmp_path / 'score', 0)
    rng = np.random.default_rng([0, 0, 3])
    candidates = np.sort(rng.choice(np.arange(48), size=48, replace=False))
    picks, _ = build('TypiClustStrategy').select(outputs, dict(num_samples=0), 8, rng)
    assert sorted(first) == sorted(pool.ids[candidates[p]] for p in picks)
    # ... and not the seeded random draw
    random_draw = np.random.default_rng([0, 0]).choice(48, size=8, replace=False)
    assert set(first) != {pool.ids[p] for p in random_draw}


def test_the_model_as_built_has_the_pretrained_backbone(tmp_path):
    """A scoring Runner with no checkpoint scores the layers' defaults unless its weights are
    initialised as training starts them: for configs/real/ the ImageNet backbone."""
    import torch

    from mmal.loop.runner import CycleRunner, phase_config
    from mmal.models.backbones import convert_lukemelas_state_dict, pretrained_checkpoint_path
    cfg = Config.fromfile(str(REPO / 'configs/real/retinanet-lite0_ll_neu-det.py'))
    runner = CycleRunner.from_cfg(phase_config(cfg, 'score', tmp_path, seed=0, name='built'))
    backbone = runner.model.task_model.backbone.state_dict()
    pretrained = convert_lukemelas_state_dict(torch.load(
        pretrained_checkpoint_path('lite0'), map_location='cpu', weights_only=True))
    key = next(k for k in backbone if k.endswith('.weight') and k in pretrained)
    assert not torch.equal(backbone[key], pretrained[key])
    runner.init_weights()
    backbone = runner.model.task_model.backbone.state_dict()
    assert all(torch.equal(v, pretrained[k]) for k, v in backbone.items() if k in pretrained)


@pytest.mark.slow
def test_a_comparison_chooses_the_initial_set_once_per_seed(tiny_cfg, tmp_path):
    from mmal.compare.runs import RunSpec, run_one
    cfg = one_epoch_two_cycles(copy.deepcopy(tiny_cfg))
    cfg.active_learning.update(num_cycles=1, ranking_eval_size=0, initial_strategy=TYPICLUST)
    states = []
    for name in ('RandomStrategy', 'EntropyStrategy'):
        spec = RunSpec(name, dict(type=name), 0)
        assert run_one(cfg, spec, tmp_path) == 'ran'
        states.append(ExperimentState.load(spec.work_dir(tmp_path)).data['cycles'][0])
    shared = shared_initial_dir(tmp_path, cfg, 0)
    assert shared.parent.name.startswith('initial_TypiClustStrategy_')
    record = json.loads((shared / 'initial_set.json').read_text())
    assert states[0]['labeled'] == states[1]['labeled'] == record['ids']
    assert states[1]['initial']['shared_from'] == str(shared)
    assert states[0]['checkpoint'] == states[1]['checkpoint']  # one cycle 0, trained once
    assert not (tmp_path / 'EntropyStrategy' / 'seed0' / 'initial').exists()
    assert not (tmp_path / SHARED_DIR / 'seed0').exists()


@pytest.mark.slow
def test_two_processes_choose_the_initial_set_one_process_does(voc_root, tmp_path):
    """Every rank scores its shard; the choice is made on the gathered features."""
    from .test_distributed import CONFIG, TORCHRUN, _options, _run
    if not TORCHRUN.exists():
        pytest.skip('torchrun not installed')
    config = tmp_path / 'typiclust.py'
    config.write_text(f"_base_ = '{CONFIG}'\nactive_learning = dict(num_cycles=1, "
                      "ranking_eval_size=0, initial_strategy=dict(type='TypiClustStrategy'))\n")
    options = [o for o in _options(voc_root) if not o.startswith('active_learning.num_cycles')]
    chosen = []
    for nproc, port in ((1, 0), (2, 29631)):
        work = tmp_path / f'wd{nproc}'
        result = _run([str(REPO / 'tools/al_train.py'), str(config), '--work-dir', str(work),
                       '--cfg-options', *options], tmp_path, nproc=nproc, port=port,
                      timeout=900)
        assert result.returncode == 0, result.stderr[-4000:]
        c0 = ExperimentState.load(work).data['cycles'][0]
        assert c0['initial']['num_candidates'] == 21 and len(c0['labeled']) == 8
        chosen.append(c0['labeled'])
    assert chosen[0] == chosen[1]
