"""Every rank checks, at the start of every cycle, that it holds rank 0's labeled set.

Two CPU processes (gloo) call the check with the same set, then with rank 1
holding one other sample; each rank records what it raised.
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
    except RuntimeError as err:
        return str(err)
    return 'ok'


def _each_rank(rank: int, folder: str) -> None:
    from mmal.loop.checks import check_same_labeled_set_on_every_rank

    folder = Path(folder)
    torch.distributed.init_process_group(
        'gloo', init_method=f'file://{folder / "group"}', rank=rank, world_size=WORLD,
        timeout=datetime.timedelta(seconds=60))
    same = dict(cycle=1, num_labeled=3, labeled=['a', 'b', 'c'])
    other = dict(same, labeled=['a', 'b', 'd'] if rank == 1 else ['a', 'b', 'c'])
    outcomes = dict(same=_outcome(lambda: check_same_labeled_set_on_every_rank(same)),
                    other=_outcome(lambda: check_same_labeled_set_on_every_rank(other)))
    (folder / f'rank{rank}.json').write_text(json.dumps(outcomes))
    torch.distributed.destroy_process_group()


def test_a_rank_holding_another_labeled_set_stops_every_rank(tmp_path):
    torch.multiprocessing.spawn(_each_rank, args=(str(tmp_path),), nprocs=WORLD)
    outcomes = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in range(WORLD)]
    assert [o['same'] for o in outcomes] == ['ok', 'ok']
    for o in outcomes:
        assert o['other'].startswith('cycle 1: ranks [1] hold another labeled set'), o
        assert '--resume' in o['other']


def test_alone_the_check_is_a_no_op():
    from mmal.loop.checks import check_same_labeled_set_on_every_rank
    check_same_labeled_set_on_every_rank(dict(cycle=0, num_labeled=1, labeled=['a']))
