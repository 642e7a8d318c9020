"""Shared helpers of the benchmarks: data, timing, results."""
import copy
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / 'bench' / 'results'
sys.path.insert(0, str(REPO))


def device() -> str:
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def generated_voc_root() -> str:
    """A generated VOC-format set for benchmark inputs (created once per run)."""
    from mmal.datasets import VOCSceneConfig, generate_voc_dataset
    root = Path(os.environ.get('MMAL_BENCH_DATA', tempfile.gettempdir())) / 'mmal_bench_voc'
    generate_voc_dataset(root, VOCSceneConfig(num_trainval=64, num_test=16, seed=7,
                                              min_size=280, max_size=420))
    return str(root) + '/'


def task_batches(config: str, batch_size: int, num_batches: int, train: bool) -> list:
    """Batches for any of our configs: detection (VOC) or pose (MPII)."""
    cfg = Config.fromfile(str(REPO / config))
    if cfg.get('default_scope') == 'mmpose':
        return pose_batches(config, batch_size, num_batches, train)
    return detection_batches(config, batch_size, num_batches, train)


def generated_mpii_root() -> str:
    """A generated MPII-format set for benchmark inputs (created once per run)."""
    from mmal.datasets import MPIISceneConfig, generate_mpii_dataset
    root = Path(os.environ.get('MMAL_BENCH_DATA', tempfile.gettempdir())) / 'mmal_bench_mpii'
    generate_mpii_dataset(root, MPIISceneConfig(num_train=64, num_val=16, seed=7,
                                                min_size=256, max_size=320))
    return str(root) + '/'


def pose_batches(config: str, batch_size: int, num_batches: int, train: bool) -> list:
    """Batches from a pose config's own pipeline over generated MPII data."""
    import mmal  # noqa: F401  (registers our modules)
    cfg = Config.fromfile(str(REPO / config))
    init_default_scope('mmpose')
    from mmpose.registry import DATASETS
    loader = cfg.train_dataloader if train else cfg.test_dataloader
    ds = DATASETS.build(dict(
        type='MpiiDataset', data_root=generated_mpii_root(),
        ann_file='annotations/mpii_train.json', data_prefix=dict(img='images/'),
        pipeline=copy.deepcopy(loader.dataset.pipeline)))
    samples = [ds[i % len(ds)] for i in range(batch_size * num_batches)]
    return [pseudo_collate(samples[i * batch_size:(i + 1) * batch_size])
            for i in range(num_batches)]


def detection_batches(config: str, batch_size: int, num_batches: int, train: bool) -> list:
    """Batches from a detection config's own pipeline over generated VOC data."""
    import mmal  # noqa: F401  (registers our modules)
    from mmal.datasets import leaf_configs
    cfg = Config.fromfile(str(REPO / config))
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmdet.registry import DATASETS
    loader = cfg.train_dataloader if train else cfg.test_dataloader
    leaf = leaf_configs(loader.dataset)[0]
    pipeline = copy.deepcopy(leaf['pipeline'])
    if not train:
        pipeline = [t for t in pipeline if t['type'] != 'LoadAnnotations']
    ds = DATASETS.build(dict(
        type='VOCDataset', data_root=generated_voc_root(),
        ann_file='VOC2007/ImageSets/Main/trainval.txt',
        data_prefix=dict(sub_data_root='VOC2007/'), pipeline=pipeline,
        metainfo=leaf.get('metainfo'), filter_cfg=dict(filter_empty_gt=True)))
    samples = [ds[i % len(ds)] for i in range(batch_size * num_batches)]
    return [pseudo_collate(samples[i * batch_size:(i + 1) * batch_size])
            for i in range(num_batches)]


def time_calls(fn, batches: list, warmup: int = 2) -> list[float]:
    """Seconds per call of ``fn(batch)`` over ``batches`` after ``warmup`` calls."""
    for b in batches[:warmup]:
        fn(b)
    synchronize()
    times = []
    for b in batches[warmup:]:
        start = time.perf_counter()
        fn(b)
        synchronize()
        times.append(time.perf_counter() - start)
    return times


def time_interleaved(fns: dict, batches: list, warmup: int = 2) -> dict[str, list[float]]:
    """Like :func:`time_calls` for several functions, taking turns on each batch.

    Interleaving exposes every function to the same machine load, so their
    ratio stays meaningful on a busy machine; the order rotates from batch to
    batch so that none always runs first.
    """
    for b in batches[:warmup]:
        for fn in fns.values():
            fn(b)
    synchronize()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for k, b in enumerate(batches[warmup:]):
        for name in names[k % len(names):] + names[:k % len(names)]:
            fn = fns[name]
            start = time.perf_counter()
            fn(b)
            synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def timed_pass(batches, step=None) -> dict:
    """One whole pass over ``batches``, the iterator's start included: seconds and images.

    Not :func:`time_calls`, which times each call of a function on batches
    already made: a loader pass pays worker start-up and loading between
    steps, and that is what it measures.
    """
    start = time.perf_counter()
    first_batch_s, first_images, images = None, 0, 0
    for batch in batches:
        if step is not None:
            step(batch)
        images += len(batch['data_samples'])
        if first_batch_s is None:
            synchronize()
            first_batch_s, first_images = time.perf_counter() - start, images
    synchronize()
    seconds = time.perf_counter() - start
    rest = seconds - first_batch_s
    return dict(seconds=seconds, first_batch_s=first_batch_s, images=images,
                images_per_s=images / seconds,
                # After the first batch: the rate a pool too big for start-up to count gets.
                steady_images_per_s=(images - first_images) / rest if rest > 0 else float('nan'))


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb() -> float:
    """Peak GPU memory allocated (CUDA) or the process's peak RSS (CPU), in MiB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summary(times: list[float]) -> dict:
    return dict(median_s=statistics.median(times), mean_s=statistics.fmean(times),
                min_s=min(times), n=len(times))


def machine() -> dict:
    """The machine and software a result was measured on.

    mmengine's ``collect_env`` describes the platform, Python, GPUs, CUDA,
    compiler and PyTorch build; the keys beside it are what reports read
    (``device``, ``cpu_count``, ``gpu``) and what it lacks (CPU cores, torch
    threads, the OpenMMLab package versions).
    """
    from mmengine.utils.dl_utils import collect_env

    from mmal.utils.env import package_versions
    # numpy's RNG state is not the machine's, and its numpy integer is not JSON
    env = {k: v for k, v in collect_env().items() if k != 'numpy_random_seed'}
    info = dict(platform=platform.platform(), device=device(), cpu_count=os.cpu_count(),
                torch_threads=torch.get_num_threads(), **package_versions(), collect_env=env)
    gpus = [name for key, name in env.items() if key.startswith('GPU ')]
    if gpus:
        info['gpu'] = ', '.join(gpus)
    return info


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    path = RESULTS / f'{name}_{device()}_{stamp}.json'
    payload = dict(benchmark=name, date=datetime.datetime.now().isoformat(timespec='seconds'),
                   machine=machine(), **payload)
    path.write_text(json.dumps(payload, indent=1) + '\n')
    return path


def print_table(rows: list[list], header: list[str]) -> None:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, r in enumerate(cells):
        print('  '.join(c.rjust(w) for c, w in zip(r, widths)))
        if k == 0:
            print('  '.join('-' * w for w in widths))
