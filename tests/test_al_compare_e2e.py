"""End to end: tools/al_compare.py on a tiny config, 2 strategies x 2 seeds."""
import csv
import json
import subprocess
import sys

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow

CONFIG = 'configs/active_learning/ll_ssd-tiny_synthetic-voc.py'


def tiny_options(voc_root):
    opts = []
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{name}.dataset.data_root={voc_root}/', f'{name}.num_workers=0',
                 f'{name}.persistent_workers=False']
    return opts + ['train_dataloader.batch_size=4', 'train_cfg.max_epochs=2',
                   'active_learning.initial_size=8', 'active_learning.budget_per_cycle=8',
                   'active_learning.num_cycles=2', 'active_learning.candidate_pool=24',
                   'active_learning.score_batch_size=8', 'active_learning.score_num_workers=0',
                   'active_learning.ranking_eval_size=12']


def compare(*args):
    return subprocess.run([sys.executable, 'tools/al_compare.py', *args], cwd=REPO,
                          capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope='module')
def finished(voc_root, tmp_path_factory):
    work = tmp_path_factory.mktemp('compare')
    args = [CONFIG, '--strategies', 'LearningLossStrategy', 'RandomStrategy', '--seeds', '0',
            '1', '--work-dir', str(work), '--cfg-options', *tiny_options(voc_root)]
    first = compare(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    return work, args, first


def test_every_run_is_an_experiment_and_cycle_0_is_trained_once_per_seed(finished):
    work, _, first = finished
    for seed in (0, 1):
        shared = work / '_shared' / f'seed{seed}'
        record = json.loads((shared / 'initial_cycle.json').read_text())
        assert record['checkpoint'].startswith(str(shared / 'cycle_00'))
        assert 'pascal_voc/mAP' in record['metrics']
        states = {name: json.loads((work / name / f'seed{seed}' / 'al_state.json').read_text())
                  for name in ('LearningLossStrategy', 'RandomStrategy')}
        for name, state in states.items():
            assert state['status'] == 'finished'
            c0 = state['cycles'][0]
            # cycle 0 referenced, not retrained or copied
            assert c0['checkpoint'] == record['checkpoint'] and c0['shared_from'] == str(shared)
            assert c0['metrics'] == record['metrics']
            assert not (work / name / f'seed{seed}' / 'cycle_00' / 'epoch_2.pth').exists()
            assert (work / name / f'seed{seed}' / 'cycle_01' / 'epoch_2.pth').exists()
        # the same initial set, different selections
        ll, rnd = states['LearningLossStrategy'], states['RandomStrategy']
        assert ll['cycles'][0]['labeled'] == rnd['cycles'][0]['labeled']
        assert ll['cycles'][0]['selected'] != rnd['cycles'][0]['selected']
    assert first.stdout.count('training the shared initial model') == 2   # once per seed
    logs = ''.join((work / n / f'seed{s}' / 'al_train.log').read_text()
                   for n in ('LearningLossStrategy', 'RandomStrategy') for s in (0, 1))
    assert logs.count('training the shared initial model') == 2      # once per seed


def test_ranking_accuracy_is_recorded_per_cycle(finished):
    work, _, _ = finished
    state = json.loads((work / 'LearningLossStrategy' / 'seed0' / 'al_state.json').read_text())
    rank = state['cycles'][0]['ranking_accuracy']
    assert rank['num_samples'] == 12
    assert set(rank) == {'num_samples', 'strategy', 'LearningLossStrategy', 'EntropyStrategy'}
    # LL's own selection score is the module's prediction: the same ranking
    assert rank['strategy'] == pytest.approx(rank['LearningLossStrategy'])
    assert all(0.0 <= v <= 1.0 for k, v in rank.items() if k != 'num_samples')
    with open(work / 'LearningLossStrategy' / 'seed0' / 'al_metrics.csv') as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]['ranking_accuracy/strategy']) == pytest.approx(rank['strategy'])
    assert rows[0]['train_s'] and rows[0]['eval_s'] and rows[0]['score_s']


def test_comparison_outputs_and_printed_table(finished):
    work, _, first = finished
    for name in ('compare.csv', 'compare.json', 'compare.md', 'compare.png'):
        assert (work / name).stat().st_size > 0
    result = json.loads((work / 'compare.json').read_text())
    assert result['baseline'] == 'RandomStrategy' and result['metric'] == 'pascal_voc/mAP'
    ll = result['strategies']['LearningLossStrategy']
    assert [p['n'] for p in ll['curve']] == [2, 2]
    assert [p['num_labeled'] for p in ll['curve']] == [8, 16]
    assert len(ll['vs_baseline']['final']['per_seed']) == 2
    assert '| LearningLossStrategy | 2 |' in first.stdout


def test_finished_runs_are_reused_not_recomputed_and_plot_only_rerenders(finished):
    work, args, _ = finished
    checkpoints = sorted(work.glob('**/*.pth'))
    before = {p: p.stat().st_mtime_ns for p in checkpoints}
    again = compare(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count(': reused') == 4 and ': ran' not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in sorted(work.glob('**/*.pth'))} == before
    (work / 'compare.png').unlink()
    replot = compare('--plot-only', '--work-dir', str(work))
    assert replot.returncode == 0 and (work / 'compare.png').exists()


def test_runs_from_another_folder_merge_and_double_counting_is_refused(finished, tmp_path):
    work, _, _ = finished
    other = tmp_path / 'other'
    (other / 'EntropyStrategy').mkdir(parents=True)
    import shutil
    shutil.copytree(work / 'RandomStrategy' / 'seed0', other / 'EntropyStrategy' / 'seed0')
    merged = compare('--plot-only', '--work-dir', str(work), '--merge', str(other))
    assert merged.returncode == 0, merged.stderr
    assert '| EntropyStrategy | 1 |' in merged.stdout
    twice = compare('--plot-only', '--work-dir', str(work), '--merge', str(work))
    assert twice.returncode != 0 and 'merge each run once' in twice.stderr
