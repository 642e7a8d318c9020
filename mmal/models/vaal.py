"""VAAL's networks: a beta-VAE and a discriminator on its latent means, and how they train.

Used by :class:`~mmal.strategies.VAALStrategy`, which trains them each
cycle on an mmengine Runner; see there for the objective and its sources.
"""
import itertools
import math

import numpy as np
import torch
from mmengine.model import BaseModel
from mmengine.runner.checkpoint import get_state_dict
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

#: The feature maps the encoder stops at, and the decoder starts from, are 4 x 4.
BOTTLENECK = 4


class VAALModel(BaseModel):
    """The beta-VAE and the discriminator on its latent mean, trained as a pair.

    ``train_step`` does one VAAL iteration (see :class:`VAALStrategy`) on a
    batch of ``vae_steps + discriminator_steps - 1`` chunks, each
    ``batch_size`` labeled then ``batch_size`` unlabeled images, with the
    optimizers ``optim_wrapper['vae']`` and ``['discriminator']``.

    The labeled and the unlabeled images of a step go through the VAE as
    one batch. The official code runs two, one per set, and its BatchNorm
    then standardises each set with its own statistics, erasing exactly
    the differences between the sets (a brighter unlabeled set looks like
    the labeled one) that the discriminator is there to find, and that it
    later sees in eval mode, with the running statistics.

    The sampling noise of step ``t`` is drawn from a generator seeded with
    ``(seed, t)``, and on rank ``r > 0`` of a distributed run with ``(seed,
    t, r)`` (each rank's images get their own noise; rank 0 draws what one
    process draws); ``t`` is a buffer, so a resumed run draws what the
    uninterrupted one would.

    Distributed, the Runner wraps it in ``MMSeparateDistributedDataParallel``
    (mmengine's recipe for GANs): ``vae`` and ``discriminator`` become DDP
    wrappers each, whose gradients are averaged over the ranks when a
    network is called through its wrapper. Each network is called through
    it only in its own update; where it is frozen (the discriminator in
    the VAE step, the VAE in the discriminator step) the plain module is
    called, as its DDP would wait for gradients that never come. The state
    dict has the plain networks' names whether they are wrapped or not
    (see :meth:`state_dict`).
    """

    def __init__(self, latent_dim: int, image_size: int, channels: int,
                 discriminator_width: int, beta: float = 1.0, adversarial_weight: float = 1.0,
                 vae_steps: int = 2, discriminator_steps: int = 1, seed: int = 0,
                 rank: int = 0) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.vae = VAE(latent_dim, image_size, channels)
        self.discriminator = nn.Sequential(
            nn.Linear(latent_dim, discriminator_width), nn.ReLU(inplace=True),
            nn.Linear(discriminator_width, discriminator_width), nn.ReLU(inplace=True),
            nn.Linear(discriminator_width, 1))
        self.beta = beta
        self.adversarial_weight = adversarial_weight
        self.vae_steps = vae_steps
        self.discriminator_steps = discriminator_steps
        self.seed = seed
        self.rank = rank
        self.register_buffer('step', torch.zeros((), dtype=torch.long))
        self.register_buffer('mean', torch.zeros(1, 3, 1, 1))
        self.register_buffer('std', torch.ones(1, 3, 1, 1))

    def state_dict(self, destination=None, prefix: str = '', keep_vars: bool = False) -> dict:
        """The state without the DDP wrappers' ``.module`` in the names.

        mmengine's Runner saves ``model.state_dict()`` of the model inside
        its top wrapper, which here still holds a DDP per network, so the
        keys would read ``vae.module.encoder...``; its resume loads into
        the unwrapped names and only warns about the rest, leaving the
        initial weights. mmengine's ``get_state_dict`` unwraps at every
        level: checkpoints of 1 and of N processes are the same.
        """
        return get_state_dict(self, destination=destination, prefix=prefix,
                              keep_vars=keep_vars)

    def set_standardisation(self, images: Tensor) -> None:
        """Per-channel mean and std of ``images`` (N, 3, S, S), used on every input."""
        self.mean.copy_(images.double().mean(dim=(0, 2, 3)).view(1, 3, 1, 1).float())
        std = images.double().std(dim=(0, 2, 3)).view(1, 3, 1, 1).float()
        self.std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def standardise(self, images: Tensor) -> Tensor:
        return (images - self.mean) / self.std

    def forward(self, inputs: Tensor, data_samples=None, mode: str = 'tensor') -> Tensor:
        """The discriminator's logit of "labeled" on the latent mean of ``inputs``."""
        mu, _ = bare(self.vae)(self.standardise(inputs))
        return bare(self.discriminator)(mu).squeeze(1)

    @torch.no_grad()
    def labeled_probability(self, images: Tensor, batch_size: int) -> np.ndarray:
        """``D(mu(x))`` per image in eval mode, float64."""
        self.eval()
        device = self.mean.device
        logits = [self(images[i:i + batch_size].to(device)).double().cpu()
                  for i in range(0, len(images), batch_size)]
        return torch.sigmoid(torch.cat(logits)).numpy()

    def train_step(self, data: dict, optim_wrapper) -> dict:
        data = self.data_preprocessor(data, True)
        images, is_labeled = self.standardise(data['images']), data['labels'] > 0.5
        chunks = self.vae_steps + self.discriminator_steps - 1
        pairs = [(x[m], x[~m]) for x, m in zip(images.chunk(chunks), is_labeled.chunk(chunks))]
        log: dict = {}
        self.discriminator.requires_grad_(False)  # the VAE step must not leave grads in D
        for s in range(self.vae_steps):
            with optim_wrapper['vae'].optim_context(self.vae):
                losses = self.vae_losses(*pairs[s], noise_id=s)
            optim_wrapper['vae'].update_params(sum(losses.values()))
        log.update({k: v.detach() for k, v in losses.items()})
        self.discriminator.requires_grad_(True)
        for s in range(self.discriminator_steps):
            x_l, x_u = pairs[self.vae_steps - 1 + s]
            with optim_wrapper['discriminator'].optim_context(self.discriminator):
                with torch.no_grad():
                    mu_l, mu_u = self.encode_mean(x_l, x_u)  # the VAE's own module
                logit_l, logit_u = self.discriminator(mu_l), self.discriminator(mu_u)
                loss = (F.binary_cross_entropy_with_logits(logit_l, torch.ones_like(logit_l))
                        + F.binary_cross_entropy_with_logits(logit_u, torch.zeros_like(logit_u)))
            optim_wrapper['discriminator'].update_params(loss)
        log['loss_discriminator'] = loss.detach()
        log['d_labeled'] = torch.sigmoid(logit_l).mean().detach()
        log['d_unlabeled'] = torch.sigmoid(logit_u).mean().detach()
        self.step += 1
        return log

    def vae_losses(self, x_l: Tensor, x_u: Tensor, noise_id: int = 0) -> dict:
        """The VAE's loss terms on a labeled and an unlabeled batch (each term summed over both)."""
        entropy = [self.seed, int(self.step), noise_id] + ([self.rank] if self.rank else [])
        generator = torch.Generator(device=x_l.device).manual_seed(
            int(np.random.SeedSequence(entropy).generate_state(1)[0]))
        x = torch.cat([x_l, x_u])
        noise = torch.randn((len(x), self.latent_dim), generator=generator, device=x.device)
        mu, logvar, x_hat = self.vae(x, noise)  # through DDP, if any: its gradients are averaged
        # KL(N(mu, sigma^2) || N(0, 1)) per image, per input dimension
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1) / x[0].numel()
        logit = bare(self.discriminator)(mu)  # frozen here
        adv = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit), reduction='none')
        per_image = dict(loss_recon=(x_hat - x).pow(2).flatten(1).mean(1),
                         loss_kl=self.beta * kl,
                         loss_adversarial=self.adversarial_weight * adv.squeeze(1))
        # mean within each set, summed over the two, as the paper's two expectations
        n = len(x_l)
        return {key: value[:n].mean() + value[n:].mean() for key, value in per_image.items()}

    def encode_mean(self, x_l: Tensor, x_u: Tensor) -> tuple[Tensor, Tensor]:
        """Latent means of both batches from one forward pass (see ``train_step``)."""
        mu = bare(self.vae)(torch.cat([x_l, x_u]))[0]
        return mu[:len(x_l)], mu[len(x_l):]


def bare(module: nn.Module) -> nn.Module:
    """``module`` without its DDP wrapper, if it has one."""
    return module.module if isinstance(module, DistributedDataParallel) else module


class VAE(nn.Module):
    """Conv encoder to a diagonal Gaussian latent, transposed-conv decoder back.

    The encoder halves the side with stride-2 4x4 convs (BatchNorm, ReLU),
    doubling the width from ``channels``, until 4 x 4 maps; linear heads
    give the latent mean and log-variance. The decoder maps a latent to 4 x
    4 maps and doubles the side back with transposed convs, then a 1x1 conv
    gives 3 channels (unbounded: the inputs are standardised, not in
    [0, 1]).
    """

    def __init__(self, latent_dim: int, image_size: int, channels: int) -> None:
        super().__init__()
        depth = int(math.log2(image_size // BOTTLENECK))
        widths = [channels * 2**i for i in range(depth)]
        layers, width_in = [], 3
        for width in widths:
            layers += [nn.Conv2d(width_in, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            width_in = width
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        flat = widths[-1] * BOTTLENECK * BOTTLENECK
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)
        self.fc_decode = nn.Linear(latent_dim, flat)
        self.top = (widths[-1], BOTTLENECK, BOTTLENECK)
        layers, width_in = [], widths[-1]
        for width in [*widths[-2::-1], widths[0]]:
            layers += [nn.ConvTranspose2d(width_in, width, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            width_in = width
        self.decoder = nn.Sequential(*layers, nn.Conv2d(width_in, 3, 1))

    def forward(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, ...]:
        """``(mu, logvar)`` of ``x``; given ``noise``, also the decoding of ``mu + noise * sigma``.

        One call for what a step needs, so that DDP sees the whole use.
        """
        mu, logvar = self.encode(x)
        if noise is None:
            return mu, logvar
        return mu, logvar, self.decode(mu + noise * (0.5 * logvar).exp())

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(self.fc_decode(z).view(-1, *self.top))


class ImageSet(Dataset):
    """The images in memory, each with its label: 1 labeled, 0 unlabeled."""

    metainfo = dict(classes=('unlabeled', 'labeled'))

    def __init__(self, images: np.ndarray, is_labeled: np.ndarray) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        self.labels = torch.from_numpy(np.asarray(is_labeled, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return dict(images=self.images[index], labels=self.labels[index])


class BalancedBatchSampler:
    """Endless batches of ``chunks`` x (``batch_size`` labeled, ``batch_size`` unlabeled).

    Each set is walked through in a fresh seeded permutation per pass, as
    the official code cycles a shuffled loader per set; a set smaller than
    a batch repeats within it. Batch ``i`` is the same for a given seed
    whatever happened before, so mmengine's resume, which skips the
    batches already trained on, continues the same stream.

    On rank ``rank`` of ``world_size``, each set's stream is every
    ``world_size``-th draw of that one stream, from the ``rank``-th on (as
    ``DistributedSampler`` deals out a permutation): together the ranks
    walk the passes one process walks, ``world_size`` times faster, each
    on the whole arrays.
    """

    def __init__(self, is_labeled: np.ndarray, batch_size: int, chunks: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        self.groups = [np.flatnonzero(is_labeled), np.flatnonzero(~np.asarray(is_labeled, bool))]
        if not all(len(g) for g in self.groups):
            raise ValueError('VAAL needs at least one labeled and one unlabeled image')
        self.batch_size = batch_size
        self.chunks = chunks
        self.seed = seed
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        # batches per pass over the larger set (the Runner only reports it)
        return max(1, math.ceil(max(map(len, self.groups)) / (self.batch_size * self.world_size)))

    def __iter__(self):
        streams = [self._stream(g, i) for i, g in enumerate(self.groups)]
        while True:
            batch = []
            for _ in range(self.chunks):
                for stream in streams:
                    batch += [int(next(stream)) for _ in range(self.batch_size)]
            yield batch

    def _stream(self, group: np.ndarray, which: int):
        draws = (index for epoch in range(2**62)
                 for index in np.random.default_rng([self.seed, which, epoch]).permutation(group))
        # a set smaller than world_size still feeds every rank: the stream spans passes
        return itertools.islice(draws, self.rank, None, self.world_size)
