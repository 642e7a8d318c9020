"""Why the same seed gives other numbers: one cycle-0 training, repeated, per thread count.

    .venv/bin/python bench/determinism.py [--config CONFIG] [--threads 1 2] [--repeats 2]
        [--epochs 4] [--data DIR] [--baseline REV]

Each run is ``tools/al_train.py CONFIG`` for one cycle of ``--epochs``
epochs in its own process, with ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` and
torch's intra-op threads set to the count. Runs are compared by the weights
they end with (largest absolute difference from the first run of the same
thread count, and from the 1-thread run) and by the cycle's test metric.
Same weights at the same count and other weights at another count mean a
result is repeatable on one machine with one thread count, and that the
thread count (the order of float sums in the kernels) changes the
trajectory; the metric spread says by how much. ``--baseline REV`` adds
one run of that git revision (``git archive``d to a temporary folder) at the
first thread count: the same weights as this tree's mean a change since REV
left training as it was.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import REPO, print_table, write_result

DEFAULT_CONFIG = 'configs/active_learning/ll_ssd-tiny_synthetic-voc.py'


def run_once(config: str, work_dir: Path, threads: int, epochs: int, data: str | None,
             tree: Path = REPO) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=str(tree))
    options = ['active_learning.num_cycles=1', f'train_cfg.max_epochs={epochs}',
               f'train_cfg.val_interval={epochs}', f'max_epochs={epochs}']
    if data:
        options += [f'{name}.dataset.data_root={data}' for name in
                    ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(tree / 'tools' / 'al_train.py'), config,
                             '--work-dir', str(work_dir.resolve()), '--cfg-options', *options],
                            env=env, capture_output=True, text=True, cwd=str(tree))
    if result.returncode:
        raise RuntimeError(f'{work_dir}: al_train failed\n{result.stderr[-3000:]}')
    state = json.loads((work_dir / 'al_state.json').read_text())
    metrics = state['cycles'][0]['metrics']
    checkpoint = sorted(work_dir.glob('cycle_00/**/epoch_*.pth'))[-1]
    return dict(threads=threads, tree=str(tree), seconds=round(time.perf_counter() - start, 1),
                metric=next(v for k, v in metrics.items() if k.endswith('mAP') or 'PCK' in k),
                checkpoint=str(checkpoint))


def max_difference(a: str, b: str) -> float:
    sa = torch.load(a, map_location='cpu', weights_only=False)['state_dict']
    sb = torch.load(b, map_location='cpu', weights_only=False)['state_dict']
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa
               if sa[k].is_floating_point())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='experiment config')
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2],
                        help='thread counts to compare')
    parser.add_argument('--repeats', type=int, default=2, help='runs per thread count')
    parser.add_argument('--epochs', type=int, default=4, help='epochs of the cycle-0 training')
    parser.add_argument('--data', help="data_root (default: the config's)")
    parser.add_argument('--work-dir', default='work_dirs/bench_determinism',
                        help='where the runs go')
    parser.add_argument('--baseline', help='a git revision to run once more, at the first '
                        'thread count')
    args = parser.parse_args()

    runs = []
    for threads in args.threads:
        for repeat in range(args.repeats):
            work_dir = Path(args.work_dir) / f'threads{threads}_run{repeat}'
            run = run_once(args.config, work_dir, threads, args.epochs, args.data)
            runs.append(run)
            print(f"threads {threads} run {repeat}: metric {run['metric']:.4f} "
                  f"({run['seconds']} s)", flush=True)
    if args.baseline:
        tree = Path(tempfile.mkdtemp(prefix='determinism_baseline_'))
        archive = subprocess.run(['git', '-C', str(REPO), 'archive', args.baseline],
                                 check=True, capture_output=True).stdout
        subprocess.run(['tar', '-x', '-C', str(tree)], input=archive, check=True)
        (tree / 'data').symlink_to(REPO / 'data')
        run = run_once(args.config, Path(args.work_dir) / f'baseline_{args.baseline}',
                       args.threads[0], args.epochs, args.data, tree)
        run['revision'] = args.baseline
        runs.append(run)
        print(f"baseline {args.baseline}: metric {run['metric']:.4f}", flush=True)
    first = {}
    for run in runs:
        ref = first.setdefault(run['threads'], run)  # the baseline comes last
        run['max_weight_diff_same_threads'] = max_difference(ref['checkpoint'],
                                                             run['checkpoint'])
        run['max_weight_diff_vs_first_count'] = max_difference(runs[0]['checkpoint'],
                                                               run['checkpoint'])
    path = write_result('determinism', dict(config=args.config, epochs=args.epochs, runs=runs))
    print_table([[r.get('revision', 'this tree'), r['threads'], f"{r['metric']:.4f}",
                  f"{r['max_weight_diff_same_threads']:.3g}",
                  f"{r['max_weight_diff_vs_first_count']:.3g}", r['seconds']] for r in runs],
                ['code', 'threads', 'metric', 'max |dw| vs same threads', 'vs first run', 's'])
    print(f'written {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
