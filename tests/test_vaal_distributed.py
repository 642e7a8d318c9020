"""VAAL on 2 processes (torchrun, CPU, gloo): one DDP training, one selection on every rank,
a rank killed mid-training resumes to the same weights, the experiment runs end to end."""
import json
import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import REPO
from .test_distributed import CONFIG, TORCHRUN, _options, needs_torchrun

CHILD = REPO / 'tests' / 'vaal_child.py'


def torchrun(args: list[str], cwd: Path, port: int, record: Path, nproc: int = 2,
             timeout: int = 300, **env) -> subprocess.CompletedProcess:
    launch = [str(TORCHRUN), '--nproc_per_node', str(nproc), '--master_port', str(port)]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO),
               MMAL_VAAL_RECORD=str(record), **env)
    return subprocess.run(launch + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def records(folder: Path, select: int = 1) -> list[dict]:
    """What each rank's ``select`` number ``select`` returned, rank 0 first."""
    return [json.loads((folder / f'rank{r}_select{select}.json').read_text()) for r in (0, 1)]


@pytest.mark.slow
@needs_torchrun
def test_two_ranks_train_one_vaal_select_alike_and_resume_a_killed_run(tmp_path):
    """Both ranks end with the same weights (DDP averaged their different batches) and return
    the same scores; rank 1 killed at iteration 13 resumes from iteration 8 to the same end."""
    whole = torchrun([str(CHILD), 'select', str(tmp_path / 'whole')], tmp_path, 29631,
                     tmp_path / 'whole_rec')
    assert whole.returncode == 0, whole.stderr[-4000:]
    rank0, rank1 = records(tmp_path / 'whole_rec')
    assert rank0 == rank1
    assert sorted(rank0['order']) == list(range(10, 20))  # the bright candidates
    assert rank0['world_size'] == 2
    run = json.loads((tmp_path / 'whole' / 'vaal_run.json').read_text())
    assert (run['world_size'], run['iterations']) == (2, 24)
    assert (tmp_path / 'whole' / 'iter_24.pth').exists()
    # the checkpoints hold the plain networks' names, not DDP's `vae.module.*`
    state = torch.load(tmp_path / 'whole' / 'iter_24.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    assert state and not [key for key in state if '.module.' in key or
                          key.startswith('module.')], list(state)[:5]

    killed = torchrun([str(CHILD), 'select', str(tmp_path / 'killed')], tmp_path, 29633,
                      tmp_path / 'killed_rec', MMAL_VAAL_KILL='13')
    assert killed.returncode != 0
    assert re.search(r'exitcode\s*:\s*-9', killed.stderr), killed.stderr[-3000:]
    assert (tmp_path / 'killed' / 'iter_8.pth').exists()
    assert not (tmp_path / 'killed' / 'iter_16.pth').exists()
    resumed = torchrun([str(CHILD), 'select', str(tmp_path / 'killed')], tmp_path, 29635,
                       tmp_path / 'resumed_rec')
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 0, iter: 8' in log and 'unexpected key' not in log
    assert records(tmp_path / 'resumed_rec') == [rank0, rank1]


def test_a_two_process_run_is_not_resumed_on_one(tmp_path):
    """The batches depend on the number of processes: the record refuses another one."""
    from mmal.registry import STRATEGIES

    from .vaal_child import SMALL, dark_and_bright

    strategy = STRATEGIES.build(dict(SMALL), default_args=dict(task='detection'))
    strategy.work_dir = tmp_path
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_8.pth'))
    (tmp_path / 'iter_8.pth').write_bytes(b'')
    candidates, labeled = dark_and_bright()
    rng = np.random.default_rng(7)
    seed = int(np.random.default_rng(7).integers(0, 2**31 - 1))
    run = dict(seed=seed, num_labeled=16, num_unlabeled=20, iterations=24, world_size=2,
               **strategy._settings())
    (tmp_path / 'vaal_run.json').write_text(json.dumps(run))
    with pytest.raises(ValueError, match=r"another VAAL run .*'world_size': \(2, 1\).*resume "
                                         r'with 2 processes or delete the folder'):
        strategy.select(candidates, labeled, 10, rng)


STORE_CHILD = '''
import json, os, sys
import numpy as np, torch
from mmal.scoring.store import OutputStore
torch.distributed.init_process_group('gloo')
rank, out = int(os.environ['RANK']), sys.argv[1]
rows = [[0, 2, 4, 6], [1, 3, 5, 0]][rank]  # 7 samples, the sampler's padding repeats 0
result = {}
for spill in (None, 0):
    store = OutputStore(7, os.path.join(out, f'spill{spill}'), spill)
    store.add(rows, [dict(images=np.full((3, 2, 2), i, np.float32), boxes=np.arange(i))
                     for i in rows])
    arrays, ragged = store.gather(every_rank=True)
    result[str(spill)] = dict(images=arrays['images'][:, 0, 0, 0].tolist(),
                              mapped=isinstance(arrays['images'], np.memmap),
                              boxes=[len(item['boxes']) for item in ragged])
open(os.path.join(out, f'rank{rank}.json'), 'w').write(json.dumps(result))
torch.distributed.destroy_process_group()
'''


@needs_torchrun
def test_every_rank_gets_the_gathered_outputs_in_memory_and_spilled(tmp_path):
    script = tmp_path / 'store_child.py'
    script.write_text(STORE_CHILD)
    result = torchrun([str(script), str(tmp_path)], tmp_path, 29637, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in (0, 1)]
    for rank, got in enumerate(ranks):
        for spill in ('None', '0'):
            assert got[spill]['images'] == list(range(7)), (rank, spill)
            assert got[spill]['boxes'] == list(range(7)), (rank, spill)
        assert got['0']['mapped'] and not got['None']['mapped']  # spilled: a memory map


#: 8 labeled + 21 candidates in batches of 4 + 4 per rank: 3 epochs on 2 ranks.
VAAL_CONFIG = f"""_base_ = '{CONFIG}'
active_learning = dict(strategy=dict(
    _delete_=True, type='VAALStrategy', image_size=16, latent_dim=8, channels=8,
    discriminator_width=32, batch_size=4, epochs=3, checkpoint_interval=4, log_interval=100))
"""


def _al_train(voc_root: Path, tmp_path: Path, work: Path, *extra: str) -> list[str]:
    config = tmp_path / 'vaal.py'
    config.write_text(VAAL_CONFIG)
    return [str(CHILD), 'al_train', str(config), '--work-dir', str(work), *extra,
            '--launcher', 'pytorch', '--cfg-options', *_options(voc_root),
            'active_learning.score_spill_mb=0']


@pytest.mark.slow
@needs_torchrun
def test_a_vaal_experiment_runs_on_two_processes_and_resumes_a_kill_in_vaal(voc_root,
                                                                             tmp_path):
    """tools/al_train.py --launcher pytorch: both ranks get the spilled images, train VAAL
    together and select the same K; rank 0's selection is the one recorded. Rank 1 killed
    in VAAL's training: --resume trains on from VAAL's checkpoint and picks the same K."""
    from mmal.loop.state import ExperimentState

    work = tmp_path / 'wd'
    result = torchrun(_al_train(voc_root, tmp_path, work), tmp_path, 29639, tmp_path / 'rec',
                      timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    state = ExperimentState.load(work).data
    assert state['status'] == 'finished'
    c0, c1 = state['cycles']
    picked = [p['id'] for p in c0['selected']]
    assert len(set(picked)) == 8 and not set(picked) & set(c0['labeled'])
    assert c1['labeled'] == c0['labeled'] + picked
    rank0, rank1 = records(tmp_path / 'rec')
    assert rank0 == rank1 and len(rank0['scores']) == 21
    assert [p['score'] for p in c0['selected']] == [rank0['scores'][i] for i in rank0['order']]
    strategy_dir = work / 'cycle_00' / 'strategy'
    run = json.loads((strategy_dir / 'vaal_run.json').read_text())
    iterations = math.ceil(3 * (8 + 21) / (4 * 2))  # epochs are shared by the ranks
    assert (run['world_size'], run['num_unlabeled'], run['iterations']) == (2, 21, iterations)
    assert (strategy_dir / f'iter_{iterations}.pth').exists()
    assert not (work / 'cycle_00' / 'score_spill').exists()  # removed after the selection

    killed_work = tmp_path / 'killed'
    killed = torchrun(_al_train(voc_root, tmp_path, killed_work), tmp_path, 29641,
                      tmp_path / 'killed_rec', timeout=900, MMAL_VAAL_KILL='6')
    assert killed.returncode != 0 and re.search(r'exitcode\s*:\s*-9', killed.stderr), \
        killed.stderr[-3000:]
    killed_dir = killed_work / 'cycle_00' / 'strategy'
    assert (killed_dir / 'iter_4.pth').exists() and not (killed_dir / 'iter_8.pth').exists()
    resumed = torchrun(_al_train(voc_root, tmp_path, killed_work, '--resume'), tmp_path,
                       29643, tmp_path / 'resumed_rec', timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert 'resumed epoch: 0, iter: 4' in resumed.stdout + resumed.stderr
    again = ExperimentState.load(killed_work).data
    assert again['status'] == 'finished'
    assert [p['id'] for p in again['cycles'][0]['selected']] == picked
