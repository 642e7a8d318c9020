"""Distributed runs on CPU (torchrun, gloo): ranks that disagree are refused,
and the scores do not depend on the number of processes; a run on 1 process
and the same run on N count as one experiment."""
import csv
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mmal.loop.state import ExperimentState

from .conftest import REPO

TORCHRUN = Path(sys.executable).with_name('torchrun')
CONFIG = REPO / 'configs/active_learning/ll_ssd-tiny_synthetic-voc.py'

needs_torchrun = pytest.mark.skipif(not TORCHRUN.exists(), reason='torchrun not installed')


def test_the_ddp_wrapper_is_not_part_of_the_experiment(tmp_path):
    """A CPU process group adds `model_wrapper_cfg`; the digests (resume, shared cycle 0)
    ignore it, also in a record that counted it."""
    from mmengine.config import Config

    from mmal.datasets import Pool
    from mmal.loop.resume import config_digests, open_state
    from mmal.loop.settings import ActiveLearningSettings
    from mmal.utils.dist import differences_from_rank0

    cfg = Config(dict(model=dict(type='M'), train_cfg=dict(max_epochs=1)))
    alone = config_digests(cfg)
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)
    assert config_digests(cfg) == alone
    settings = ActiveLearningSettings.from_config(dict(initial_size=2, budget_per_cycle=2,
                                                       num_cycles=2))
    pool = Pool(ids=[f's{i}' for i in range(6)], leaf_sizes=[6])
    state = open_state(tmp_path, cfg, settings, pool, False, print)
    state.data['config_digests']['model_wrapper_cfg'] = 'recorded-by-an-older-version'
    state.save()
    assert open_state(tmp_path, cfg, settings, pool, True, print).path == state.path
    assert differences_from_rank0({'anything': 1}) == {}  # not distributed: nothing to compare


#: One process sets the group up from the environment the test gives it and
#: prints what it got; a process of its own, as init_dist changes globals
#: (the multiprocessing start method, the default process group).
SETUP_CHILD = """
import json, os, sys
import torch
from mmengine.config import Config
from mmal.utils.dist import setup_distributed
cfg = Config(dict(env_cfg=dict(dist_cfg=json.loads(sys.argv[2]))))
setup_distributed(sys.argv[1], cfg)
group = torch.distributed.distributed_c10d._get_default_group()
timeout = group._get_backend(torch.device('cpu')).options._timeout
print(json.dumps(dict(
    backend=torch.distributed.get_backend(), rank=torch.distributed.get_rank(),
    world_size=torch.distributed.get_world_size(), timeout_s=timeout.total_seconds(),
    env={k: os.environ.get(k) for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_PORT')},
    wrapper=cfg.get('model_wrapper_cfg'),
    set_device_restored=torch.cuda.set_device.__module__ == 'torch.cuda')))
torch.distributed.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _setup_on_cpu(launcher: str, dist_cfg: dict, env: dict) -> dict:
    """``setup_distributed`` in a CPU-only process (no GPU visible) with ``env``."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith('SLURM_') and k not in
            ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')}
    result = subprocess.run(
        [sys.executable, '-c', SETUP_CHILD, launcher, json.dumps(dist_cfg)],
        env=dict(base, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1', PYTHONPATH=str(REPO),
                 **env),
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# scontrol is not here: MASTER_ADDR is given, as mmengine then keeps it.
SLURM_TASK = dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_NODELIST='localhost',
                  MASTER_ADDR='127.0.0.1')


@pytest.mark.parametrize('local_id', ['0', None], ids=['localid', 'no-localid'])
def test_slurm_variables_make_a_gloo_group_on_cpu(local_id):
    """Slurm's task variables become the torch ones, by mmengine's code, on a CPU-only node."""
    port = _free_port()
    env = dict(SLURM_TASK, **({} if local_id is None else {'SLURM_LOCALID': local_id}))
    # the port from env_cfg.dist_cfg.port (mmengine's slurm argument), MASTER_PORT unset
    got = _setup_on_cpu('slurm', dict(backend='nccl', port=port, timeout=77), env)
    assert got['backend'] == 'gloo'  # the config's nccl needs GPUs
    assert (got['rank'], got['world_size']) == (0, 1)
    assert got['env'] == dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_PORT=str(port))
    assert got['timeout_s'] == 77
    assert got['wrapper'] == dict(type='MMDistributedDataParallel', device_ids=None,
                                  find_unused_parameters=False)
    assert got['set_device_restored']


def test_pytorch_launcher_on_cpu_waits_the_default_timeout():
    """torchrun's variables, no dist_cfg: gloo, and a lost rank fails after DEFAULT_TIMEOUT_S."""
    from mmal.utils.dist import DEFAULT_TIMEOUT_S
    port = _free_port()
    got = _setup_on_cpu('pytorch', {}, dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0',
                                            MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port)))
    assert (got['backend'], got['world_size']) == ('gloo', 1)
    assert got['timeout_s'] == DEFAULT_TIMEOUT_S


def test_launcher_with_gpus_is_mmengine_init_dist_as_configured(monkeypatch):
    """With CUDA the config's dist_cfg goes to mmengine's init_dist unchanged, plus the timeout."""
    from mmengine.config import Config

    from mmal.utils import dist
    calls = []
    monkeypatch.setattr(dist.torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(dist, 'init_dist', lambda launcher, **kw: calls.append((launcher, kw)))
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl', port=29511))))
    dist.setup_distributed('slurm', cfg)
    assert calls == [('slurm', dict(backend='nccl', port=29511,
                                    timeout=dist.DEFAULT_TIMEOUT_S))]
    assert 'model_wrapper_cfg' not in cfg  # mmengine's default wrapper, on LOCAL_RANK's GPU
    dist.setup_distributed('none', cfg)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="--launcher 'mpi'"):
        dist.setup_distributed('mpi', cfg)


@pytest.mark.parametrize('exported, argv, expected', [
    (None, [], '0'),
    (None, ['--local-rank', '3'], '3'),  # torch.distributed.launch, PyTorch >= 2.0
    (None, ['--local_rank=2'], '2'),  # before 2.0
    ('1', ['--local-rank', '3'], '1'),  # torchrun exported it: that wins
])
def test_launcher_args_export_local_rank_as_mmdet_does(monkeypatch, exported, argv, expected):
    import argparse

    from mmal.utils.cli import add_launcher_args
    if exported is None:
        monkeypatch.delenv('LOCAL_RANK', raising=False)
    else:
        monkeypatch.setenv('LOCAL_RANK', exported)
    parser = argparse.ArgumentParser()
    add_launcher_args(parser)
    args = parser.parse_args(['--launcher', 'pytorch', *argv])
    assert args.launcher == 'pytorch'
    assert os.environ['LOCAL_RANK'] == expected
    with pytest.raises(SystemExit):
        parser.parse_args(['--launcher', 'mpi'])


def _options(voc_root: Path) -> list[str]:
    opts = ['active_learning.initial_size=8', 'active_learning.budget_per_cycle=8',
            'active_learning.num_cycles=2', 'active_learning.candidate_pool=21',
            'active_learning.score_batch_size=4', 'active_learning.score_num_workers=0',
            'train_cfg.max_epochs=1']
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{name}.dataset.data_root={voc_root}/', f'{name}.num_workers=0',
                 f'{name}.persistent_workers=False', f'{name}.batch_size=4']
    return opts


def _run(args: list[str], cwd: Path, nproc: int, port: int, timeout: int
         ) -> subprocess.CompletedProcess:
    launch = ([str(TORCHRUN), '--nproc_per_node', str(nproc), '--master_port', str(port)]
              if nproc > 1 else [sys.executable])
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    return subprocess.run(launch + args + (['--launcher', 'pytorch'] if nproc > 1 else []),
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@needs_torchrun
def test_a_rank_with_another_config_is_refused_on_every_rank(voc_root, tmp_path):
    """Rank 1 reads another `model`: both ranks stop before any work, naming rank 1 and the key."""
    config = tmp_path / 'rank_dependent.py'
    config.write_text(f"_base_ = '{CONFIG}'\nimport os\n"
                      "model = dict(rank_loss_weight=1.0 + int(os.environ.get('RANK', '0')))\n")
    result = _run([str(REPO / 'tools/al_train.py'), str(config), '--work-dir',
                   str(tmp_path / 'wd'), '--cfg-options', *_options(voc_root)],
                  tmp_path, nproc=2, port=29615, timeout=300)
    assert result.returncode != 0
    # al_train.py's answer to a ConfigError, from each of the two ranks
    assert result.stderr.count('error: the ranks do not run the same experiment') == 2, \
        result.stderr[-4000:]
    assert 'rank 1 differs from rank 0 in: config key `model`.' in result.stderr
    assert 'same config' in result.stderr
    assert not (tmp_path / 'wd' / 'al_state.json').exists()


def _scores(run: Path) -> tuple[list[str], np.ndarray]:
    with open(run / 'cycle_00' / 'al_scores.csv') as f:
        rows = list(csv.DictReader(f))
    return [r['id'] for r in rows], np.array([float(r['score']) for r in rows])


@pytest.mark.slow
@needs_torchrun
def test_scores_on_one_and_on_two_processes_agree(voc_root, tmp_path):
    """The same cycle-0 checkpoint scored by 1 and by 2 ranks: same scores, same picks.

    21 candidates in batches of 4: the ranks' batches differ from the single
    process's, and the distributed sampler pads 21 to 22 (the duplicate must
    be dropped when the shards are gathered). CoreSet also scores the labeled set.
    """
    strategies = ['LearningLossStrategy', 'CoreSetStrategy']
    one, two = tmp_path / 'one', tmp_path / 'two'
    args = [str(REPO / 'tools/al_compare.py'), str(CONFIG), '--strategies', *strategies,
            '--seeds', '0', '--no-report', '--cfg-options', *_options(voc_root)]
    result = _run([*args, '--work-dir', str(one)], tmp_path, nproc=1, port=0, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    # The two-process comparison shares the first one's cycle 0 (its `_shared` folder).
    two.mkdir()
    (two / '_shared').symlink_to(one / '_shared')
    result = _run([*args, '--work-dir', str(two)], tmp_path, nproc=2, port=29617, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    for name in strategies:
        runs = [folder / name / 'seed0' for folder in (one, two)]
        states = [json.loads((run / 'al_state.json').read_text()) for run in runs]
        assert states[0]['cycles'][0]['checkpoint'] == states[1]['cycles'][0]['checkpoint']
        (ids1, scores1), (ids2, scores2) = map(_scores, runs)
        assert len(ids1) == 21 and ids1 == ids2, name
        np.testing.assert_allclose(scores2, scores1, rtol=1e-4, atol=1e-6, err_msg=name)
        picked = [[p['id'] for p in s['cycles'][0]['selected']] for s in states]
        assert picked[0] == picked[1], name
    # Spilled to memory maps: each rank writes its shard's file, rank 0 assembles.
    spilled = tmp_path / 'spilled'
    spilled.mkdir()
    (spilled / '_shared').symlink_to(one / '_shared')
    args = [str(REPO / 'tools/al_compare.py'), str(CONFIG), '--strategies', strategies[0],
            '--seeds', '0', '--no-report', '--cfg-options', *_options(voc_root),
            'active_learning.score_spill_mb=0']
    result = _run([*args, '--work-dir', str(spilled)], tmp_path, nproc=2, port=29623,
                  timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    run = spilled / strategies[0] / 'seed0'
    ids, scores = _scores(run)
    ids1, scores1 = _scores(one / strategies[0] / 'seed0')
    assert ids == ids1
    np.testing.assert_allclose(scores, scores1, rtol=1e-4, atol=1e-6)
    assert not (run / 'cycle_00' / 'score_spill').exists()  # removed after the selection


@pytest.mark.slow
@needs_torchrun
def test_a_rank_killed_while_scoring_fails_the_run_soon_and_resume_finishes_it(voc_root,
                                                                               tmp_path):
    """Rank 1 is SIGKILLed in the middle of scoring: the run stops (not hangs), naming it."""
    work = tmp_path / 'wd'
    args = [str(REPO / 'tests/fault_child.py'), str(CONFIG), '--work-dir', str(work),
            '--cfg-options', *_options(voc_root), 'env_cfg.dist_cfg.timeout=60']
    env = dict(os.environ, MMAL_KILL_AT='score_iter:2', MMAL_KILL_RANK='1')
    start = time.monotonic()
    launch = [str(TORCHRUN), '--nproc_per_node', '2', '--master_port', '29619']
    killed = subprocess.run(launch + args + ['--launcher', 'pytorch'], cwd=tmp_path,
                            env=dict(env, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO)),
                            capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - start
    assert killed.returncode != 0
    assert re.search(r'exitcode\s*:\s*-9', killed.stderr) and \
        re.search(r'rank\s*:\s*1\b', killed.stderr), \
        killed.stderr[-3000:]
    assert elapsed < 240, elapsed  # failed, not waited out
    state = json.loads((work / 'al_state.json').read_text())
    assert state['cycles'][0]['status'] == 'evaluated'  # died while selecting
    resumed = _run([str(REPO / 'tools/al_train.py'), str(CONFIG), '--work-dir', str(work),
                    '--resume', '--cfg-options', *_options(voc_root),
                    'env_cfg.dist_cfg.timeout=60'], tmp_path, nproc=2, port=29621, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = ExperimentState.load(work).data
    assert state['status'] == 'finished'
    c0, c1 = state['cycles']
    assert c1['labeled'] == c0['labeled'] + [p['id'] for p in c0['selected']]
    assert c1['num_labeled'] == 16 and c1['metrics']
