"""The loop's pieces without training: settings, state, pool, selection."""
import json
import os

import numpy as np
import pytest

from mmal.datasets import Pool, leaf_configs, subset_config
from mmal.loop import ActiveLearningSettings, ExperimentState
from mmal.loop.state import atomic_write_text, phase_done
from mmal.registry import STRATEGIES
from mmal.utils import ConfigError


def settings(**kw):
    base = dict(initial_size=10, budget_per_cycle=5, num_cycles=3)
    base.update(kw)
    return ActiveLearningSettings.from_config(base)


@pytest.mark.parametrize('kw,match', [
    (dict(initial_size=0), r'active_learning.initial_size=0'),
    (dict(candidate_pool='some'), r'candidate_pool=.some.'),
    (dict(model_init='warm'), r"model_init='warm'"),
    (dict(strategy='random'), r'active_learning.strategy'),
    (dict(budget=3), r'unknown keys \[.budget.\]'),
])
def test_bad_settings_name_the_key(kw, match):
    with pytest.raises(ConfigError, match=match):
        settings(**kw)


def test_missing_section_and_keys():
    with pytest.raises(ConfigError, match='no `active_learning`'):
        ActiveLearningSettings.from_config(None)
    with pytest.raises(ConfigError, match='missing'):
        ActiveLearningSettings.from_config(dict(initial_size=3))


def test_impossible_plans_are_refused_with_numbers():
    with pytest.raises(ConfigError, match=r'10\) \+ \(num_cycles - 1\) \(2\) x budget_per_cycle '
                                          r'\(5\) = 20 samples, but the pool has 19'):
        settings().check_plan(19)
    settings().check_plan(20)
    with pytest.raises(ConfigError, match=r'budget_per_cycle \(5\) > candidate_pool \(4\)'):
        settings(candidate_pool=4).check_plan(100)
    with pytest.raises(ConfigError, match='empty'):
        settings().check_plan(0)


def test_differences_name_each_key():
    a = settings()
    diffs = a.differences(dict(a.to_dict(), seed=3, num_cycles=9))
    assert len(diffs) == 2
    assert any('num_cycles: state has 9, config has 3' in d for d in diffs)
    assert any('seed: state has 3, config has 0' in d for d in diffs)


def test_state_round_trip_and_phases(tmp_path):
    state = ExperimentState.create(tmp_path, settings=settings().to_dict(),
                                   config_digests={'model': 'x'}, versions={},
                                   pool_ids=['a', 'b', 'c'])
    state.save()
    state.start_cycle(0, ['a'])
    state.mark(0, 'trained', checkpoint='ckpt.pth')
    loaded = ExperimentState.load(tmp_path)
    entry = loaded.cycle(0)
    assert entry['labeled'] == ['a'] and entry['checkpoint'] == 'ckpt.pth'
    assert phase_done(entry, 'trained') and not phase_done(entry, 'evaluated')
    assert loaded.cycle(1) is None
    with pytest.raises(RuntimeError):
        loaded.start_cycle(2, [])


def _three_cycles(tmp_path, third_labeled=None):
    state = ExperimentState.create(tmp_path, settings=settings().to_dict(), config_digests={},
                                   versions={}, pool_ids=list('abcdef'))
    state.start_cycle(0, ['a', 'b'])
    state.mark(0, 'selected', selected=[dict(id='c', score=1.0)])
    state.start_cycle(1, ['a', 'b', 'c'])
    state.mark(1, 'selected', selected=[dict(id='d', score=0.5)])
    state.start_cycle(2, third_labeled or ['a', 'b', 'c', 'd'])
    return state


def test_later_cycles_store_only_what_they_added_and_load_whole(tmp_path):
    state = _three_cycles(tmp_path)
    stored = json.loads(state.path.read_text())
    assert stored['format'] == 2 and stored['cycles'][0]['labeled'] == ['a', 'b']
    assert [c.get('labeled_added') for c in stored['cycles']] == [None, ['c'], ['d']]
    assert all('labeled' not in c for c in stored['cycles'][1:])
    assert list(stored['cycles'][1])[:4] == ['cycle', 'status', 'num_labeled', 'labeled_added']
    loaded = ExperimentState.load(tmp_path)
    assert loaded.data == state.data
    assert loaded.cycle(2)['labeled'] == ['a', 'b', 'c', 'd']
    loaded.save()  # loading and saving again changes nothing
    assert json.loads(state.path.read_text()) == stored


def test_a_labeled_set_that_does_not_extend_the_last_is_stored_whole(tmp_path):
    state = _three_cycles(tmp_path, third_labeled=['d', 'a', 'b', 'c'])
    stored = json.loads(state.path.read_text())['cycles'][2]
    assert stored['labeled'] == ['d', 'a', 'b', 'c'] and 'labeled_added' not in stored
    assert ExperimentState.load(tmp_path).cycle(2)['labeled'] == ['d', 'a', 'b', 'c']


def test_format_1_states_are_still_read(tmp_path):
    state = _three_cycles(tmp_path)
    old = dict(state.data, format=1)  # format 1 stored every cycle's whole list
    (tmp_path / 'al_state.json').write_text(json.dumps(old))
    loaded = ExperimentState.load(tmp_path)
    assert loaded.data == state.data and loaded.data['format'] == 2


def test_a_hand_edited_state_missing_the_first_labeled_set_is_refused(tmp_path):
    _three_cycles(tmp_path)
    stored = json.loads((tmp_path / 'al_state.json').read_text())
    del stored['cycles'][0]
    (tmp_path / 'al_state.json').write_text(json.dumps(stored))
    with pytest.raises(ConfigError, match='al_state.json: cycle 1 stores only.*al_state.prev'):
        ExperimentState.load(tmp_path)


def test_atomic_write_never_leaves_partial_files(tmp_path, monkeypatch):
    path = tmp_path / 'f.json'
    atomic_write_text(path, json.dumps({'v': 1}))

    def broken_replace(src, dst):
        raise OSError('disk gone')
    monkeypatch.setattr('os.replace', broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(path, json.dumps({'v': 2}))
    assert json.loads(path.read_text()) == {'v': 1}
    assert [p.name for p in tmp_path.iterdir()] == ['f.json']


def test_corrupt_state_is_explained(tmp_path):
    (tmp_path / 'al_state.json').write_text('{"format": 1, ')
    with pytest.raises(ValueError, match='not valid JSON'):
        ExperimentState.load(tmp_path)


def test_subset_config_sets_indices_per_leaf_under_wrappers():
    cfg = dict(type='RepeatDataset', times=3, dataset=dict(
        type='ConcatDataset', datasets=[dict(type='A', data_root='a'),
                                        dict(type='B', data_root='b')]))
    pool = Pool(ids=[f's{i}' for i in range(7)], leaf_sizes=[4, 3])
    sub = subset_config(cfg, pool, [6, 1, 4, 0])
    leaves = leaf_configs(sub)
    assert [leaf['indices'] for leaf in leaves] == [[0, 1], [0, 2]]
    assert sub['times'] == 3 and 'indices' not in leaf_configs(cfg)[0]


def test_selection_is_top_k_with_seeded_tie_breaks():
    from mmal.strategies import top_k
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.2])
    picks = top_k(scores, 3, np.random.default_rng(0))
    assert set(picks[:2]) == {1, 3} and picks[2] == 2
    again = top_k(scores, 3, np.random.default_rng(0))
    assert list(picks) == list(again)
    orders = {tuple(top_k(np.zeros(6), 6, np.random.default_rng(s))) for s in range(5)}
    assert len(orders) > 1  # ties are not broken by position
    with pytest.raises(FloatingPointError, match='LearningLossStrategy produced 1 non-finite'):
        STRATEGIES.build(dict(type='LearningLossStrategy')).select(
            dict(num_samples=2, pred_loss=np.array([1.0, np.nan])), {}, 1,
            np.random.default_rng(0))


def test_a_damaged_state_is_refused_naming_the_file_and_the_last_good_copy(tmp_path):
    from mmal.loop.state import PREVIOUS_STATE_FILE, ExperimentState
    from mmal.utils import ConfigError
    state = ExperimentState.create(tmp_path, settings=dict(seed=0), config_digests={},
                                   versions={}, pool_ids=['a', 'b'])
    state.save()
    state.start_cycle(0, ['a'])                      # a second write keeps the first
    previous = json.loads((tmp_path / PREVIOUS_STATE_FILE).read_text())
    assert previous['cycles'] == []
    text = (tmp_path / 'al_state.json').read_text()
    (tmp_path / 'al_state.json').write_text(text[:len(text) // 2])   # truncated by hand
    with pytest.raises(ConfigError, match=r'al_state.json is damaged.*cp .*al_state.prev.json'):
        ExperimentState.load(tmp_path)
    (tmp_path / PREVIOUS_STATE_FILE).unlink()
    with pytest.raises(ConfigError, match='move it away'):
        ExperimentState.load(tmp_path)


def test_an_unwritable_place_is_named_with_the_fix(tmp_path):
    blocker = tmp_path / 'not_a_dir'
    blocker.write_text('')                      # a file where a folder should be
    with pytest.raises(OSError, match=r'cannot write .*not_a_dir/al_state.json.*--resume'):
        atomic_write_text(blocker / 'al_state.json', '{}')
    from mmal.loop.resume import check_writable
    with pytest.raises(ConfigError, match=r'work dir .*not_a_dir/sub cannot be written'):
        check_writable(blocker / 'sub')


def test_a_failing_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / 'al_state.json'
    atomic_write_text(target, '{"old": 1}')

    def disk_full(fd):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(os, 'fsync', disk_full)
    with pytest.raises(OSError, match=r'cannot write .*No space left.*previous version'):
        atomic_write_text(target, '{"new": 1}')
    assert json.loads(target.read_text()) == {'old': 1}
    assert [p.name for p in tmp_path.iterdir()] == ['al_state.json']


@pytest.mark.parametrize('num_samples, sampler, dropped', [
    (21, None, True), (20, None, False), (22, None, False), (1, None, False),
    (17, dict(type='AspectRatioBatchSampler'), True), (16, dict(type='AspectRatioBatchSampler'),
                                                       False)])
def test_a_last_batch_of_one_sample_is_dropped_and_only_then(num_samples, sampler, dropped):
    from mmengine.config import Config

    from mmal.loop.runner import no_single_sample_batch
    cfg = Config(dict(train_dataloader=dict(batch_size=4)))
    if sampler:
        cfg.train_dataloader.batch_sampler = dict(sampler)
    assert no_single_sample_batch(cfg, num_samples) is dropped
    where = cfg.train_dataloader.get('batch_sampler') or cfg.train_dataloader
    assert where.get('drop_last', False) is dropped


@pytest.mark.parametrize('strategy, match', [
    (dict(type='BADGEStrategy'), r"strategy.type='BADGEStrategy' is not a strategy; "
                                 r"did you mean \['BadgeStrategy'\]\? known: \["),
    (dict(type='NoSuchThing'), r"strategy.type='NoSuchThing' is not a strategy; known: \["),
    (dict(type='EntropyStrategy', agregation='sum'),
     r"active_learning.strategy=.*unexpected keyword argument 'agregation'.*EntropyStrategy"),
])
def test_a_strategy_typo_is_a_config_error_naming_it(strategy, match):
    from mmal.strategies import build_strategy
    with pytest.raises(ConfigError, match=match):
        build_strategy(strategy, 'detection')
    assert type(build_strategy(dict(type='BadgeStrategy'), 'detection')).__name__ == \
        'BadgeStrategy'


def test_the_ranking_evaluation_scores_its_references_from_one_pass():
    from mmal.loop.ranking import RankingEvaluation
    from mmal.scoring import MAIN
    default = RankingEvaluation(50, settings().ranking_references, 'detection')
    assert list(default.references) == ['LearningLossStrategy', 'EntropyStrategy']
    outputs = default.passes()[MAIN].outputs
    assert outputs[:2] == ('target_loss', 'pred_loss') and len(set(outputs)) == len(outputs)
    named = RankingEvaluation(50, [dict(type='EntropyStrategy', name='entropy_sum',
                                        aggregation='sum')], 'detection')
    assert list(named.references) == ['entropy_sum']
    with pytest.raises(ConfigError, match='CoreSetStrategy needs more than one pass'):
        RankingEvaluation(50, [dict(type='CoreSetStrategy')], 'detection')
    with pytest.raises(ConfigError, match='ranking_references'):
        settings(ranking_references=['EntropyStrategy'])


def test_a_resumed_run_appends_to_its_log(tiny_cfg, tmp_path):
    """The log of the cycles trained before a kill (or of a finished run that al_compare
    reuses) stays: opening the experiment again appends to al_train.log."""
    from mmal.loop import ActiveLearningExperiment

    from .cycles import one_epoch_two_cycles
    earlier = '2026/01/01 00:00:00 - mmal - INFO - cycle 0: 100 labeled -> pascal_voc/mAP=0.1\n'
    (tmp_path / 'al_train.log').write_text(earlier)
    experiment = ActiveLearningExperiment(one_epoch_two_cycles(tiny_cfg), str(tmp_path),
                                          resume=True)
    experiment.logger.info('resumed')
    log = (tmp_path / 'al_train.log').read_text()
    assert log.startswith(earlier) and log.rstrip().endswith('resumed')
