"""End-to-end scoring against the model alone: which loader settings close the gap.

    python bench/scoring_pipeline.py [--config small|pose_small] [--images N]
        [--batch-size N] [--rounds N] [--workers 0 1 2 ...]

On the same N generated images (VOC-format for the small SSD, MPII-format
for the small hourglass), images/s of:

* ``model``: the model alone, Learning Loss scoring as ``ScoreLoop`` runs it
  (``run_passes`` with ``pred_loss``, the outputs split per sample into an
  ``OutputStore``) on batches already read, decoded, transformed and
  collated in memory;
* ``e2e``: the same scoring fed by the real scoring dataloader
  (``Scorer.loader_cfg``: file read, JPEG decode, the test pipeline,
  collate) for each loader setting: workers (0, 1, 2, 4, ... up to
  ``os.cpu_count()``), ``pin_memory``, ``prefetch_factor`` and
  ``persistent_workers``;
* ``load``: that dataloader alone, without the model, so the table shows
  whether loading or the model bounds a setting.

A pass is timed whole, from the loader's iterator (worker start-up
included, as a scoring pass pays it) to the last batch. ``ScoreLoop``
builds its loader afresh for each pass, so persistent workers never reach
a second pass in a cycle; their rows time a second pass over the same
loader, to show what they would save if the loader were kept. With CUDA,
batches move with ``non_blocking`` when memory is pinned. Settings are interleaved over
``--rounds`` rounds, order rotating; each figure is the fastest round (other
work on the machine only slows a pass down), with the median beside it.

Writes ``bench/results/scoring_pipeline_<config>_<device>_<date>.json``
and a ``.md`` table beside it.
"""
import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from common import REPO, print_table, timed_pass, write_result
from train_overhead import CONFIGS, build

#: Within this share of the fastest setting, a cheaper setting is as good.
TIE = 0.05
#: A default this much slower than the best setting is worth changing.
LARGE_GAP = 0.10


@dataclasses.dataclass(frozen=True)
class LoaderSetting:
    """The dataloader keys this benchmark sweeps."""

    num_workers: int
    pin_memory: bool = False
    prefetch_factor: int | None = None
    persistent_workers: bool = False

    @property
    def label(self) -> str:
        parts = [f'w{self.num_workers}', 'pin' if self.pin_memory else 'nopin']
        if self.num_workers:
            parts.append(f'pf{self.prefetch_factor}')
            parts.append('persist' if self.persistent_workers else 'fresh')
        return '/'.join(parts)

    def cost(self) -> tuple:
        """Orders equally fast settings: fewer processes, less memory held first."""
        return (self.num_workers, self.persistent_workers, self.pin_memory,
                self.prefetch_factor or 0)

    def apply(self, loader_cfg: dict) -> dict:
        cfg = copy.deepcopy(loader_cfg)
        cfg.update(num_workers=self.num_workers, pin_memory=self.pin_memory,
                   persistent_workers=self.persistent_workers)
        cfg.pop('prefetch_factor', None)
        if self.num_workers:  # torch refuses a prefetch factor without workers
            cfg['prefetch_factor'] = self.prefetch_factor
        return cfg


def worker_counts(cpu_count: int) -> list[int]:
    """0, 1, 2, 4, ... up to the machine's cores."""
    counts, n = [0, 1], 2
    while n <= cpu_count:
        counts.append(n)
        n *= 2
    return counts


def loader_settings(workers: Iterable[int]) -> list[LoaderSetting]:
    """Every combination; prefetching and kept workers only where there are workers."""
    settings = []
    for w in workers:
        for pin in (False, True):
            if not w:
                settings.append(LoaderSetting(0, pin))
                continue
            for prefetch in (2, 4):
                for persistent in (False, True):
                    settings.append(LoaderSetting(w, pin, prefetch, persistent))
    return settings


def default_setting(loader_cfg: dict) -> LoaderSetting:
    """What the scoring loader runs with today: its keys, else torch's defaults."""
    workers = loader_cfg.get('num_workers', 0)
    return LoaderSetting(workers, bool(loader_cfg.get('pin_memory', False)),
                         loader_cfg.get('prefetch_factor', 2) if workers else None,
                         bool(loader_cfg.get('persistent_workers', False)) and workers > 0)


# ------------------------------------------------------------------ data
def generated_root(task: str, images: int) -> str:
    """A generated set of ``images`` pool images for ``task``, made once and kept."""
    base = Path(os.environ.get('MMAL_BENCH_DATA', tempfile.gettempdir()))
    if task == 'pose':
        from mmal.datasets import MPIISceneConfig, generate_mpii_dataset
        root = base / f'mmal_bench_mpii_{images}'
        generate_mpii_dataset(root, MPIISceneConfig(num_train=images, num_val=4, seed=7,
                                                    min_size=256, max_size=320))
    else:
        from mmal.datasets import VOCSceneConfig, generate_voc_dataset
        root = base / f'mmal_bench_voc_{images}'
        generate_voc_dataset(root, VOCSceneConfig(num_trainval=images, num_test=4, seed=7,
                                                  min_size=280, max_size=420))
    return str(root) + '/'


def scoring_loader_cfg(config: str, images: int, batch_size: int | None) -> dict:
    """The loader a cycle's scoring pass builds over the first ``images`` pool samples.

    The loader comes from :meth:`mmal.scoring.Scorer.loader_cfg` with the
    default scoring settings (``batch_size`` overrides theirs).
    """
    import mmal  # noqa: F401  (registers our modules)
    from mmal.datasets import build_pool, leaf_configs
    from mmal.scoring import Scorer, ScoringSettings
    cfg = Config.fromfile(str(REPO / config))
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    task = 'pose' if scope == 'mmpose' else 'detection'
    root = generated_root(task, images)
    for loader in (cfg.train_dataloader, cfg.test_dataloader):
        for leaf in leaf_configs(loader.dataset):
            leaf['data_root'] = root
    settings = ScoringSettings()
    if batch_size:
        settings = dataclasses.replace(settings, batch_size=batch_size)
    pool = build_pool(cfg.train_dataloader.dataset)
    # A pose image holds one or two people: take the first ``images`` samples.
    positions = list(range(min(images, len(pool))))
    scorer = Scorer(cfg, pool, settings, make_runner=None,
                    work_dir=Path(tempfile.gettempdir()))
    return scorer.loader_cfg(positions)


def build_loader(loader_cfg: dict):
    # The Runner builds a test loader with its seed (workers get seeded init).
    return Runner.build_dataloader(copy.deepcopy(loader_cfg), seed=0)


# ------------------------------------------------------------------ timing
class Scorer:
    """One batch of Learning Loss scoring as ``ScoreLoop.run_iter`` does it.

    Outputs go to an ``OutputStore`` of ``num_samples`` rows; the batch
    after the last row starts a new one (the next pass).
    """

    def __init__(self, model, num_samples: int) -> None:
        from mmal.scoring import ScorePass
        self.model = model
        self.passes = {'main': ScorePass(('pred_loss',))}
        self.num_samples = num_samples
        self.store = None
        self.next_row = 0

    @torch.no_grad()
    def __call__(self, batch: dict) -> None:
        from mmal.scoring.score_loop import run_passes, split_per_sample
        from mmal.scoring.store import OutputStore
        if self.store is None or self.next_row >= self.num_samples:
            self.store, self.next_row = OutputStore(self.num_samples), 0
        items = split_per_sample(run_passes(self.model, batch, self.passes))
        rows = list(range(self.next_row, self.next_row + len(items)))
        self.next_row += len(items)
        self.store.add(rows, items)


def loader_pass(loader_cfg: dict, setting: LoaderSetting, step: Callable | None) -> dict:
    """A fresh loader's pass; with persistent workers, its second pass (workers kept)."""
    loader = build_loader(setting.apply(loader_cfg))
    if setting.persistent_workers:
        timed_pass(loader, step)
    result = timed_pass(loader, step)
    del loader
    return result


def best_of(runs: list[dict]) -> dict:
    """The fastest round, and the median beside it.

    Other work on the machine only ever slows a pass down, and on a shared
    CPU it does so a lot: a process taking one of two cores slows the
    model's two intra-op threads tenfold and more. The fastest round is the
    machine's own figure; the spread of ``runs`` shows how quiet it was.
    """
    best = max(runs, key=lambda r: r['images_per_s'])
    return dict(images_per_s=best['images_per_s'],
                steady_images_per_s=best['steady_images_per_s'],
                first_batch_s=best['first_batch_s'],
                median_images_per_s=statistics.median(r['images_per_s'] for r in runs),
                runs=[round(r['images_per_s'], 1) for r in runs])


# ------------------------------------------------------------------ the run
def interleaved(jobs: dict[str, Callable[[], dict]], rounds: int) -> dict[str, list[dict]]:
    """Each job's pass once per round, the order rotating from round to round."""
    runs: dict[str, list[dict]] = {name: [] for name in jobs}
    names = list(jobs)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            print(f'round {r + 1}/{rounds}: {name}', flush=True)
            runs[name].append(jobs[name]())
    return runs


def measure(config: str, images: int, batch_size: int | None, rounds: int,
            workers: list[int]) -> dict:
    """Every job of the module docstring on one config's generated images."""
    loader_cfg = scoring_loader_cfg(config, images, batch_size)
    cuda = torch.cuda.is_available()
    model = build(config, 'learning_loss').eval()
    batches = list(build_loader(LoaderSetting(0).apply(loader_cfg)))
    score = Scorer(model, sum(len(b['data_samples']) for b in batches))
    settings = loader_settings(workers)
    default = default_setting(loader_cfg)
    if default not in settings:
        settings.append(default)

    def loader_job(setting: LoaderSetting, with_model: bool) -> Callable[[], dict]:
        def job() -> dict:
            # Pinned batches can be copied while the model runs; others cannot.
            model.data_preprocessor._non_blocking = cuda and setting.pin_memory
            try:
                return loader_pass(loader_cfg, setting, score if with_model else None)
            finally:
                model.data_preprocessor._non_blocking = False
        return job

    jobs = {'model': lambda: timed_pass(batches, score)}
    for s in settings:
        jobs[f'load:{s.label}'] = loader_job(s, with_model=False)
        jobs[f'e2e:{s.label}'] = loader_job(s, with_model=True)
    # Warm-up: the allocator, cuDNN's autotuning, the page cache.
    for name in ['model', 'model', f'load:{LoaderSetting(0).label}']:
        jobs[name]()
    runs = interleaved(jobs, rounds)

    model_rate = best_of(runs['model'])['images_per_s']
    rows = []
    for s in settings:
        load, e2e = best_of(runs[f'load:{s.label}']), best_of(runs[f'e2e:{s.label}'])
        rows.append(dict(setting=dataclasses.asdict(s), label=s.label, default=s == default,
                         non_blocking=cuda and s.pin_memory,
                         load=load, e2e=e2e, e2e_over_model=e2e['images_per_s'] / model_rate,
                         bound=bound_by(load['images_per_s'], model_rate)))
    return dict(config=config, images=score.num_samples, batch_size=loader_cfg['batch_size'],
                rounds=rounds, cuda=cuda, model=best_of(runs['model']), rows=rows,
                default=default.label, recommended=recommend(rows),
                pin_memory_note=None if cuda else
                'no CUDA device: torch ignores pin_memory, so pin rows repeat the nopin ones')


def bound_by(load_rate: float, model_rate: float) -> str:
    """The slower of loading and the model, each alone; 'both' within :data:`TIE`."""
    if load_rate < (1 - TIE) * model_rate:
        return 'loading'
    if model_rate < (1 - TIE) * load_rate:
        return 'model'
    return 'both'


def recommend(rows: list[dict]) -> dict:
    """The cheapest setting within :data:`TIE` of the fastest fresh pass, against the default.

    Only fresh passes compete: ``ScoreLoop`` builds a new loader per pass,
    so persistent workers' second pass never happens in a cycle.
    """
    fresh = [r for r in rows if not r['setting']['persistent_workers']]
    best_rate = max(r['e2e']['images_per_s'] for r in fresh)
    close = [r for r in fresh if r['e2e']['images_per_s'] >= (1 - TIE) * best_rate]
    pick = min(close, key=lambda r: LoaderSetting(**r['setting']).cost())
    default = next(r for r in rows if r['default'])
    gap = pick['e2e']['images_per_s'] / default['e2e']['images_per_s'] - 1
    return dict(label=pick['label'], setting=pick['setting'],
                images_per_s=pick['e2e']['images_per_s'], fastest_images_per_s=best_rate,
                default_label=default['label'],
                default_images_per_s=default['e2e']['images_per_s'],
                gain_over_default=gap, change_default=gap > LARGE_GAP)


def markdown(result: dict) -> str:
    r = result
    model = r['model']['images_per_s']
    rec = r['recommended']
    lines = [
        f"# Scoring pipeline: {r['config']}",
        '',
        f"{r['images']} images, batch {r['batch_size']}, fastest of {r['rounds']} rounds, "
        f"{r['machine']['torch_threads']} torch threads, "
        f"{r['machine']['device']} ({r['machine']['cpu_count']} CPU cores, "
        f"{r['machine'].get('gpu', 'no GPU')}), load average "
        f"{r['load_average']['before'][0]:.1f} before, {r['load_average']['after'][0]:.1f} after.",
        '',
        f'Model alone (pre-collated batches in memory): **{model:.0f} images/s**.',
        '',
        '| workers | pin | prefetch | persistent | load img/s | e2e img/s | e2e / model '
        '| bound by | first batch s | e2e img/s after the first batch |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ]
    for row in r['rows']:
        s = row['setting']
        mark = ' (default)' if row['default'] else ''
        mark += ' **(recommended)**' if row['label'] == rec['label'] else ''
        lines.append(
            f"| {s['num_workers']}{mark} | {s['pin_memory']} | {s['prefetch_factor'] or '—'} | "
            f"{s['persistent_workers']}{' (2nd pass)' if s['persistent_workers'] else ''} | "
            f"{row['load']['images_per_s']:.0f} | {row['e2e']['images_per_s']:.0f} | "
            f"{row['e2e_over_model']:.2f} | {row['bound']} | {row['e2e']['first_batch_s']:.2f} | "
            f"{row['e2e']['steady_images_per_s']:.0f} |")
    lines += ['', f"Recommended: `{rec['label']}` at {rec['images_per_s']:.0f} images/s, "
              f"{100 * rec['gain_over_default']:+.0f} % over the default `{rec['default_label']}` "
              f"({rec['default_images_per_s']:.0f} images/s)."]
    if r['pin_memory_note']:
        lines += ['', r['pin_memory_note'] + '.']
    return '\n'.join(lines) + '\n'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default='small', choices=['small', 'pose_small'])
    parser.add_argument('--images', type=int, default=None,
                        help='images scored per pass (default 512 on CPU, 2048 with CUDA)')
    parser.add_argument('--batch-size', type=int, default=None,
                        help="default: active_learning.score_batch_size's default")
    parser.add_argument('--rounds', type=int, default=None,
                        help='rounds of every job (default 5 on CPU, 3 with CUDA)')
    parser.add_argument('--workers', type=int, nargs='+', default=None,
                        help='worker counts to sweep (default 0, 1, 2, 4, ... up to the cores)')
    parser.add_argument('--torch-threads', type=int, default=None,
                        help="the model's intra-op threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    cuda = torch.cuda.is_available()
    images = args.images or (2048 if cuda else 512)
    rounds = args.rounds or (3 if cuda else 5)
    workers = args.workers or worker_counts(os.cpu_count() or 1)
    load_before = os.getloadavg()
    result = measure(CONFIGS[args.config], images, args.batch_size, rounds, workers)
    # Other work on the machine skews a CPU run; the reader can judge by these.
    result['load_average'] = dict(before=load_before, after=os.getloadavg())
    model = result['model']['images_per_s']
    print(f"model alone: {model:.1f} images/s ({result['images']} images, "
          f"batch {result['batch_size']})")
    print_table([[row['label'] + (' *' if row['default'] else ''),
                  f"{row['load']['images_per_s']:.1f}", f"{row['e2e']['images_per_s']:.1f}",
                  f"{row['e2e_over_model']:.2f}", row['bound'],
                  f"{row['e2e']['first_batch_s']:.2f}",
                  f"{row['e2e']['steady_images_per_s']:.1f}"] for row in result['rows']],
                ['setting (* default)', 'load img/s', 'e2e img/s', 'e2e/model', 'bound by',
                 'first batch s', 'e2e after it'])
    rec = result['recommended']
    print(f"recommended: {rec['label']} ({rec['images_per_s']:.1f} images/s, "
          f"{100 * rec['gain_over_default']:+.1f} % over the default {rec['default_label']})")
    path = write_result(f'scoring_pipeline_{args.config}', dict(args=vars(args), **result))
    saved = json.loads(path.read_text())
    path.with_suffix('.md').write_text(markdown(saved))
    print('wrote', path, 'and', path.with_suffix('.md').name)
    return 0


if __name__ == '__main__':
    sys.exit(main())
