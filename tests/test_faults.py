"""SIGKILL at seeded points of a run, then ``--resume``: always the uninterrupted result.

Each scenario kills ``al_train.py`` once, at a point a seeded generator
draws among training and evaluation iterations, scoring, selection, a
checkpoint half written and the state file's own writes (the new state
written but not yet renamed into place), checks that the state left
behind is whole, resumes, and compares labeled sets, selections, scores
and metrics with an uninterrupted run of the same config.
"""
import copy
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from mmal.loop.state import ExperimentState

from .conftest import REPO
from .cycles import one_epoch_two_cycles
from .test_al_train_e2e import essence

pytestmark = pytest.mark.slow

CHILD = REPO / 'tests' / 'fault_child.py'


def child(config, work_dir, *args, **env) -> subprocess.CompletedProcess:
    environ = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO), **env)
    environ.pop('MMAL_KILL_AT', None) if 'MMAL_KILL_AT' not in env else None
    return subprocess.run([sys.executable, str(CHILD), str(config), '--work-dir',
                           str(work_dir), *args], env=environ, capture_output=True, text=True,
                          timeout=900)


def test_killed_anywhere_resumes_to_the_uninterrupted_result(tiny_cfg, tmp_path):
    cfg = one_epoch_two_cycles(copy.deepcopy(tiny_cfg))
    cfg.train_dataloader.num_workers = 2  # real workers: their streams must repeat too
    cfg.train_cfg.max_epochs = 2
    cfg.default_hooks.checkpoint.max_keep_ckpts = 2
    cfg.active_learning.update(candidate_pool=16, ranking_eval_size=8,
                               stopping=dict(stop_set_size=8))  # a kill while scoring it too
    config = tmp_path / 'faults.py'
    cfg.dump(str(config))

    counts_file = tmp_path / 'counts.json'
    whole = child(config, tmp_path / 'whole', MMAL_COUNT_EVENTS=str(counts_file))
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = essence(ExperimentState.load(tmp_path / 'whole').data)
    counts = json.loads(counts_file.read_text())
    assert all(counts[k] > 0 for k in counts), counts

    rng = np.random.default_rng(2024)
    kinds = sorted(counts)
    chosen = [kinds[i] for i in rng.choice(len(kinds), size=6, replace=False)]
    for kind in chosen:
        n = int(rng.integers(1, counts[kind] + 1))
        work = tmp_path / f'{kind}_{n}'
        killed = child(config, work, MMAL_KILL_AT=f'{kind}:{n}')
        assert killed.returncode == -signal.SIGKILL, (kind, n, killed.stderr[-2000:])
        if (work / 'al_state.json').exists():  # never half written
            ExperimentState.load(work)
        resumed = child(config, work, '--resume')
        assert resumed.returncode == 0, (kind, n, resumed.stderr[-3000:])
        got = essence(ExperimentState.load(work).data)
        assert got == expected, (kind, n)
