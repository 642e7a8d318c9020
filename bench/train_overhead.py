"""Training overhead of Learning Loss: the LL-wrapped model against the same model.

Time per training iteration (forward, losses, backward, SGD step) and peak
memory, same batches, same batch size; each variant runs in its own process
so that CPU peak RSS is its own. Goal: <= 1.05x time and memory.

    python bench/train_overhead.py [--configs small full] [--batch-size N] [--iters N]
        [--amp fp16|bf16]

``--amp``: both variants train under mixed precision, mmengine's
``AmpOptimWrapper`` on a GPU (bf16 autocast of the same ``train_step`` on a
CPU, where that wrapper refuses to run), and the ratio is taken between them.
"""
import argparse
import contextlib
import copy
import json
import subprocess
import sys

import torch

from common import (
    REPO,
    peak_memory_mb,
    print_table,
    reset_peak_memory,
    summary,
    task_batches,
    time_calls,
    write_result,
)

CONFIGS = {
    'small': 'configs/learning_loss/ssd-tiny_ll_synthetic-voc.py',
    'full': 'configs/learning_loss/ssd300_ll_voc0712.py',
    'pose_small': 'configs/learning_loss/hourglass-tiny_ll_synthetic-mpii.py',
    'pose_full': 'configs/learning_loss/hourglass52_ll_mpii-256x256.py',
}


def build(config: str, variant: str):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(str(REPO / config))
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    from mmengine.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    inner = 'detector' if 'detector' in model_cfg else 'estimator'
    model_cfg[inner].backbone.pop('init_cfg', None)  # no pretrained download
    if variant == 'plain':
        model_cfg = model_cfg[inner]
        if inner == 'detector':
            model_cfg.bbox_head.type = 'SSDHead'  # mmdet's own, untouched
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model.to('cuda' if torch.cuda.is_available() else 'cpu').train()


def optim_wrapper(model, amp: str | None):
    from mmengine.optim import AmpOptimWrapper, OptimWrapper
    sgd = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    if amp is None:
        return OptimWrapper(sgd)
    dtype = {'fp16': 'float16', 'bf16': 'bfloat16'}[amp]
    if torch.cuda.is_available():
        return AmpOptimWrapper(optimizer=sgd, dtype=dtype)

    class CpuAutocast(OptimWrapper):
        @contextlib.contextmanager
        def optim_context(self, module):
            with super().optim_context(module), torch.autocast('cpu', dtype=torch.bfloat16):
                yield
    return CpuAutocast(sgd)


def run_variant(config: str, variant: str, batch_size: int, iters: int,
                amp: str | None = None) -> dict:
    model = build(config, variant)
    optim = optim_wrapper(model, amp)
    batches = task_batches(config, batch_size, iters + 2, train=True)
    if torch.cuda.is_available():
        # The first GEMM allocates cuBLAS's workspace (~65 MiB on H100), fixed
        # in size and present in any real job; SSD itself runs only cuDNN
        # convs, so without this the module's Linear layers would be charged
        # for it.
        torch.ones(8, 8, device='cuda') @ torch.ones(8, 8, device='cuda')
    reset_peak_memory()
    times = time_calls(lambda b: model.train_step(b, optim), batches)
    return dict(summary(times), peak_mb=peak_memory_mb())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--configs', nargs='+', default=['small', 'full'], choices=CONFIGS)
    parser.add_argument('--batch-size', type=int, default=None,
                        help='default: 16 (small) and 4 (full) on CPU, 32 on GPU')
    parser.add_argument('--iters', type=int, default=None)
    parser.add_argument('--amp', choices=['fp16', 'bf16'],
                        help='train both variants under mixed precision')
    parser.add_argument('--variant', help=argparse.SUPPRESS)
    parser.add_argument('--config', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # child process: one measurement
        print(json.dumps(run_variant(args.config, args.variant, args.batch_size, args.iters,
                                     args.amp)))
        return
    gpu = torch.cuda.is_available()
    rows, results = [], {}
    for name in args.configs:
        bs = args.batch_size or (32 if gpu else (16 if name == 'small' else 4))
        iters = args.iters or (30 if gpu else (20 if name == 'small' else 4))
        measured = {}
        for variant in ('plain', 'learning_loss'):
            out = subprocess.run(
                [sys.executable, __file__, '--variant', variant, '--config', CONFIGS[name],
                 '--batch-size', str(bs), '--iters', str(iters)]
                + (['--amp', args.amp] if args.amp else []),
                capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f'{name}/{variant} failed:\n{out.stderr[-3000:]}')
            measured[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        time_ratio = measured['learning_loss']['median_s'] / measured['plain']['median_s']
        mem_ratio = measured['learning_loss']['peak_mb'] / measured['plain']['peak_mb']
        results[name] = dict(config=CONFIGS[name], batch_size=bs, iters=iters, amp=args.amp,
                             **measured,
                             time_ratio=time_ratio, memory_ratio=mem_ratio)
        rows.append([name, bs, f'{measured["plain"]["median_s"] * 1000:.1f}',
                     f'{measured["learning_loss"]["median_s"] * 1000:.1f}', f'{time_ratio:.3f}',
                     f'{measured["plain"]["peak_mb"]:.0f}',
                     f'{measured["learning_loss"]["peak_mb"]:.0f}', f'{mem_ratio:.3f}'])
    print_table(rows, ['config', 'batch', 'plain ms/it', 'LL ms/it', 'time x', 'plain MiB',
                       'LL MiB', 'memory x'])
    print('goal: time x <= 1.05, memory x <= 1.05')
    print('wrote', write_result('train_overhead', dict(results=results)))


if __name__ == '__main__':
    main()
