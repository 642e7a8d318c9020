"""Scoring cost of every strategy, as a ratio to Learning Loss scoring on the same candidates.

For each registered strategy that applies to the config's task: the time of
its scoring passes over the candidates (and over the labeled set, for
strategies that ask for it) plus its ``select``, against Learning Loss on
the same candidate batches, measured in one run, interleaved round by
round. Also the forward passes each candidate costs (committees and views
cost several). Scoring runs through ``score_batches``, the same per-batch
code as the Runner's ``ScoreLoop``, without its data loading.

    python bench/strategy_cost.py [--config small|pose_small|two_stage] \
        [--candidates N] [--labeled L] [--rounds R] [--fp16] [--only NAME ...]
"""
import argparse
import copy
import statistics
import time

import numpy as np
import torch
from mmengine.registry import DefaultScope
from mmengine.runner.amp import autocast

from common import REPO, print_table, synchronize, task_batches, write_result
from train_overhead import CONFIGS, build

CONFIGS = dict(CONFIGS, two_stage='configs/learning_loss/faster-rcnn-tiny_ll_synthetic-voc.py')
TASKS = {'mmdet': 'detection', 'mmpose': 'pose'}
#: Options a strategy needs to be built (or to stay small enough to time).
OPTIONS = {
    'OracleLossStrategy': None,          # reads labels: a diagnostic, not timed
    'VAALStrategy': dict(epochs=2),
}


def strategies_for(task: str, only: list[str] | None, model=None) -> dict:
    """Every registered strategy that applies to the task and whose outputs the model gives."""
    from mmal.registry import STRATEGIES
    out = {}
    for name in sorted(STRATEGIES.module_dict):
        if only and name not in only or OPTIONS.get(name, {}) is None:
            continue
        try:
            with DefaultScope.overwrite_default_scope('mmal'):
                out[name] = STRATEGIES.build(dict(type=name, **OPTIONS.get(name, {})),
                                             default_args=dict(task=task))
        except (ValueError, TypeError) as err:  # the task does not apply
            print(f'skip {name}: {err}')
            continue
        wanted = {o for passes in (out[name].candidate_passes(), out[name].labeled_passes())
                  for p in passes.values() for o in p.outputs}
        missing = type(model).unsupported_outputs(wanted) if model is not None else []
        if missing:
            print(f'skip {name}: {type(model).__name__} does not give {missing}')
            del out[name]
    return out


def time_strategy(strategy, model, candidates: list, labeled: list, k: int, fp16: bool
                  ) -> float:
    from mmal.scoring import score_batches
    synchronize()
    start = time.perf_counter()
    with autocast(enabled=fp16):
        cand = score_batches(model, candidates, strategy.candidate_passes()) \
            if strategy.candidate_passes() else dict(num_samples=sum(_size(b) for b in candidates))
        lab = score_batches(model, labeled, strategy.labeled_passes()) \
            if strategy.labeled_passes() else dict(num_samples=sum(_size(b) for b in labeled))
    strategy.select(cand, lab, k, np.random.default_rng(0))
    synchronize()
    return time.perf_counter() - start


def _size(batch) -> int:
    return len(batch['data_samples'])


def passes_per_candidate(strategy) -> int:
    return sum(p.members for p in strategy.candidate_passes().values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--config', default='small', choices=CONFIGS)
    parser.add_argument('--candidates', type=int, default=None)
    parser.add_argument('--labeled', type=int, default=None)
    parser.add_argument('--batch-size', type=int, default=None)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--fp16', action='store_true', help='autocast (GPU)')
    parser.add_argument('--only', nargs='+', default=None)
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    config = CONFIGS[args.config]
    bs = args.batch_size or (32 if gpu else 8)
    num_candidates = args.candidates or (512 if gpu else 64)
    num_labeled = args.labeled or num_candidates // 2
    model = build(config, 'learning_loss').eval()
    from mmengine.config import Config
    task = TASKS[Config.fromfile(str(REPO / config)).get('default_scope', 'mmdet')]
    batches = task_batches(config, bs, (num_candidates + num_labeled) // bs, train=False)
    candidates, labeled = batches[:num_candidates // bs], batches[num_candidates // bs:]
    strategies = strategies_for(task, args.only, model)
    strategies.setdefault('LearningLossStrategy', strategies_for(
        task, ['LearningLossStrategy'])['LearningLossStrategy'])
    k = max(1, num_candidates // 8)
    times = {name: [] for name in strategies}
    for strategy in strategies.values():  # warm-up
        time_strategy(copy.deepcopy(strategy), model, candidates[:1], labeled[:1], 1, args.fp16)
    for _ in range(args.rounds):
        for name, strategy in strategies.items():
            times[name].append(time_strategy(strategy, model, candidates, labeled, k,
                                             args.fp16))
    ll = statistics.median(times['LearningLossStrategy'])
    rows, results = [], {}
    for name, strategy in strategies.items():
        median = statistics.median(times[name])
        results[name] = dict(median_s=median, times_s=times[name], ratio_to_ll=median / ll,
                             forward_passes_per_candidate=passes_per_candidate(strategy),
                             labeled_passes=len(strategy.labeled_passes()))
        rows.append([name, f'{median:.2f}', f'{median / ll:.2f}',
                     passes_per_candidate(strategy), len(strategy.labeled_passes())])
    rows.sort(key=lambda r: float(r[2]))
    print_table(rows, ['strategy', 'seconds', 'x LL', 'passes/candidate', 'labeled passes'])
    print('wrote', write_result(f'strategy_cost_{args.config}', dict(
        config=config, task=task, candidates=num_candidates, labeled=num_labeled,
        batch_size=bs, k=k, fp16=args.fp16, rounds=args.rounds, results=results)))


if __name__ == '__main__':
    main()
