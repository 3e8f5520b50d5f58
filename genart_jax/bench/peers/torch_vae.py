"""PyTorch reference of genart_jax's convolutional VAE (genart_jax/models/vae.py, arch "conv")
and its train step (genart_jax/train/vae_step.py): encoder Conv2d k4 s2 p1 stages of width * 2^i
channels with bias and LeakyReLU 0.2, a Linear head to (mu, logvar); decoder Linear -> 4x4xc0,
ReLU, ConvTranspose2d k4 s2 p1 stages with bias and ReLU, a last ConvTranspose2d to the image
channels (Gaussian means); a learned per-pixel log-scale. Loss: the mean negative ELBO with one
reparameterised sample, the discretised Gaussian log-likelihood (256 bins over [-1, 1], edge
bins extended to +-infinity, density fallback for tiny masses) and the closed-form KL; Adam.
Timed by `genart bench` like genart_jax's step."""

from __future__ import annotations

import math
from collections.abc import Callable

LOG_2PI = math.log(2.0 * math.pi)


MIRRORS = ("vae", "conv")  # the (model.family, model.arch) this peer is written after


def peer_kwargs(cfg) -> dict | None:
    """`make_step`'s keyword arguments for a config of the architecture it mirrors; None for
    what the peer does not implement (it is unconditional, discretised learned-scale only)."""
    o = cfg.optimizer
    if (o.name != "adam" or cfg.model.num_classes or cfg.vae.likelihood != "gaussian"
            or cfg.vae.scale != "learned" or not cfg.vae.discretized):
        return None
    return {"size": cfg.data.image_size, "channels": cfg.data.channels,
            "latent": cfg.model.latent_dim, "width": cfg.model.conv_vae.width,
            "lr": o.learning_rate, "betas": (o.b1, o.b2), "eps": o.eps}


def num_stages(size: int) -> int:
    k = math.log2(size / 4)
    if k < 1 or k != int(k):
        raise ValueError(f"the conv VAE needs a square image size of 4 * 2^k, k >= 1; got {size}")
    return int(k)


def build(size: int = 32, channels: int = 3, latent: int = 128, width: int = 32):
    """The VAE as one nn.Module whose forward(x, eps) is the mean negative ELBO."""
    import torch
    from torch import nn

    stages = num_stages(size)
    c0 = width * 2 ** (stages - 1)

    class ConvVAE(nn.Module):
        def __init__(self):
            super().__init__()
            enc, c = [], channels
            for i in range(stages):
                enc += [nn.Conv2d(c, width * 2**i, 4, 2, 1), nn.LeakyReLU(0.2)]
                c = width * 2**i
            self.encoder = nn.Sequential(*enc, nn.Flatten())
            self.enc_head = nn.Linear(4 * 4 * c0, 2 * latent)
            self.dec_in = nn.Linear(latent, 4 * 4 * c0)
            dec, c = [], c0
            for _ in range(stages - 1):
                dec += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.ReLU()]
                c //= 2
            self.decoder = nn.Sequential(*dec, nn.ConvTranspose2d(c, channels, 4, 2, 1))
            self.log_scale = nn.Parameter(torch.zeros(channels, size, size))

        def forward(self, x, eps):
            mu, logvar = self.enc_head(self.encoder(x)).chunk(2, dim=-1)
            z = mu + torch.exp(0.5 * logvar) * eps
            h = torch.relu(self.dec_in(z)).view(-1, c0, 4, 4)
            mean = self.decoder(h)
            log_px_z = discretized_gaussian_log_likelihood(x, mean, self.log_scale)
            kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(-1)
            return (kl - log_px_z).mean()

    return ConvVAE()


def discretized_gaussian_log_likelihood(x, mean, log_scale, bins: int = 256):
    """genart_jax.losses.discretized_gaussian_log_likelihood, per example (summed over pixels)."""
    import torch

    log_scale = log_scale.expand_as(mean)
    half = 1.0 / (bins - 1)
    inv = torch.exp(-log_scale)
    upper = torch.special.ndtr((x + half - mean) * inv)
    lower = torch.special.ndtr((x - half - mean) * inv)
    upper = torch.where(x > 1 - half, torch.ones_like(upper), upper)
    lower = torch.where(x < -1 + half, torch.zeros_like(lower), lower)
    mass = upper - lower
    log_density = (-0.5 * LOG_2PI - log_scale - 0.5 * ((x - mean) * inv) ** 2
                   + math.log(2 * half))
    lp = torch.where(mass > 1e-12, torch.log(mass.clamp_min(1e-12)), log_density)
    return lp.flatten(1).sum(-1)


def make_step(batch: int = 128, compile_model: bool = False, size: int = 32, channels: int = 3,
              latent: int = 128, width: int = 32, lr: float = 1e-3,
              betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
              dtype: str = "float32", device: str = "cpu") -> Callable[[], object]:
    """One train step of the PyTorch conv VAE on `device` ("cpu" or "cuda"), as a callable
    that returns when the step's work is done (the model built and, with `compile_model`,
    compiled on its first call); with dtype "bfloat16" the forward pass runs under
    `torch.autocast` (`genart_jax.bench.peers.timing.autocast`)."""
    import torch

    from genart_jax.bench.peers.timing import autocast, finish

    torch.manual_seed(0)
    model = build(size=size, channels=channels, latent=latent, width=width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr, betas=betas, eps=eps)
    loss_fn = torch.compile(model) if compile_model else model
    x = torch.rand(batch, channels, size, size, device=device) * 2 - 1

    def step():
        noise = torch.randn(batch, latent, device=device)
        opt.zero_grad()
        with autocast(dtype, device):
            loss = loss_fn(x, noise)
        loss.backward()
        opt.step()
        finish(device)
        return loss

    return step
