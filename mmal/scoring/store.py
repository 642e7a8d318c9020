"""Scoring outputs that do not grow with the pool in memory.

Per-sample outputs of a fixed shape (predicted and true losses, pooled
features, gradient embeddings, resized images, heatmaps, SimCC
distributions) go, as each batch is scored, into one preallocated array
per output, at the rows of their dataset indices. Past ``spill_bytes`` the
array is a memory-mapped ``.npy`` file in ``spill_dir``, in a compact
dtype (float16 for features, embeddings, images, heatmaps and SimCC
distributions; float32 for losses), so resident memory
stays flat however large the pool; below it, an ordinary array as before.
Outputs whose shape varies per sample (a box list per image, data
samples) are kept as lists and gathered with mmengine's
``collect_results``, as ``BaseMetric`` does.

Distributed: each rank fills the rows of its shard; rank 0 gathers the
shards (in memory through ``all_gather_object``, or, spilled, by reading
the ranks' shard files, which needs ``spill_dir`` on storage all ranks
share, as mmengine's own ``collect_results(device='cpu')`` does). With
``every_rank`` (a strategy that selects on every rank) each rank gets the
whole outputs: in memory each assembles them from the shards it received
anyway; spilled, rank 0 assembles the file and the others map it
read-only, so the ranks of a node share its pages instead of each holding
a copy.
"""
import shutil
from pathlib import Path

import numpy as np
from mmengine.dist import all_gather_object, barrier, collect_results, get_rank, get_world_size

#: Outputs with one fixed shape per sample (the last part of a ``pass/output`` key).
FIXED_SHAPE_OUTPUTS = ('pred_loss', 'target_loss', 'features', 'grad_embedding', 'images',
                       'heatmaps', 'simcc_x', 'simcc_y')
#: Outputs kept as float16 once spilled (distances and dot products need no more).
COMPACT_OUTPUTS = ('features', 'grad_embedding', 'images', 'heatmaps', 'simcc_x', 'simcc_y')
#: Rows copied at a time when shards are assembled.
CHUNK_ROWS = 4096


def _fixed(key: str) -> bool:
    return key.rsplit('/', 1)[-1] in FIXED_SHAPE_OUTPUTS


class OutputStore:
    """Per-sample scoring outputs of one pass over ``num_samples`` samples.

    Args:
        num_samples (int): Samples in the scored set (rows).
        spill_dir (Path, optional): Where arrays past ``spill_bytes`` go.
        spill_bytes (int): Size of one output's full array above which it
            is memory-mapped; None keeps everything in memory.
    """

    def __init__(self, num_samples: int, spill_dir: str | Path | None = None,
                 spill_bytes: int | None = None) -> None:
        self.num_samples = num_samples
        self.spill_dir = None if spill_dir is None else Path(spill_dir)
        self.spill_bytes = spill_bytes
        self.rank, self.world = get_rank(), get_world_size()
        self._arrays: dict[str, np.ndarray] = {}
        self._rows: list[int] = []  # this rank's dataset indices, in the order scored
        self._ragged: list[dict] = []

    # ------------------------------------------------------------ filling
    def add(self, indices: list[int], items: list[dict]) -> None:
        """One batch: the dataset index and the outputs of each of its samples."""
        start = len(self._rows)
        self._rows += indices
        self._ragged += [{k: v for k, v in item.items() if not _fixed(k)} for item in items]
        for key in (items[0] if items else {}):
            if not _fixed(key):
                continue
            values = np.stack([np.asarray(item[key]) for item in items])
            array = self._arrays.get(key)
            if array is None:
                array = self._arrays[key] = self._allocate(key, values.shape[1:], values.dtype)
            array[start:start + len(items)] = values

    def _allocate(self, key: str, shape: tuple, dtype) -> np.ndarray:
        # This rank's shard: at most ceil(N / world) rows (padding included).
        rows = -(-self.num_samples // self.world)
        dtype = np.float64 if not shape else np.dtype(dtype)
        if self._spills(rows, shape, dtype):
            dtype = np.float16 if key.rsplit('/', 1)[-1] in COMPACT_OUTPUTS else np.float32
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            return np.lib.format.open_memmap(self._shard_path(key, self.rank), mode='w+',
                                             dtype=dtype, shape=(rows, *shape))
        return np.empty((rows, *shape), dtype=dtype)

    def _spills(self, rows: int, shape: tuple, dtype) -> bool:
        if self.spill_dir is None or self.spill_bytes is None:
            return False
        full = self.num_samples * int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        return full > self.spill_bytes and rows > 0

    def _shard_path(self, key: str, rank: int) -> Path:
        return self.spill_dir / f"{key.replace('/', '__')}.rank{rank}.npy"

    # ----------------------------------------------------------- gathering
    def gather(self, every_rank: bool = False
               ) -> tuple[dict[str, np.ndarray], list[dict] | None]:
        """``({output: (N, ...) array}, ragged items in sample order)`` on rank 0.

        Other ranks get ``({}, None)``, or the same as rank 0 with
        ``every_rank`` (spilled arrays as read-only memory maps of rank 0's
        file). Padding duplicates (the distributed sampler's round-up) land
        on rows already written, with equal values.
        """
        ragged = self._gather_ragged(every_rank)
        if self.world == 1:
            arrays = {key: self._in_order(key, array, self._rows)
                      for key, array in self._arrays.items()}
            return arrays, ragged
        spilled = {key: isinstance(a, np.memmap) for key, a in self._arrays.items()}
        for array in self._arrays.values():
            if isinstance(array, np.memmap):
                array.flush()
        shards = all_gather_object((self._rows, {
            key: None if spilled[key] else array[:len(self._rows)]
            for key, array in self._arrays.items()}))
        barrier()  # every shard file is complete
        if self.rank != 0 and not every_rank:
            return {}, None
        arrays = {}
        for key in self._arrays:
            if self.rank != 0 and spilled[key]:
                continue  # mapped below, once rank 0 has assembled the file
            first = self._arrays[key]
            out = self._final(key, first.shape[1:], first.dtype, spilled[key])
            for rank, (rows, shard_arrays) in enumerate(shards):
                values = shard_arrays[key]
                if values is None:  # spilled: the rank's shard file
                    values = np.load(self._shard_path(key, rank), mmap_mode='r')
                for lo in range(0, len(rows), CHUNK_ROWS):
                    out[rows[lo:lo + CHUNK_ROWS]] = values[lo:lo + CHUNK_ROWS]
            arrays[key] = out
        if every_rank and any(spilled.values()):
            for array in arrays.values():
                if isinstance(array, np.memmap):
                    array.flush()
            barrier()  # rank 0's assembled files are complete
            if self.rank != 0:
                arrays.update({key: np.load(self._final_path(key), mmap_mode='r')
                               for key, is_spilled in spilled.items() if is_spilled})
        return arrays, ragged

    def _gather_ragged(self, every_rank: bool = False) -> list[dict] | None:
        """The ragged items of every rank, in dataset-index order (padding dropped)."""
        mine = list(zip(self._rows, self._ragged))
        if every_rank and self.world > 1:
            pairs = [pair for shard in all_gather_object(mine) for pair in shard]
        else:
            pairs = collect_results(mine, len(self._rows) * self.world, device='cpu')
        if pairs is None:
            return None
        by_index = dict(pairs)
        return [by_index[i] for i in range(self.num_samples)]

    def _in_order(self, key: str, array: np.ndarray, rows: list[int]) -> np.ndarray:
        """One process: the rows by dataset index (as scored, with a sequential sampler)."""
        if rows == list(range(len(rows))) and len(rows) == self.num_samples:
            return array[:len(rows)]
        out = self._final(key, array.shape[1:], array.dtype, isinstance(array, np.memmap))
        out[rows] = array[:len(rows)]
        return out

    def _final(self, key: str, shape: tuple, dtype, spilled: bool) -> np.ndarray:
        if not spilled:
            return np.empty((self.num_samples, *shape), dtype=dtype)
        return np.lib.format.open_memmap(self._final_path(key), mode='w+', dtype=dtype,
                                         shape=(self.num_samples, *shape))

    def _final_path(self, key: str) -> Path:
        return self.spill_dir / f"{key.replace('/', '__')}.npy"


def clear_spill(spill_dir: str | Path | None) -> None:
    """Remove a scoring pass's spilled arrays (after the selection used them)."""
    if spill_dir is not None and Path(spill_dir).exists():
        shutil.rmtree(spill_dir, ignore_errors=True)
