"""Scoring big pools: time per candidate and memory, for Learning Loss and core-set.

    python bench/big_pool.py [--sizes 1000 10000 50000] [--batch-size 32] [--workers 2]
        [--spill-mb 0] [--budget 100]

For each pool size, a folder of that many images (hard links to generated
VOC-format scenes, so each is decoded as a real file) is scored through
the Runner with ``ScoreLoop`` (decode + pipeline + model), as a cycle
does: Learning Loss's pass (``pred_loss``) and core-set's (``features``),
each in its own process so peaks do not mix; then core-set's k-center
selection of ``--budget`` on those features. Reported per size: seconds
per candidate, and the peak *anonymous* resident memory (what the pool
costs; file-backed pages of memory-mapped outputs are the page cache's).
With ``--spill-mb 0`` every fixed-shape output is memory-mapped, as a
pool whose outputs pass ``active_learning.score_spill_mb`` is. (The
end-to-end rate against the model alone on preloaded batches is
``bench/scoring.py``'s.)
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, generated_voc_root, print_table, write_result  # noqa: E402

CONFIG = 'configs/learning_loss/ssd-tiny_ll_synthetic-voc.py'


def anon_rss_mb() -> float:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('RssAnon:'):
            return int(line.split()[1]) / 1024
    return float('nan')


class PeakSampler(threading.Thread):
    """Samples the process's anonymous RSS every 50 ms; ``peak`` in MiB."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.stopped = anon_rss_mb(), False

    def run(self) -> None:
        while not self.stopped:
            self.peak = max(self.peak, anon_rss_mb())
            time.sleep(0.05)


def image_folder(size: int) -> Path:
    source = sorted((Path(generated_voc_root()) / 'VOC2007' / 'JPEGImages').glob('*.jpg'))
    folder = Path(os.environ.get('MMAL_BENCH_DATA', '/tmp')) / f'mmal_bench_pool_{size}'
    if not folder.exists() or len(list(folder.iterdir())) != size:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(size):
            target = folder / f'{i:06d}.jpg'
            if not target.exists():
                os.link(source[i % len(source)], target)
    return folder


def score(size: int, output: str, batch_size: int, workers: int, spill_mb: float | None,
          budget: int, pin_memory: bool = False) -> dict:
    """One scoring pass (and core-set's selection) in this process."""
    import copy

    import numpy as np
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmal  # noqa: F401
    from mmal.loop.runner import CycleRunner
    from mmal.strategies import CoreSetStrategy
    cfg = Config.fromfile(str(REPO / CONFIG))
    init_default_scope('mmdet')
    pipeline = [t for t in cfg.test_dataloader.dataset.pipeline
                if t['type'] != 'LoadAnnotations']
    work = Path(f'/tmp/mmal_bench_big_pool/{size}_{output}')
    cfg.test_dataloader = dict(
        batch_size=batch_size, num_workers=workers, persistent_workers=False,
        pin_memory=pin_memory, sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='UnlabeledImageDataset', ann_file=str(image_folder(size)),
                     pipeline=pipeline))
    cfg.test_cfg = dict(type='ScoreLoop', passes=dict(main=dict(outputs=(output,))),
                        spill_dir=str(work / 'spill'),
                        spill_bytes=None if spill_mb is None else int(spill_mb * 2**20))
    cfg.work_dir = str(work)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=10**9)
    cfg.train_dataloader = cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.train_cfg = cfg.optim_wrapper = cfg.param_scheduler = None
    runner = CycleRunner.from_cfg(copy.deepcopy(cfg))
    sampler = PeakSampler()
    sampler.start()
    start = time.perf_counter()
    outputs = runner.test()
    seconds = time.perf_counter() - start
    result = dict(size=size, output=output, seconds=seconds, per_candidate_ms=1e3 * seconds / size,
                  scoring_peak_anon_mb=max(sampler.peak, anon_rss_mb()),
                  memmapped=isinstance(outputs[output], np.memmap))
    if output == 'features':
        rng = np.random.default_rng(0)
        labeled = rng.choice(size, size=min(100, size), replace=False)
        start = time.perf_counter()
        CoreSetStrategy(task='detection').select(
            outputs, {'features': np.asarray(outputs['features'][np.sort(labeled)]),
                      'num_samples': len(labeled)}, budget, rng)
        result['select_s'] = time.perf_counter() - start
        result['select_per_candidate_ms'] = 1e3 * result['select_s'] / size
    sampler.stopped = True
    result['peak_anon_mb'] = max(sampler.peak, anon_rss_mb())
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[1000, 10000, 50000])
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--spill-mb', type=float, default=0)
    parser.add_argument('--budget', type=int, default=100)
    parser.add_argument('--one', help=argparse.SUPPRESS)  # a child: SIZE:OUTPUT:PIN
    args = parser.parse_args()
    if args.one:
        size, output, pin = args.one.split(':')
        print(json.dumps(score(int(size), output, args.batch_size, args.workers,
                               args.spill_mb, args.budget, pin_memory=pin == '1')))
        return 0
    rows = []
    for size in args.sizes:
        image_folder(size)
        for output in ('pred_loss', 'features'):
            child = subprocess.run(
                [sys.executable, __file__, '--one', f'{size}:{output}:0', '--batch-size',
                 str(args.batch_size), '--workers', str(args.workers), '--spill-mb',
                 str(args.spill_mb), '--budget', str(args.budget)],
                capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
            if child.returncode:
                print(child.stderr[-3000:])
                return 1
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{size:>6} {output:>9}: {r['per_candidate_ms']:.2f} ms/candidate, peak anon "
                  f"{r['scoring_peak_anon_mb']:.0f} MiB scoring, {r['peak_anon_mb']:.0f} MiB "
                  'with the selection' + (f", k-center {r['select_s']:.1f} s"
                                          if 'select_s' in r else ''), flush=True)
    print_table([[r['size'], r['output'], f"{r['per_candidate_ms']:.2f}",
                  f"{r['scoring_peak_anon_mb']:.0f}", f"{r['peak_anon_mb']:.0f}",
                  f"{r.get('select_s', float('nan')):.2f}"]
                 for r in rows], ['candidates', 'output', 'ms/candidate', 'scoring peak MiB',
                                  'with selection MiB', 'k-center s'])
    path = write_result('big_pool', dict(args=vars(args), rows=rows))
    print(f'results: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
