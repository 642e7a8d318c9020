"""Drop-in use: our configs through mmdet's own tools/train.py, other
single-stage detectors through tools/al_train.py, and distributed runs."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow


def _data_options(voc_root: Path) -> list[str]:
    opts = []
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{name}.dataset.data_root={voc_root}/', f'{name}.num_workers=0',
                 f'{name}.persistent_workers=False', f'{name}.batch_size=4']
    return opts


def _run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_mmdet_train_py_accepts_our_config(voc_root, tmp_path):
    """One cycle is an ordinary mmdet training run: custom_imports is all it takes."""
    import mmdet
    train_py = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'train.py'
    result = _run([sys.executable, str(train_py),
                   str(REPO / 'configs/learning_loss/ssd-tiny_ll_synthetic-voc.py'),
                   '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                   'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                   *_data_options(voc_root)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = '\n'.join(p.read_text() for p in (tmp_path / 'wd').glob('*/*.log'))
    assert 'loss_rank' in logs and 'rank_acc' in logs and 'pascal_voc/mAP' in logs
    assert (tmp_path / 'wd' / 'epoch_1.pth').exists()


def test_al_train_runs_a_retinanet_config(voc_root, tmp_path):
    """Any single-stage detector: RetinaNet goes through the generic per-image path."""
    result = _run([sys.executable, str(REPO / 'tools/al_train.py'),
                   str(REPO / 'tests/data/retinanet-tiny_ll_synthetic-voc.py'),
                   '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                   *_data_options(voc_root)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((tmp_path / 'wd' / 'al_state.json').read_text())
    assert state['status'] == 'finished'
    assert [c['num_labeled'] for c in state['cycles']] == [8, 16]
    assert 'pascal_voc/mAP' in state['cycles'][1]['metrics']


@pytest.mark.skipif(shutil.which('torchrun') is None and not Path(
    sys.executable).with_name('torchrun').exists(), reason='torchrun not installed')
def test_distributed_cpu_run_matches_the_plan(voc_root, tmp_path):
    """--launcher pytorch with 2 CPU processes (gloo): one experiment, one state."""
    torchrun = str(Path(sys.executable).with_name('torchrun'))
    result = _run([torchrun, '--nproc_per_node', '2', '--master_port', '29611',
                   str(REPO / 'tools/al_train.py'),
                   str(REPO / 'configs/active_learning/ll_ssd-tiny_synthetic-voc.py'),
                   '--launcher', 'pytorch', '--work-dir', str(tmp_path / 'wd'),
                   '--cfg-options', 'active_learning.initial_size=8',
                   'active_learning.budget_per_cycle=8', 'active_learning.num_cycles=2',
                   'active_learning.candidate_pool=20', 'active_learning.score_num_workers=0',
                   'train_cfg.max_epochs=1', *_data_options(voc_root)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((tmp_path / 'wd' / 'al_state.json').read_text())
    c0 = state['cycles'][0]
    assert state['status'] == 'finished' and c0['num_candidates'] == 20
    # both ranks agreed on one selection of distinct, unlabeled samples
    ids = [p['id'] for p in c0['selected']]
    assert len(ids) == len(set(ids)) == 8 and not set(ids) & set(c0['labeled'])
    scores = (tmp_path / 'wd' / 'cycle_00' / 'al_scores.csv').read_text().splitlines()
    assert len(scores) == 1 + 20  # every candidate scored once across the 2 ranks


def test_distributed_comparison_through_the_launch_script(voc_root, tmp_path):
    """tools/dist_al_train.sh with AL_TOOL=al_compare: 2 CPU ranks share one cycle 0."""
    env_path = f'{Path(sys.executable).parent}{os.pathsep}{os.environ.get("PATH", "")}'
    work = tmp_path / 'cmp'
    result = subprocess.run(
        ['bash', str(REPO / 'tools/dist_al_train.sh'),
         str(REPO / 'configs/active_learning/ll_ssd-tiny_synthetic-voc.py'), '2',
         '--strategies', 'LearningLossStrategy', 'RandomStrategy', '--seeds', '0',
         '--work-dir', str(work),
         '--cfg-options', 'active_learning.initial_size=8', 'active_learning.budget_per_cycle=8',
         'active_learning.num_cycles=2', 'active_learning.candidate_pool=20',
         'active_learning.score_num_workers=0', 'active_learning.ranking_eval_size=10',
         'train_cfg.max_epochs=1', *_data_options(voc_root)],
        cwd=tmp_path, capture_output=True, text=True, timeout=1500,
        env=dict(os.environ, OMP_NUM_THREADS='1', PORT='29613', PATH=env_path,
                 AL_TOOL=str(REPO / 'tools/al_compare.py')))
    assert result.returncode == 0, result.stderr[-4000:]
    record = json.loads((work / '_shared' / 'seed0' / 'initial_cycle.json').read_text())
    for name in ('LearningLossStrategy', 'RandomStrategy'):
        state = json.loads((work / name / 'seed0' / 'al_state.json').read_text())
        assert state['status'] == 'finished'
        assert state['cycles'][0]['checkpoint'] == record['checkpoint']
        assert state['cycles'][0]['ranking_accuracy']['num_samples'] == 10
    assert (work / 'compare.md').exists()
    # one report, written by rank 0 alone
    assert result.stdout.count('| LearningLossStrategy | 1 |') == 1
