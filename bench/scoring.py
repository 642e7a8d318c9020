"""Scoring cost of Learning Loss against bare feature extraction and predict.

On the same test-mode batches (no labels): the LL score (`score_step` with
'pred_loss': backbone, neck, taps and the module) against the bare
`extract_feat` (with the same data preprocessing), and against mmdet's full
`predict` (head, decoding, NMS). Goals: LL / extract_feat <= 1.05, and LL
faster than predict.

    python bench/scoring.py [--configs small full] [--batch-size N] [--batches N]
"""
import argparse

import torch

from common import print_table, summary, task_batches, time_interleaved, write_result
from train_overhead import CONFIGS, build


def measure(config: str, batch_size: int, num_batches: int) -> dict:
    """Seconds per batch of the three ways of running the model, interleaved."""
    model = build(config, 'learning_loss').eval()
    batches = task_batches(config, batch_size, num_batches + 2, train=False)

    def extract(batch):
        data = model.data_preprocessor(batch, False)
        return model.task_model.extract_feat(data['inputs'])

    with torch.no_grad():
        times = time_interleaved({
            'extract_feat': extract,
            'learning_loss_score': lambda batch: model.score_step(batch, ('pred_loss',)),
            'predict': model.test_step,  # head, decoding, NMS / flip test
        }, batches)
    return {k: summary(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--configs', nargs='+', default=['small', 'full'], choices=CONFIGS)
    parser.add_argument('--batch-size', type=int, default=None)
    parser.add_argument('--batches', type=int, default=None)
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    rows, results = [], {}
    for name in args.configs:
        bs = args.batch_size or (32 if gpu else (16 if name == 'small' else 4))
        n = args.batches or (30 if gpu else (12 if name == 'small' else 4))
        measured = measure(CONFIGS[name], bs, n)
        ll = measured['learning_loss_score']['median_s']
        vs_extract = ll / measured['extract_feat']['median_s']
        vs_predict = ll / measured['predict']['median_s']
        results[name] = dict(config=CONFIGS[name], batch_size=bs, batches=n, **measured,
                             ll_over_extract_feat=vs_extract, ll_over_predict=vs_predict,
                             images_per_s={k: bs / v['median_s'] for k, v in measured.items()})
        rows.append([name, bs, *(f'{bs / measured[k]["median_s"]:.1f}'
                                 for k in ('extract_feat', 'learning_loss_score', 'predict')),
                     f'{vs_extract:.3f}', f'{vs_predict:.3f}'])
    print_table(rows, ['config', 'batch', 'extract img/s', 'LL img/s', 'predict img/s',
                       'LL/extract', 'LL/predict'])
    print('goal: LL/extract <= 1.05, LL/predict < 1')
    print('wrote', write_result('scoring', dict(results=results)))


if __name__ == '__main__':
    main()
