"""VAAL: label what a discriminator on a VAE's latent space finds least "labeled"."""
import math
import tempfile
from pathlib import Path

import numpy as np

from ..models.vaal import BOTTLENECK
from ..models.vaal_trainer import VAALTrainer
from ..registry import STRATEGIES
from ..scoring import MAIN, ScorePass
from .base import BaseStrategy, require, top_k

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
    needs_labeled_set = True

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
        trainer = self.trainer()
        if self.work_dir is None:
            with tempfile.TemporaryDirectory(prefix='vaal_') as tmp:
                scores = trainer.train_and_score(labeled, unlabeled, seed, Path(tmp))
        else:
            scores = trainer.train_and_score(labeled, unlabeled, seed, Path(self.work_dir))
        self.train_time = trainer.train_time
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

    def trainer(self) -> VAALTrainer:
        """VAAL's trainer with this strategy's settings."""
        return VAALTrainer(**self._settings(), epochs=self.epochs, iterations=self.iterations,
                           log_interval=self.log_interval,
                           checkpoint_interval=self.checkpoint_interval,
                           custom_hooks=self.custom_hooks)

    def _settings(self) -> dict:
        return dict(latent_dim=self.latent_dim, image_size=self.image_size,
                    batch_size=self.batch_size, beta=self.beta,
                    adversarial_weight=self.adversarial_weight, vae_lr=self.vae_lr,
                    discriminator_lr=self.discriminator_lr, vae_steps=self.vae_steps,
                    discriminator_steps=self.discriminator_steps, channels=self.channels,
                    discriminator_width=self.discriminator_width)


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
