"""PyTorch eager reference of genart_jax's R3GAN (`genart_jax.models.r3gan`): the same layers
(inverted-bottleneck residual blocks with grouped 3x3 convolutions, bias + leaky ReLU 0.2, no
normalisation, the [1, 3, 3, 1] bilinear resamplers, the 4x4 generative and discriminative bases)
and parameter count, and the same step: the relativistic pairing loss with R1 and R2 (double
backward through D), Adam (0, 0.99), one D and one G update reusing one generator forward. Timed
by `genart bench` like genart_jax's step (no augmentation: the bench recipe has none)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

GAIN = math.sqrt(2.0 / (1.0 + 0.2**2))

MIRRORS = ("gan", "r3gan")  # the (model.family, model.arch) this peer is written after


def peer_kwargs(cfg) -> dict | None:
    """`make_step`'s keyword arguments for a config of the architecture it mirrors; None for
    what the peer does not implement (conditioning, augmentation, another loss, lazy R1/R2)."""
    m, s, t = cfg.model, cfg.model.r3gan, cfg.train
    if (m.num_classes or cfg.augment.ada or cfg.augment.diffaugment or cfg.augment.flip
            or t.gan_loss != "relativistic" or t.penalty_every != 1):
        return None
    return {"size": cfg.data.image_size, "nz": m.latent_dim, "channels": cfg.data.channels,
            "widths": tuple(s.widths), "blocks": tuple(s.blocks), "expansion": s.expansion,
            "group_size": s.group_size, "r1_gamma": t.r1_gamma, "r2_gamma": t.r2_gamma,
            "lr": cfg.d_optimizer.learning_rate}



def build(widths: Sequence[int] = (128, 128, 128, 64, 32), blocks: Sequence[int] = (1,) * 5,
          expansion: int = 2, group_size: int = 16, nz: int = 64, channels: int = 3):
    """(generator, discriminator) modules, NCHW, MSR-initialised as the JAX model."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    total = sum(blocks)

    def conv(cin, cout, k, gain=1.0, groups=1):
        layer = nn.Conv2d(cin, cout, k, padding=(k - 1) // 2, groups=groups, bias=False)
        fan_in = layer.weight[0].numel()
        nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(fan_in)) if gain else \
            nn.init.zeros_(layer.weight)
        return layer

    class Act(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(c))

        def forward(self, x):
            return F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2)

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            wide, gain = c * expansion, GAIN * total ** (-0.25)
            self.l1, self.a1 = conv(c, wide, 1, gain), Act(wide)
            self.l2, self.a2 = conv(wide, wide, 3, gain, wide // group_size), Act(wide)
            self.l3 = conv(wide, c, 1, 0.0)

        def forward(self, x):
            return x + self.l3(self.a2(self.l2(self.a1(self.l1(x)))))

    def shift(x, dim, by):  # out[i] = x[i - by], zero entering
        n = x.shape[dim]
        pad = [0, 0, 0, 0]
        side = 2 * (3 - dim)  # F.pad counts from the last dim: W (3) -> 0, H (2) -> 2
        pad[side if by > 0 else side + 1] = 1
        return F.pad(x, pad).narrow(dim, 0 if by > 0 else 1, n)

    def up(x):
        for dim in (2, 3):
            even = 0.25 * shift(x, dim, 1) + 0.75 * x
            odd = 0.75 * x + 0.25 * shift(x, dim, -1)
            shape = list(even.shape)
            shape[dim] *= 2
            x = torch.stack([even, odd], dim + 1).reshape(shape)
        return x

    def down(x):
        for dim in (2, 3):
            even, odd = x[:, :, ::2] if dim == 2 else x[..., ::2], \
                x[:, :, 1::2] if dim == 2 else x[..., 1::2]
            x = 0.375 * (even + odd) + 0.125 * (shift(odd, dim, 1) + shift(even, dim, -1))
        return x

    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.basis = nn.Parameter(torch.randn(widths[0], 4, 4))
            self.scale = nn.Linear(nz, widths[0], bias=False)
            nn.init.normal_(self.scale.weight, 0.0, 1 / math.sqrt(nz))
            self.stages = nn.ModuleList()
            for i, (w, b) in enumerate(zip(widths, blocks, strict=True)):
                change = conv(widths[i - 1], w, 1) if i > 0 and widths[i - 1] != w else None
                self.stages.append(nn.ModuleList([change or nn.Identity()]
                                                 + [Block(w) for _ in range(b)]))
            self.to_image = conv(widths[-1], channels, 1)

        def forward(self, z):
            x = self.basis[None] * self.scale(z)[:, :, None, None]
            for i, stage in enumerate(self.stages):
                if i > 0:
                    x = up(stage[0](x))
                for block in stage[1:]:
                    x = block(x)
            return self.to_image(x)

    class D(nn.Module):
        def __init__(self):
            super().__init__()
            ws, bs = widths[::-1], blocks[::-1]
            self.from_image = conv(channels, ws[0], 1)
            self.stages = nn.ModuleList()
            for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
                nxt = ws[i + 1] if i + 1 < len(ws) else w
                change = conv(w, nxt, 1) if nxt != w else nn.Identity()
                self.stages.append(nn.ModuleList([Block(w) for _ in range(b)] + [change]))
            c = ws[-1]
            self.basis = nn.Conv2d(c, c, 4, groups=c, bias=False)
            nn.init.normal_(self.basis.weight, 0.0, 1 / 4.0)
            self.head = nn.Linear(c, 1, bias=False)
            nn.init.normal_(self.head.weight, 0.0, 1 / math.sqrt(c))

        def forward(self, x):
            x = self.from_image(x)
            last = len(self.stages) - 1
            for i, stage in enumerate(self.stages):
                for block in stage[:-1]:
                    x = block(x)
                if i < last:
                    x = stage[-1](down(x))
            return self.head(self.basis(x).flatten(1))[:, 0]

    return G(), D()


def make_step(batch: int = 32, compile_model: bool = False, size: int = 64, nz: int = 64,
              dtype: str = "float32", device: str = "cpu", widths: Sequence[int] = (128,) * 5,
              blocks: Sequence[int] = (1,) * 5, expansion: int = 2, group_size: int = 16,
              channels: int = 3, r1_gamma: float = 0.1, r2_gamma: float = 0.1,
              lr: float = 2e-4) -> Callable[[], None]:
    """One train step of the PyTorch R3GAN on `device`, as a callable that returns when the
    step's work is done; bfloat16 runs the forward passes under `torch.autocast`."""
    import torch
    from torch.nn import functional as F

    from genart_jax.bench.peers.timing import autocast, finish

    torch.manual_seed(0)
    g, d = build(widths, blocks, expansion, group_size, nz, channels)
    g, d = g.to(device), d.to(device)
    if compile_model:
        g, d = torch.compile(g), torch.compile(d)
    opt_g = torch.optim.Adam(g.parameters(), lr, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(d.parameters(), lr, betas=(0.0, 0.99))
    real_data = torch.rand(batch, channels, size, size, device=device) * 2 - 1

    def logits_and_penalty(x):
        x = x.detach().requires_grad_(True)
        with autocast(dtype, device):
            logits = d(x).float()
        (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
        return logits, grad.float().square().sum([1, 2, 3])

    def step():
        z = torch.randn(batch, nz, device=device)
        with autocast(dtype, device):
            fake = g(z)
        real_logits, r1 = logits_and_penalty(real_data)
        fake_logits, r2 = logits_and_penalty(fake)
        loss_d = (F.softplus(fake_logits - real_logits)
                  + 0.5 * (r1_gamma * r1 + r2_gamma * r2)).mean()
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        with autocast(dtype, device):
            with torch.no_grad():
                real_logits = d(real_data).float()
            loss_g = F.softplus(real_logits - d(fake).float()).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        finish(device)

    return step
