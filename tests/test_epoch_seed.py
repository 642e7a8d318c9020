"""EpochSeedHook: each epoch's random streams depend on (seed, epoch, rank) only."""
import types

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from mmal.hooks import EpochSeedHook
from mmal.hooks.epoch_seed import epoch_seed, seed_worker


class RandomDraws(Dataset):
    """Each item is a draw of numpy's global generator, as an augmentation makes."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return np.random.rand()


def epoch_draws(hook, runner, epoch):
    runner.epoch = epoch
    hook.before_train_epoch(runner)
    return [float(x) for batch in runner.train_dataloader for x in batch]


def runner_with(loader, seed=3):
    return types.SimpleNamespace(train_dataloader=loader, seed=seed, epoch=0, train_loop=None)


def test_an_epoch_draws_the_same_whatever_came_before():
    loader = DataLoader(RandomDraws(), batch_size=2, num_workers=2, persistent_workers=False)
    hook, runner = EpochSeedHook(), runner_with(loader)
    hook.before_train(runner)
    assert loader.worker_init_fn is seed_worker
    first = [epoch_draws(hook, runner, e) for e in range(3)]
    resumed = epoch_draws(hook, runner_with(loader), 2)  # a run resumed at epoch 2
    assert resumed == first[2]
    assert first[0] != first[1] != first[2]  # epochs differ (unlike fixed worker seeds)
    assert len(set(first[0])) == 4  # workers differ


def test_persistent_workers_are_refused_by_name():
    loader = DataLoader(RandomDraws(), batch_size=2, num_workers=1, persistent_workers=True)
    with pytest.raises(ValueError, match='persistent_workers=False'):
        EpochSeedHook().before_train(runner_with(loader))


def test_the_main_process_is_reseeded_per_epoch_and_rank():
    hook, runner = EpochSeedHook(), runner_with(None)
    runner.epoch = 5
    hook.before_train_epoch(runner)
    a = torch.rand(3)
    torch.rand(100)  # whatever happened after
    hook.before_train_epoch(runner)
    assert torch.equal(torch.rand(3), a)
    assert epoch_seed(3, 5, 0) != epoch_seed(3, 5, 1) != epoch_seed(3, 6, 0)


def iterations(skip: int, total: int) -> list[tuple[float, float]]:
    """An iteration-based loop's (augmentation, model draw) per iteration from ``skip`` on,
    the first ``skip`` batches fetched and skipped, as mmengine's loop does when resumed."""
    from mmengine.runner import IterBasedTrainLoop

    def batches():  # augmentations drawn in the main process (no data workers)
        while True:
            yield float(np.random.rand())
    loop = object.__new__(IterBasedTrainLoop)  # only its batch iterator is read
    loop.dataloader_iterator = batches()
    runner = runner_with(DataLoader(RandomDraws(), num_workers=0))
    runner.train_loop = loop
    hook = EpochSeedHook()
    hook.before_train(runner)
    hook.before_train_epoch(runner)
    for _ in range(skip):
        next(loop.dataloader_iterator)
    return [(next(loop.dataloader_iterator), float(torch.rand(1))) for _ in range(total - skip)]


def test_an_iteration_based_loop_draws_per_iteration_whatever_came_before():
    whole = iterations(0, 6)
    assert iterations(4, 6) == whole[4:]  # resumed at iteration 4: its draws repeat
    assert len({a for a, _ in whole}) == 6 and len({m for _, m in whole}) == 6
