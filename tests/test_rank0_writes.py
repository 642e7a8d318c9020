"""Rank 0 alone writes the experiment's files, and a write that fails there fails every rank.

Two CPU processes (gloo) run the real write paths with a target that cannot
be written; each rank records what it raised. Were the failure rank 0's
alone, the other rank would go on (and later wait for rank 0 in a
collective until the timeout).
"""
import datetime
import json
import types
from pathlib import Path

import torch.distributed
import torch.multiprocessing

WORLD = 2


def _outcome(call) -> str:
    try:
        call()
    except Exception as err:  # noqa: BLE001 - the test records whatever each rank raised
        return type(err).__name__
    return 'ok'


def _each_rank(rank: int, folder: str) -> None:
    from mmal.loop.experiment import ActiveLearningExperiment, saved_on_rank0
    from mmal.loop.shared_initial import SharedInitialCycle
    from mmal.loop.state import ExperimentState

    folder = Path(folder)
    torch.distributed.init_process_group(
        'gloo', init_method=f'file://{folder / "group"}', rank=rank, world_size=WORLD,
        timeout=datetime.timedelta(seconds=60))
    blocked = folder / 'a_file'  # a folder path under a file: no write can succeed
    outcomes = {}
    experiment = types.SimpleNamespace(
        work_dir=blocked / 'work', strategy_name='RandomStrategy',
        cost=types.SimpleNamespace(unit='images'),
        state=types.SimpleNamespace(cycles=[dict(cycle=0, num_labeled=4, metrics={'mAP': 0.5},
                                                 timings={})]))
    outcomes['reports'] = _outcome(lambda: ActiveLearningExperiment._write_reports(experiment))
    shared = SharedInitialCycle(blocked / 'shared', key=dict(seed=0))
    outcomes['shared_folder'] = _outcome(lambda: shared.adopt(
        dict(labeled=[]), None, train=None, evaluate=None, log=print))
    outcomes['shared_record'] = _outcome(lambda: shared._write_on_rank0(dict(checkpoint='c')))
    state = ExperimentState.create(folder, settings=dict(seed=0), config_digests={},
                                   versions={}, pool_ids=['a', 'b'])
    state.path = blocked / 'al_state.json'
    outcomes['state'] = _outcome(saved_on_rank0(state).save)
    (folder / f'rank{rank}.json').write_text(json.dumps(outcomes))
    torch.distributed.destroy_process_group()


def test_a_write_that_fails_on_rank_0_fails_every_rank(tmp_path):
    (tmp_path / 'a_file').write_text('not a folder')
    torch.multiprocessing.spawn(_each_rank, args=(str(tmp_path),), nprocs=WORLD)
    outcomes = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in range(WORLD)]
    assert outcomes[0] == outcomes[1], outcomes
    assert outcomes[0] == dict(reports='NotADirectoryError', shared_folder='ConfigError',
                               shared_record='NotADirectoryError', state='FileExistsError')
