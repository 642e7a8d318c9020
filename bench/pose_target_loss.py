"""Per-sample target losses of the pose estimator: one call per sample vs batched.

`LearningLossPoseEstimator.task_loss` evaluates every recorded call of the
head's loss module (`KeypointMSELoss` with target weights, once per
hourglass stack) for each sample. On the same head outputs and targets
(training batches through the config's own pipeline, features from the model
in eval mode), this times, interleaved:

- `loop` / `batched`: the per-sample values alone, summed over the recorded
  calls: one module call per sample (`looped_sample_values`) against one
  vmapped call (`batched_sample_values`);
- `task_loss_loop` / `task_loss_batched`: the whole `task_loss` (mmpose's
  head loss, the recording, the per-sample values) with the loss type held
  on the loop or on the batched way.

and checks that both ways give the same values.

    python bench/pose_target_loss.py [--configs pose_small pose_full] [--batch-size N]
                                     [--batches N]
"""
import argparse

import torch

from mmal.models.pose.learning_loss_pose_estimator import loss_calls
from mmal.models.replay import batched_sample_values, looped_sample_values

from common import device, print_table, summary, task_batches, time_interleaved, write_result
from train_overhead import CONFIGS, build


def prepare(model, batches: list) -> list[dict]:
    """Features, data samples and recorded loss-module calls of each batch."""
    prepared = []
    estimator = model.task_model
    with torch.no_grad():
        for batch in batches:
            data = model.data_preprocessor(batch, True)
            feats, _ = model._extract(data['inputs'])
            with loss_calls(model._loss_modules) as calls:
                estimator.head.loss(feats, data['data_samples'], train_cfg=estimator.train_cfg)
            prepared.append(dict(feats=feats, data_samples=data['data_samples'],
                                 records=calls))
    return prepared


def per_sample(values_fn, item: dict) -> torch.Tensor:
    batch_size = len(item['data_samples'])
    return sum(values_fn(module, args, kwargs, batch_size)
               for module, args, kwargs, _ in item['records'])


def measure(config: str, batch_size: int, num_batches: int) -> dict:
    model = build(config, 'learning_loss').eval()
    items = prepare(model, task_batches(config, batch_size, num_batches + 2, train=True))
    kinds = {type(module) for item in items for module, *_ in item['records']}
    records_per_batch = len(items[0]['records'])

    with torch.no_grad():
        # the same values both ways
        max_diff = max((per_sample(batched_sample_values, item)
                        - per_sample(looped_sample_values, item)).abs().max().item()
                       for item in items)
        max_value = max(per_sample(looped_sample_values, item).abs().max().item()
                        for item in items)

        def task_loss(batched: bool):
            def run(item):
                model._batched_loss_types.update(dict.fromkeys(kinds, batched))
                return model.task_loss(item['feats'], item['data_samples'])
            return run

        times = time_interleaved({
            'loop': lambda item: per_sample(looped_sample_values, item),
            'batched': lambda item: per_sample(batched_sample_values, item),
            'task_loss_loop': task_loss(False),
            'task_loss_batched': task_loss(True),
        }, items)
    measured = {k: summary(v) for k, v in times.items()}
    return dict(config=config, batch_size=batch_size, batches=num_batches,
                loss_modules=sorted(k.__name__ for k in kinds),
                loss_calls_per_batch=records_per_batch, **measured,
                speedup=measured['loop']['median_s'] / measured['batched']['median_s'],
                task_loss_speedup=(measured['task_loss_loop']['median_s']
                                   / measured['task_loss_batched']['median_s']),
                max_abs_diff=max_diff, max_abs_value=max_value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--configs', nargs='+', default=['pose_small'],
                        choices=['pose_small', 'pose_full'])
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--batches', type=int, default=None,
                        help='timed batches: default 20 on CPU, 50 on GPU')
    args = parser.parse_args()
    n = args.batches or (50 if device() == 'cuda' else 20)
    rows, results = [], {}
    for name in args.configs:
        r = measure(CONFIGS[name], args.batch_size, n)
        results[name] = r
        ms = {k: 1e3 * r[k]['median_s']
              for k in ('loop', 'batched', 'task_loss_loop', 'task_loss_batched')}
        rows.append([name, args.batch_size, r['loss_calls_per_batch'],
                     f'{ms["loop"]:.2f}', f'{ms["batched"]:.2f}', f'{r["speedup"]:.1f}x',
                     f'{ms["task_loss_loop"]:.2f}', f'{ms["task_loss_batched"]:.2f}',
                     f'{r["task_loss_speedup"]:.1f}x', f'{r["max_abs_diff"]:.1e}'])
    print_table(rows, ['config', 'batch', 'calls', 'loop ms', 'batched ms', 'speed-up',
                       'task_loss loop ms', 'task_loss batched ms', 'speed-up', 'max |diff|'])
    print('wrote', write_result('pose_target_loss', dict(results=results)))


if __name__ == '__main__':
    main()
