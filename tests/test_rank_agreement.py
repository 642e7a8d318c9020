"""Ranks agree: on the labeled set of every cycle, and on the outcome of rank 0's writes.

Two CPU processes (gloo) call the labeled-set check with the same set,
then with rank 1 holding one other sample, and run functions on rank 0
alone that fail; each rank records what it raised.
"""
import datetime
import json
from pathlib import Path

import torch.distributed
import torch.multiprocessing

WORLD = 2


def _outcome(call) -> str:
    try:
        call()
    except Exception as err:  # noqa: BLE001 - the test records whatever each rank raised
        return f'{type(err).__name__}: {err}'
    return 'ok'


class _UnpicklableError(Exception):
    def __reduce__(self):
        raise TypeError('cannot pickle this error')


def _fail(error: Exception):
    raise error


def _each_rank(rank: int, folder: str) -> None:
    from mmal.loop.checks import check_same_labeled_set_on_every_rank
    from mmal.utils.dist import on_rank0

    folder = Path(folder)
    torch.distributed.init_process_group(
        'gloo', init_method=f'file://{folder / "group"}', rank=rank, world_size=WORLD,
        timeout=datetime.timedelta(seconds=60))
    same = ['a', 'b', 'c']
    other = ['a', 'b', 'd'] if rank == 1 else same
    outcomes = dict(same=_outcome(lambda: check_same_labeled_set_on_every_rank(1, same)),
                    other=_outcome(lambda: check_same_labeled_set_on_every_rank(1, other)),
                    # any error of rank 0's function reaches every rank, pickled or not
                    key_error=_outcome(lambda: on_rank0(lambda: _fail(KeyError('cycles')))),
                    unpicklable=_outcome(lambda: on_rank0(lambda: _fail(_UnpicklableError('x')))),
                    result=_outcome(lambda: on_rank0(lambda: rank)))
    (folder / f'rank{rank}.json').write_text(json.dumps(outcomes))
    torch.distributed.destroy_process_group()


def test_a_rank_holding_another_labeled_set_stops_every_rank(tmp_path):
    torch.multiprocessing.spawn(_each_rank, args=(str(tmp_path),), nprocs=WORLD)
    outcomes = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in range(WORLD)]
    assert [o['same'] for o in outcomes] == ['ok', 'ok']
    for o in outcomes:
        assert o['other'].startswith('RuntimeError: cycle 1: ranks [1] hold another labeled '
                                     'set'), o
        assert o['key_error'] == "KeyError: 'cycles'", o
        assert o['unpicklable'] == 'RuntimeError: _UnpicklableError on rank 0: x', o
        assert o['result'] == 'ok', o
        assert 'same data and labels under data_root' in o['other']


def test_alone_the_check_is_a_no_op():
    from mmal.loop.checks import check_same_labeled_set_on_every_rank
    check_same_labeled_set_on_every_rank(0, ['a'])
