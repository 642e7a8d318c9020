"""Augmentation randomness as a function of (seed, epoch, rank, worker).

mmengine seeds the random generators once, when the Runner is built, and
each data worker with ``seed + worker id`` (``mmengine.dataset.worker_init_fn``).
So the random streams of an epoch depend on everything drawn before it: a
run resumed from an epoch's checkpoint restarts them from the seed and sees
other augmentations than the run that was not interrupted, and trains
another model. With this hook the streams of epoch ``e`` depend only on
``(seed, e, rank)``: the main process is reseeded at the start of every
epoch, and each worker is seeded from the base seed PyTorch draws from the
main process when the epoch's workers start (``torch.initial_seed()`` in the
worker, as PyTorch's documentation on randomness in data loading does).

An iteration-based training (mmengine's ``IterBasedTrainLoop``: the
semi-supervised phases) is one long epoch, checkpointed every N
iterations; resumed, the loop skips the batches already trained
(fetching them again) and goes on with whatever the generators hold then,
not what they held at that iteration in the uninterrupted run. So there
the main process is reseeded from ``(seed, iteration, rank)`` before each
batch is fetched: the augmentations drawn in the main process and the
model's own draws (samplers, SoftTeacher's box jitter) of iteration ``i``
depend on ``i`` alone. Data workers of such a loop start once, when the
loop is built, with mmengine's fixed seeds, and replay the same stream.
"""
import hashlib
import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import FUNCTIONS, HOOKS
from mmengine.runner import IterBasedTrainLoop


def epoch_seed(seed: int, epoch: int | str, rank: int) -> int:
    """A 32-bit seed for one epoch (or ``'iter<i>'``: one iteration) of one rank."""
    digest = hashlib.sha256(f'{seed}/{epoch}/{rank}'.encode()).digest()
    return int.from_bytes(digest[:4], 'little')


def reseed(seed: int) -> None:
    """Seed the main process's generators: ``random``, numpy, torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class IterationSeededBatches:
    """An iteration-based loop's batch iterator, reseeding before the i-th batch is fetched.

    Counts the fetches, so the batches a resumed loop skips count too: the
    i-th fetch is iteration i in both runs.
    """

    def __init__(self, batches, seed: int, rank: int) -> None:
        self.batches, self.seed, self.rank, self.fetched = batches, seed, rank, 0

    def __iter__(self):
        return self

    def __next__(self):
        reseed(epoch_seed(self.seed, f'iter{self.fetched}', self.rank))
        self.fetched += 1
        return next(self.batches)


@FUNCTIONS.register_module(name='mmal_seed_worker')
def seed_worker(worker_id: int) -> None:
    """Seed a data worker's ``random`` and numpy from its torch seed (set by PyTorch)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Reseed every epoch from ``(seed, epoch, rank)``, so a resumed training repeats.

    Needs data workers started anew each epoch (``persistent_workers=False``):
    persistent workers keep their streams across epochs, which a resumed
    run cannot restore; ``before_train`` refuses them, naming the key.
    The Runner's ``randomness.seed`` is the base seed (0 when unset).
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        loader = runner.train_dataloader
        if loader.num_workers > 0 and loader.persistent_workers:
            raise ValueError('EpochSeedHook: train_dataloader.persistent_workers=True keeps the '
                             'data workers and their random streams across epochs, so a resumed '
                             'training would see other augmentations; set '
                             'train_dataloader.persistent_workers=False')
        # Allowed after construction (unlike batch_size or sampler): the
        # workers are started by each epoch's iter(loader).
        loader.worker_init_fn = seed_worker
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop):  # before it skips the trained batches
            loop.dataloader_iterator = IterationSeededBatches(
                loop.dataloader_iterator, runner.seed or 0, get_rank())

    def before_train_epoch(self, runner) -> None:
        reseed(epoch_seed(runner.seed or 0, runner.epoch, get_rank()))
