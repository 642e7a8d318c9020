"""NEU-DET, Learning Loss vs random over seeds 0, 1, 2: seed 0 from compare_seed0.json (its run
folders were not kept), seeds 1 and 2 from runs/*/seed*/al_state.json; writes compare.* here.

    PYTHONPATH=. python bench/results/compare_neu-det/merge_seeds.py bench/results/compare_neu-det
"""
import json, sys
from pathlib import Path
from mmal.compare.report import Run, collect_runs, compare, write_all, to_markdown
R = Path('bench/results/compare_neu-det')
old = json.load(open(R / 'compare_seed0.json'))
runs = collect_runs([R / 'runs'])
for name, s in old['strategies'].items():
    cycles = [dict(cycle=c['cycle'], num_labeled=c['num_labeled'],
                   metrics={k: v['mean'] for k, v in c['metrics'].items()},
                   ranking_accuracy={k: v['mean'] for k, v in c['ranking_accuracy'].items()})
              for c in s['cycles']]
    runs.append(Run(name, 0, R / 'compare_seed0.json', True, cycles))
result = compare(runs, baseline='RandomStrategy', metric='pascal_voc/mAP')
out = Path(sys.argv[1]); out.mkdir(exist_ok=True)
print(write_all(result, out))
