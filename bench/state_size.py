"""Size and write time of ``al_state.json`` for a big pool.

    python bench/state_size.py [--pool 100000] [--cycles 10] [--initial 1000] [--budget 1000]

Builds the state an experiment writes (labeled ids per cycle, stored as
the ids each cycle added; the K selected with scores, metrics, timings,
ranking accuracy), cycle by cycle,
and times the atomic write each phase does (temporary file, fsync, rename,
plus the copy kept as ``al_state.prev.json``), against writing the same
bytes with a plain ``write_text`` in the same run.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import write_result  # noqa: E402
from mmal.loop.state import ExperimentState  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pool', type=int, default=100_000)
    parser.add_argument('--cycles', type=int, default=10)
    parser.add_argument('--initial', type=int, default=1000)
    parser.add_argument('--budget', type=int, default=1000)
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ids = [f'VOC2007/JPEGImages/{i:06d}' for i in range(args.pool)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        state = ExperimentState.create(tmp, settings=dict(seed=0), config_digests={},
                                       versions={}, pool_ids=ids)
        unlabeled = rng.permutation(args.pool)
        labeled = sorted(ids[i] for i in unlabeled[:args.initial])
        taken = args.initial
        for c in range(args.cycles):
            entry = state.start_cycle(c, labeled)
            picks = unlabeled[taken:taken + args.budget]
            taken += args.budget
            state.mark(c, 'selected', metrics={'pascal_voc/mAP': 0.5, 'pascal_voc/AP50': 0.5},
                       timings=dict(train_s=1.0, eval_s=1.0, score_s=1.0),
                       selected=[dict(id=ids[i], score=float(rng.random())) for i in picks],
                       num_candidates=10_000, ranking_accuracy=dict(
                           num_samples=500, strategy=0.7, LearningLossStrategy=0.7,
                           EntropyStrategy=0.6))
            labeled = labeled + [p['id'] for p in entry['selected']]  # as the loop does
            size = state.path.stat().st_size
            atomic = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                state.save()
                atomic.append(time.perf_counter() - start)
            text = state.path.read_text()
            plain_path = Path(tmp) / 'plain.json'
            plain = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                plain_path.write_text(text)
                plain.append(time.perf_counter() - start)
            rows.append(dict(cycle=c, labeled=len(entry['labeled']), state_bytes=size,
                             save_s=statistics.median(atomic),
                             plain_write_s=statistics.median(plain)))
            print(f'cycle {c}: {len(entry["labeled"])} labeled, state {size / 1e6:.2f} MB, '
                  f'atomic save {rows[-1]["save_s"] * 1e3:.1f} ms (plain write '
                  f'{rows[-1]["plain_write_s"] * 1e3:.1f} ms)')
    path = write_result('state_size', dict(args=vars(args), cycles=rows))
    print(f'results: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
