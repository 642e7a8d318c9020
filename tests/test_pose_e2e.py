"""End to end for pose: the small config learns to rank losses; al_train runs
a pose experiment; mmpose's own tools/train.py takes our config."""
import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from scipy.stats import spearmanr

from mmal.datasets import MPIISceneConfig, generate_mpii_dataset

from .conftest import POSE_TINY_CONFIG, REPO, mpii_root_options, use_mpii_root

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_predicted_losses_rank_like_true_losses_on_held_out_persons(tmp_path):
    """Train the small config briefly (seeded), then compare the module's
    predictions with the true per-person losses of unseen validation persons."""
    from mmengine.runner import Runner
    from mmpose.registry import DATASETS
    root = generate_mpii_dataset(tmp_path / 'mpii', MPIISceneConfig(
        num_train=320, num_val=100, seed=7))
    cfg = use_mpii_root(Config.fromfile(str(REPO / POSE_TINY_CONFIG)), root)
    epochs = 8
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = epochs + 1  # no validation pass
    cfg.param_scheduler[1].end = epochs
    cfg.custom_hooks = [dict(type='LossPredictionStopGradientHook', stop_epoch=5)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=epochs)
    cfg.randomness = dict(seed=0, deterministic=False)
    cfg.work_dir = str(tmp_path / 'wd')
    torch.set_num_threads(1)
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model
    model.eval()
    init_default_scope('mmpose')
    ds_cfg = copy.deepcopy(cfg.val_dataloader.dataset)
    ds_cfg.pop('headbox_file')
    ds_cfg.test_mode = False
    ds_cfg.pipeline = [t for t in ds_cfg.pipeline if t['type'] != 'PackPoseInputs'] + [
        dict(type='GenerateTarget', encoder=cfg.codec), dict(type='PackPoseInputs')]
    held_out = DATASETS.build(ds_cfg)
    true, predicted = [], []
    with torch.no_grad():
        for start in range(0, len(held_out), 50):
            items = [held_out[i] for i in range(start, min(len(held_out), start + 50))]
            data = model.data_preprocessor(pseudo_collate(items), True)
            feats, _ = model._extract(data['inputs'])
            true += model.task_loss(feats, data['data_samples'])[1].tolist()
            # the scoring path the strategy uses: no labels
            unlabeled = pseudo_collate(items)
            predicted += model.score_step(unlabeled, ('pred_loss',))['pred_loss'].tolist()
    rho, p_value = spearmanr(true, predicted)
    print(f'held-out Spearman {rho:.3f} (p={p_value:.2g}, n={len(true)})')
    assert len(true) >= 100
    assert rho > 0.5 and p_value < 1e-6, (rho, p_value)


def test_al_train_runs_a_two_cycle_pose_experiment_with_pckh_rows(mpii_root, tmp_path):
    """The same tools/al_train.py as detection, random and learning-loss strategies."""
    common = ['active_learning.initial_size=16', 'active_learning.budget_per_cycle=16',
              'active_learning.num_cycles=2', 'active_learning.candidate_pool=32',
              'active_learning.score_num_workers=0', 'active_learning.score_batch_size=16',
              'train_cfg.max_epochs=2', 'train_dataloader.batch_size=8',
              *mpii_root_options(mpii_root)]
    runs = {}
    for strategy in ('LearningLossStrategy', 'RandomStrategy'):
        work_dir = tmp_path / strategy
        result = _run([sys.executable, str(REPO / 'tools/al_train.py'),
                       str(REPO / 'configs/active_learning/ll_hourglass-tiny_synthetic-mpii.py'),
                       '--work-dir', str(work_dir), '--cfg-options',
                       f'active_learning.strategy.type={strategy}', *common], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-4000:]
        with open(work_dir / 'al_metrics.csv') as f:
            rows = list(csv.DictReader(f))
        assert [r['cycle'] for r in rows] == ['0', '1']
        assert [r['num_labeled'] for r in rows] == ['16', '32']
        for row in rows:
            assert row['strategy'] == strategy
            # MpiiPCKAccuracy: PCKh@0.5 as `PCK`, PCKh@0.1 as `PCK@0.1`, per joint group
            assert 0 <= float(row['PCK']) <= 100 and 0 <= float(row['PCK@0.1']) <= 100
            assert {'Head PCK', 'Wrist PCK', 'Ankle PCK'} <= set(row)
        assert (work_dir / 'al_curve.png').stat().st_size > 1000
        log = (work_dir / 'al_train.log').read_text()
        assert 'pose experiment' in log
        header = next(line for line in log.splitlines() if line.startswith('cycle |'))
        assert [c.strip() for c in header.split('|')][3] == 'PCK'  # the plotted metric first
        state = json.loads((work_dir / 'al_state.json').read_text())
        assert state['status'] == 'finished'
        c0 = state['cycles'][0]
        assert all(i.startswith('images/') for i in c0['labeled'])
        assert len(c0['selected']) == 16 and c0['num_candidates'] == 32
        assert not set(c0['labeled']) & {p['id'] for p in c0['selected']}
        runs[strategy] = c0
    assert runs['LearningLossStrategy']['labeled'] == runs['RandomStrategy']['labeled']
    assert ({p['id'] for p in runs['LearningLossStrategy']['selected']}
            != {p['id'] for p in runs['RandomStrategy']['selected']})


def test_mmpose_train_py_accepts_our_pose_config(mpii_root, tmp_path):
    """One cycle is an ordinary mmpose training run: custom_imports is all it takes."""
    import mmpose
    train_py = Path(mmpose.__file__).parent / '.mim' / 'tools' / 'train.py'
    result = _run([sys.executable, str(train_py), str(REPO / POSE_TINY_CONFIG),
                   '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                   'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                   'train_dataloader.batch_size=8', *mpii_root_options(mpii_root)],
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = '\n'.join(p.read_text() for p in (tmp_path / 'wd').glob('*/*.log'))
    assert 'loss_rank' in logs and 'loss_kpt' in logs and 'PCK@0.1' in logs
    assert (tmp_path / 'wd' / 'epoch_1.pth').exists()
