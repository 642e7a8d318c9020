"""NEU-DET over seeds 0, 1, 2: Learning Loss and random (seed 0 from compare_seed0.json, its
run folders were not kept; seeds 1 and 2 from runs/*/seed*/al_state.json), entropy and the
oracle (every seed from runs/, their seed 0 on a cycle 0 trained again: 0.164 mAP, the
first 0.159, same initial set), LL + diversity and BADGE (seed 0 on that same retrained
cycle 0, seeds 1 and 2 on ones trained again too: 0.166 and 0.167, the first 0.195 and
0.127), core-set (seeds 1 and 2 on those same retrained cycles 0, seed 0 on one trained
again once more: 0.168); writes compare.* to the folder given.

    PYTHONPATH=. python bench/results/compare_neu-det/merge_seeds.py bench/results/compare_neu-det
"""
import json
import sys
from pathlib import Path

from mmal.compare.report import Run, collect_runs, compare, write_all

HERE = Path(__file__).parent


def seed0_runs() -> list[Run]:
    """Seed 0's runs, rebuilt from the per-cycle means of its one-seed comparison."""
    old = json.loads((HERE / 'compare_seed0.json').read_text())
    runs = []
    for name, summary in old['strategies'].items():
        cycles = [dict(cycle=c['cycle'], num_labeled=c['num_labeled'],
                       metrics={k: v['mean'] for k, v in c['metrics'].items()},
                       ranking_accuracy={k: v['mean'] for k, v in c['ranking_accuracy'].items()})
                  for c in summary['cycles']]
        runs.append(Run(name, 0, HERE / 'compare_seed0.json', True, cycles))
    return runs


if __name__ == '__main__':
    result = compare(collect_runs([HERE / 'runs']) + seed0_runs(), baseline='RandomStrategy',
                     metric='pascal_voc/mAP')
    out = Path(sys.argv[1])
    out.mkdir(exist_ok=True)
    print(write_all(result, out))
