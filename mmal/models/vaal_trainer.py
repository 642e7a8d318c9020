"""VAAL's training (Sinha et al., ICCV 2019) beside its networks (:mod:`.vaal`): a
β-VAE and a latent discriminator trained adversarially on the labeled and the
unlabeled images, in an mmengine Runner (checkpoints, resume, DDP), then
``1 - D(mu(x))`` per unlabeled image. :class:`~mmal.strategies.VAALStrategy`
hands it the images and ranks by the scores.
"""
import gc
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from mmengine.dist import all_gather_object, broadcast, get_dist_info
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.runner import Runner, find_latest_checkpoint
from torch.utils.data import DataLoader

from ..utils.atomic import atomic_write_text
from ..utils.dist import on_rank0
from .vaal import BalancedBatchSampler, ImageSet, VAALModel

#: The file in ``work_dir`` that records what a run trains on; a resume must match it.
RUN_FILE = 'vaal_run.json'


class VAALTrainer:
    """Trains VAAL on one selection's images and scores the unlabeled ones.

    The arguments are :class:`~mmal.strategies.VAALStrategy`'s (checked
    there): the networks' sizes, the losses' weights, the two optimisers'
    learning rates, the schedule (``epochs`` over both sets, or
    ``iterations``), logging and checkpoint intervals, extra hooks.
    """

    def __init__(self, *, latent_dim: int, image_size: int, channels: int,
                 discriminator_width: int, beta: float, adversarial_weight: float,
                 vae_steps: int, discriminator_steps: int, vae_lr: float,
                 discriminator_lr: float, batch_size: int, epochs: float | None,
                 iterations: int | None, log_interval: int, checkpoint_interval: int,
                 custom_hooks: list) -> None:
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.discriminator_width = discriminator_width
        self.beta, self.adversarial_weight = beta, adversarial_weight
        self.vae_steps, self.discriminator_steps = vae_steps, discriminator_steps
        self.vae_lr, self.discriminator_lr = vae_lr, discriminator_lr
        self.batch_size, self.epochs, self.iterations = batch_size, epochs, iterations
        self.log_interval, self.checkpoint_interval = log_interval, checkpoint_interval
        self.custom_hooks = list(custom_hooks)
        #: Seconds the last training took (None before).
        self.train_time: float | None = None

    def train_and_score(self, labeled: np.ndarray, unlabeled: np.ndarray, seed: int,
                        work_dir: Path) -> np.ndarray:
        """Train VAE + discriminator on both sets in ``work_dir``; ``1 - D(mu)`` per candidate.

        Resumes from the latest checkpoint in ``work_dir`` if there is one
        (of a run on the same sets and settings: else it refuses). Under a
        distributed launch every rank calls it, with the same arguments.
        """
        rank, world_size = get_dist_info()
        iterations = self.iterations or math.ceil(
            self.epochs * (len(labeled) + len(unlabeled)) / (self.batch_size * world_size))
        run = dict(seed=seed, num_labeled=len(labeled), num_unlabeled=len(unlabeled),
                   iterations=iterations, world_size=world_size, **self._settings())
        # rank 0 alone reads and writes the record; its refusal, or a failed write, stops
        # every rank instead of leaving the others waiting in the Runner's first collective
        checkpoint = on_rank0(lambda: self._prepare_work_dir(work_dir, run))
        images = np.concatenate([labeled, unlabeled])
        is_labeled = np.concatenate([np.ones(len(labeled)), np.zeros(len(unlabeled))])
        states = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=_cuda_devices()):
                torch.manual_seed(seed)  # the initial weights
                model = VAALModel(self.latent_dim, self.image_size, self.channels,
                                  self.discriminator_width, beta=self.beta,
                                  adversarial_weight=self.adversarial_weight,
                                  vae_steps=self.vae_steps,
                                  discriminator_steps=self.discriminator_steps, seed=seed,
                                  rank=rank)
                model.set_standardisation(torch.from_numpy(images))
                runner = self._runner(model, images, is_labeled, seed, iterations, work_dir,
                                      checkpoint)
                start = time.perf_counter()
                runner.train()
                self.train_time = time.perf_counter() - start
                print_log(f'VAAL: {iterations} iterations on {len(labeled)} labeled and '
                          f'{len(unlabeled)} unlabeled images in {self.train_time:.1f} s'
                          + (f' on {world_size} processes' if world_size > 1 else ''),
                          logger='current')
                model = runner.model.module if is_model_wrapper(runner.model) else runner.model
                if world_size > 1:
                    # DDP keeps the weights equal, not the BatchNorm statistics
                    for buffer in model.buffers():
                        broadcast(buffer, src=0)
                scores = 1.0 - self._labeled_probability(model, unlabeled)
                # Free the DDP wrappers now, while the process group lives: gloo's,
                # collected at the interpreter's exit, can abort the process.
                del runner, model
                gc.collect()
                return scores
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])

    def _labeled_probability(self, model: VAALModel, images: np.ndarray) -> np.ndarray:
        """``D(mu(x))`` per image; distributed, each rank scores every world_size-th batch."""
        rank, world_size = get_dist_info()
        size = self.batch_size
        starts = range(0, len(images), size)
        batches = {start: model.labeled_probability(torch.from_numpy(images[start:start + size]),
                                                    size)
                   for start in starts[rank::world_size]}
        if world_size > 1:
            batches = {start: p for shard in all_gather_object(batches)
                       for start, p in shard.items()}
        return np.concatenate([batches[start] for start in starts])

    def _settings(self) -> dict:
        return dict(latent_dim=self.latent_dim, image_size=self.image_size,
                    batch_size=self.batch_size, beta=self.beta,
                    adversarial_weight=self.adversarial_weight, vae_lr=self.vae_lr,
                    discriminator_lr=self.discriminator_lr, vae_steps=self.vae_steps,
                    discriminator_steps=self.discriminator_steps, channels=self.channels,
                    discriminator_width=self.discriminator_width)

    @staticmethod
    def _prepare_work_dir(work_dir: Path, run: dict) -> str | None:
        """Check and record ``run`` in ``work_dir``; the checkpoint to resume from, if any."""
        work_dir.mkdir(parents=True, exist_ok=True)
        path = work_dir / RUN_FILE
        checkpoint = find_latest_checkpoint(str(work_dir))
        if checkpoint is not None and path.exists():
            # a record from before distributed runs were possible was of one process
            recorded = dict(dict(world_size=1), **json.loads(path.read_text()))
            if recorded != run:
                diff = {key: (recorded.get(key), run.get(key))
                        for key in sorted(set(recorded) | set(run))
                        if recorded.get(key) != run.get(key)}
                hint = (f'resume with {recorded["world_size"]} processes or '
                        if 'world_size' in diff else '')
                raise ValueError(f'VAALStrategy: {work_dir} holds checkpoints of another VAAL '
                                 f'run (recorded vs now: {diff}); {hint}delete the folder to '
                                 'train anew')
        atomic_write_text(path, json.dumps(run, indent=1))  # a kill never leaves half
        return checkpoint

    def _runner(self, model: 'VAALModel', images: np.ndarray, is_labeled: np.ndarray,
                seed: int, iterations: int, work_dir: Path, checkpoint: str | None) -> Runner:
        rank, world_size = get_dist_info()
        chunks = self.vae_steps + self.discriminator_steps - 1
        loader = DataLoader(
            ImageSet(images, is_labeled),
            batch_sampler=BalancedBatchSampler(is_labeled, self.batch_size, chunks, seed,
                                               rank=rank, world_size=world_size),
            num_workers=0)
        # one optimizer per network: the VAE's step must not move D, nor D's the VAE
        optimizers = OptimWrapperDict(
            vae=OptimWrapper(torch.optim.Adam(model.vae.parameters(), lr=self.vae_lr)),
            discriminator=OptimWrapper(torch.optim.Adam(model.discriminator.parameters(),
                                                        lr=self.discriminator_lr)))
        distributed = world_size > 1
        cfg = None
        if distributed:
            # one DDP per network, as mmengine's GAN models; CPU modules take no device_ids
            wrapper = dict(type='MMSeparateDistributedDataParallel', broadcast_buffers=False,
                           find_unused_parameters=False)
            if not torch.cuda.is_available():
                wrapper['device_ids'] = None
            cfg = dict(model_wrapper_cfg=wrapper)
        return Runner(
            model=model, work_dir=str(work_dir), train_dataloader=loader,
            train_cfg=dict(by_epoch=False, max_iters=iterations, val_interval=iterations + 1),
            optim_wrapper=optimizers,
            default_hooks=dict(
                sampler_seed=None,  # the batch sampler is seeded; it has no epochs to set
                logger=dict(type='LoggerHook', interval=self.log_interval),
                checkpoint=dict(type='CheckpointHook', by_epoch=False, max_keep_ckpts=1,
                                interval=self.checkpoint_interval,
                                save_param_scheduler=False)),
            log_processor=dict(by_epoch=False),
            custom_hooks=list(self.custom_hooks), load_from=checkpoint,
            resume=checkpoint is not None, randomness=dict(seed=seed),
            env_cfg=dict(cudnn_benchmark=False),
            # the process group exists already: the Runner only wraps the model
            launcher='pytorch' if distributed else 'none', cfg=cfg,
            experiment_name=f'vaal_{time.time_ns()}')


def _cuda_devices() -> list:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
