"""PyTorch reference of the same DCGAN (pytorch/examples layers at 32x32: ConvTranspose2d
k4 s2 p1 stages, BatchNorm, ReLU / LeakyReLU 0.2, BCE, Adam 2e-4 / 0.5), one D update and one
G update per step reusing the one generator forward, timed by `genart bench` like genart_jax's
step."""

from __future__ import annotations

from collections.abc import Callable

MIRRORS = ("gan", "dcgan")  # the (model.family, model.arch) this peer is written after


def peer_kwargs(cfg) -> dict | None:
    """`make_step`'s keyword arguments for a config of the architecture it mirrors."""
    return {"size": cfg.data.image_size, "nz": cfg.model.latent_dim}



def build(nz: int = 100, ngf: int = 64, ndf: int = 64, nc: int = 3, size: int = 32):
    import torch
    from torch import nn

    stages = {32: 3, 64: 4}[size]
    g_layers, c = [], ngf * 2 ** (stages - 1)
    g_layers += [nn.ConvTranspose2d(nz, c, 4, 1, 0, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
    for _ in range(stages - 1):
        g_layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2),
                     nn.ReLU(True)]
        c //= 2
    g_layers += [nn.ConvTranspose2d(c, nc, 4, 2, 1, bias=False), nn.Tanh()]
    d_layers, c = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)], ndf
    for _ in range(stages - 1):
        d_layers += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c * 2),
                     nn.LeakyReLU(0.2, True)]
        c *= 2
    d_layers += [nn.Conv2d(c, 1, 4, 1, 0, bias=False), nn.Flatten()]
    g, d = nn.Sequential(*g_layers), nn.Sequential(*d_layers)
    return g, d, torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999)), \
        torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))


def make_step(batch: int = 128, compile_model: bool = False, size: int = 32, nz: int = 100,
              dtype: str = "float32", device: str = "cpu") -> Callable[[], None]:
    """One train step of the PyTorch DCGAN on `device` ("cpu" or "cuda"), as a callable that
    returns when the step's work is done (the model built and, with `compile_model`, compiled
    on its first call); with dtype "bfloat16" the forward passes run under `torch.autocast`
    (`genart_jax.bench.peers.timing.autocast`)."""
    import torch
    from torch.nn import functional as F

    from genart_jax.bench.peers.timing import autocast, finish

    torch.manual_seed(0)
    g, d, opt_g, opt_d = build(nz=nz, size=size)
    g, d = g.to(device), d.to(device)
    if compile_model:
        g, d = torch.compile(g), torch.compile(d)
    real = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    ones = torch.ones(batch, 1, device=device)
    zeros = torch.zeros(batch, 1, device=device)

    def step():
        z = torch.randn(batch, nz, 1, 1, device=device)
        with autocast(dtype, device):
            fake = g(z)
            loss_d = (F.binary_cross_entropy_with_logits(d(real), ones)
                      + F.binary_cross_entropy_with_logits(d(fake.detach()), zeros))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        with autocast(dtype, device):
            loss_g = F.binary_cross_entropy_with_logits(d(fake), ones)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        finish(device)

    return step
