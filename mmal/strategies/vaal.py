"""VAAL: label what a discriminator on a VAE's latent space finds least "labeled"."""
import gc
import json
import math
import random
import tempfile
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

from ..models.vaal import BOTTLENECK, BalancedBatchSampler, ImageSet, VAALModel
from ..registry import STRATEGIES
from ..scoring import MAIN, ScorePass
from ..utils.atomic import atomic_write_text
from ..utils.dist import on_rank0
from .base import BaseStrategy, require, top_k

#: The file in ``work_dir`` that records what a run trains on; a resume must match it.
RUN_FILE = 'vaal_run.json'
#: Epochs when neither ``epochs`` nor ``iterations`` is given.
DEFAULT_EPOCHS = 100


@STRATEGIES.register_module()
class VAALStrategy(BaseStrategy):
    """Variational Adversarial Active Learning (Sinha, Ebrahimi & Darrell, ICCV 2019).

    Task-agnostic: it looks at the images only, never at the task model. A
    beta-VAE is trained on the labeled set and the candidates together, and
    a discriminator on its latent means learns to tell labeled (1) from
    unlabeled (0), while the VAE is also trained to make the discriminator
    call everything labeled. Candidates are then labeled in the order of
    ``1 - D(mu(x))``: those the discriminator finds least likely to be
    labeled, i.e. least represented by what is labeled already.

    The images are the network inputs as the scoring loop hands them over
    (after the task's data preprocessor), resized to ``image_size`` squared
    (``ScorePass(('images',), image_size=...)`` over both sets). They are
    standardised per channel with the mean and std of both sets together,
    because a preprocessor may leave them in pixel units. The unlabeled
    images VAAL learns from are the scored candidates: the whole unlabeled
    pool, or the random subset ``candidate_pool`` draws each cycle.

    Objective, per iteration (the paper's Eq. 3-5, the official code's
    schedule, github.com/sinhasam/vaal ``solver.py``): ``vae_steps`` VAE
    updates, then ``discriminator_steps`` discriminator updates, each on a
    fresh pair of batches of ``batch_size`` labeled and ``batch_size``
    unlabeled images (the last discriminator batch pair is the last VAE
    one, as there). With ``D`` the discriminator's probability of
    "labeled" on a latent mean,

    - VAE: ``L_trd(x_L) + L_trd(x_U) + adversarial_weight * (BCE(D(mu_L), 1)
      + BCE(D(mu_U), 1))``, the transductive beta-VAE loss on both sets
      plus the term that makes every image look labeled;
    - ``L_trd(x) = mean_pixels (x - x_hat)^2 + beta * KL(q(z|x) || N(0, I)) / P``
      averaged over the batch, ``P = 3 * image_size**2``: the negative
      ELBO of a Gaussian decoder per input dimension. The official code
      uses the same per-pixel mean squared error but adds the KL summed
      over the batch, which makes its effective beta grow with the batch
      size and pulls every latent mean to 0; per dimension, ``beta`` keeps
      its meaning (1: the plain ELBO) and the reconstruction stays on the
      scale of the adversarial term, as there;
    - discriminator: ``BCE(D(mu_L), 1) + BCE(D(mu_U), 0)`` with the VAE
      fixed.

    Each BCE is a mean within its set, computed from D's logit (the same
    value as on the sigmoid, without its saturation). Both sets of a step
    go through the VAE as one batch, so that BatchNorm does not erase the
    differences between them (see :class:`VAALModel`).

    Both use Adam (lr 5e-4 in the official code). The length is
    ``epochs`` passes over labeled + unlabeled images in batches of
    ``batch_size`` (the official ``num_images * train_epochs //
    batch_size`` iterations, rounded up; divided by the number of
    processes in a distributed run), or ``iterations``.

    The models follow the official ones, narrower so that a CPU trains
    them: a conv encoder (stride-2 4x4 convs, BatchNorm, ReLU, doubling
    ``channels`` down to 4 x 4 maps) with linear heads for the latent mean
    and log-variance, a mirrored transposed-conv decoder, and a 3-layer MLP
    discriminator of width ``discriminator_width`` (512 there) on the mean.

    Training runs on an mmengine Runner (:class:`VAALModel` has its own
    ``train_step`` with one optimizer per network in an OptimWrapperDict,
    as mmengine's GAN examples) in ``work_dir`` (set by the loop; a
    temporary folder otherwise), with checkpoints every
    ``checkpoint_interval`` iterations: a killed run resumes from the
    latest one and ends with the weights an uninterrupted run has. The
    seed comes from the ``rng`` handed to :meth:`select`; the batches and
    the VAE's sampling noise are functions of that seed and the iteration
    (not of global random state), and the global random states are
    restored afterwards.

    Distributed (``select_on_every_rank``: the loop hands every rank the
    gathered images and calls :meth:`select` on each), every rank trains
    the pair together, DDP through mmengine: the Runner wraps each network
    in its own DDP (``MMSeparateDistributedDataParallel``, mmengine's recipe
    for GANs), so gradients are averaged over the ranks and the weights
    stay identical. Each rank holds the whole arrays and takes every
    ``world_size``-th draw of the one seeded batch stream (see
    :class:`~mmal.models.vaal.BalancedBatchSampler`): ``batch_size`` is
    per process, as in OpenMMLab configs, so an iteration sees
    ``world_size`` times the images and ``epochs`` take that many times
    fewer iterations. Rank 0 alone checks and records the run and finds
    the checkpoint to resume, which every rank loads, and the Runner
    writes checkpoints from rank 0; resuming with another number of
    processes is refused (the batches differ). After training the
    BatchNorm statistics (each rank's own batches moved them) are rank 0's
    on every rank, and the candidates are scored in batches dealt out to
    the ranks and gathered, so every rank returns rank 0's scores and
    order. A run on one process is the single-process run above.

    Args:
        latent_dim (int): Size of the latent space (32 in the paper).
        image_size (int): Side the images are resized to, a power of 2
            >= 8 (CIFAR's 32 in the paper; 64 keeps more of a detection
            image).
        epochs (float, optional): Passes over labeled + unlabeled images;
            100 (as in the official code) unless ``iterations`` is given.
        iterations (int, optional): Training iterations instead of epochs.
        batch_size (int): Labeled images per batch, and unlabeled ones
            (128 in the official code; 64 here, for a CPU).
        beta (float): Weight of the KL term (beta-VAE; 1 in the paper).
        adversarial_weight (float): Weight of the VAE's adversarial term
            (lambda_2, ``adversary_param`` = 1 in the paper).
        vae_lr (float): Adam learning rate of the VAE (5e-4 as there).
        discriminator_lr (float): Adam learning rate of the discriminator
            (5e-4 as there).
        vae_steps (int): VAE updates per iteration (2 in the official code).
        discriminator_steps (int): Discriminator updates per iteration (1).
        channels (int): Width of the encoder's first conv (128 there, 32
            here, for a CPU).
        discriminator_width (int): Hidden width of the discriminator.
        checkpoint_interval (int): Iterations between checkpoints.
        log_interval (int): Iterations between log lines.
        custom_hooks (list, optional): Extra mmengine hooks for the Runner.
    """

    select_on_every_rank = True

    def __init__(self, task: str | None = None, latent_dim: int = 32, image_size: int = 32,
                 epochs: float | None = None, iterations: int | None = None,
                 batch_size: int = 64, beta: float = 1.0, adversarial_weight: float = 1.0,
                 vae_lr: float = 5e-4, discriminator_lr: float = 5e-4, vae_steps: int = 2,
                 discriminator_steps: int = 1, channels: int = 32,
                 discriminator_width: int = 512, checkpoint_interval: int = 200,
                 log_interval: int = 50, custom_hooks: list | None = None) -> None:
        super().__init__(task)
        self.latent_dim = _positive_int('latent_dim', latent_dim)
        self.image_size = _positive_int('image_size', image_size)
        if self.image_size < 2 * BOTTLENECK or self.image_size & (self.image_size - 1):
            raise ValueError(f'VAALStrategy: image_size={image_size!r} must be a power of 2 '
                             f'>= {2 * BOTTLENECK} (the encoder halves it down to '
                             f'{BOTTLENECK} x {BOTTLENECK}); e.g. 32 or 64')
        if epochs is not None and iterations is not None:
            raise ValueError(f'VAALStrategy: give epochs={epochs!r} or '
                             f'iterations={iterations!r}, not both')
        if iterations is not None:
            self.iterations = _positive_int('iterations', iterations)
            self.epochs = None
        else:
            self.iterations = None
            self.epochs = _number('epochs', DEFAULT_EPOCHS if epochs is None else epochs,
                                  positive=True)
        self.batch_size = _positive_int('batch_size', batch_size)
        self.beta = _number('beta', beta)
        self.adversarial_weight = _number('adversarial_weight', adversarial_weight)
        self.vae_lr = _number('vae_lr', vae_lr, positive=True)
        self.discriminator_lr = _number('discriminator_lr', discriminator_lr, positive=True)
        self.vae_steps = _positive_int('vae_steps', vae_steps)
        self.discriminator_steps = _positive_int('discriminator_steps', discriminator_steps)
        self.channels = _positive_int('channels', channels)
        self.discriminator_width = _positive_int('discriminator_width', discriminator_width)
        self.checkpoint_interval = _positive_int('checkpoint_interval', checkpoint_interval)
        self.log_interval = _positive_int('log_interval', log_interval)
        if custom_hooks is not None and not isinstance(custom_hooks, (list, tuple)):
            raise ValueError(f'VAALStrategy: custom_hooks={custom_hooks!r} must be a list of '
                             'hook configs or hooks')
        self.custom_hooks = list(custom_hooks or [])
        #: Seconds the last select() spent training (None before).
        self.train_time: float | None = None

    # --------------------------------------------------------- declaration
    def _images_pass(self) -> dict[str, ScorePass]:
        return {MAIN: ScorePass(('images',), image_size=self.image_size)}

    def candidate_passes(self) -> dict[str, ScorePass]:
        return self._images_pass()

    def labeled_passes(self) -> dict[str, ScorePass]:
        return self._images_pass()

    # ------------------------------------------------------------ selection
    def select(self, candidate_outputs: dict, labeled_outputs: dict, k: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        require(self, candidate_outputs, 'images')
        require(self, labeled_outputs, 'images', where='labeled-set')
        unlabeled = self._images(candidate_outputs['images'], 'candidate')
        labeled = self._images(labeled_outputs['images'], 'labeled-set')
        seed = int(rng.integers(0, 2**31 - 1))
        if self.work_dir is None:
            with tempfile.TemporaryDirectory(prefix='vaal_') as tmp:
                scores = self.train_and_score(labeled, unlabeled, seed, Path(tmp))
        else:
            scores = self.train_and_score(labeled, unlabeled, seed, Path(self.work_dir))
        return top_k(scores, k, rng, user='VAALStrategy'), scores

    def _images(self, images, where: str) -> np.ndarray:
        if isinstance(images, list):
            raise ValueError(f'VAALStrategy: the {where} images have different shapes; '
                             f'the scoring pass must resize them (image_size)')
        images = np.asarray(images, dtype=np.float32)
        expected = (3, self.image_size, self.image_size)
        if images.ndim != 4 or images.shape[1:] != expected or len(images) == 0:
            raise ValueError(f'VAALStrategy: the {where} images have shape {images.shape}; '
                             f'expected (N >= 1, {", ".join(map(str, expected))})')
        return images

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


def _positive_int(key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f'VAALStrategy: {key}={value!r} must be an integer >= 1')
    return int(value)


def _number(key: str, value, positive: bool = False) -> float:
    bound = '> 0' if positive else '>= 0'
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f'VAALStrategy: {key}={value!r} must be a finite number {bound}')
    return float(value)
