"""PyTorch eager peer of genart_jax's hierarchical VAE (`genart_jax.models.hvae.HVAE`, after
VDVAE) and of VDVAE's train step, for `genart bench`.

The network is the JAX model's layer for layer, NCHW instead of NHWC: the same bottleneck blocks
(GELU (exact) before each of conv 1x1 -> 3x3 -> 3x3 -> 1x1, 1x1 convs at resolutions <= 2), the
encoder (3x3 conv from the normalised uint8 image, residual blocks, the activation before each
resolution's pooling block kept, average pooling, widths zero-padded or truncated), the top-down
decoder (one latent group per block: prior and residual from one block on the state, posterior
from one block on concat(state, activation), x += z_proj(z), a residual block; nearest
unpooling onto a learned start bias up to `no_bias_above`), the per-channel gain and bias and
the 1x1 conv to the DMoL's parameters in genart_jax's layout [logits | means | log scales |
coefficients]; the same initialisation (PyTorch's default conv weights, zero biases, the prior's
last conv zero, the residual blocks' last convs and z_proj scaled by sqrt(1 / number of blocks)),
so the parameter count is `hvae.count_params` of the same settings. The likelihood is
`genart_jax.dmol.log_prob` transcribed (integer bins, the edge bins to +-infinity,
log(sigmoid(a) - sigmoid(b)) without cancellation), the loss the mean negative ELBO in nats per
dimension (`hvae.loss_per_dim`).

The step is VDVAE's (openai/vdvae `train.py`, `training_step`; `hps.py` cifar10): AdamW
(betas 0.9, 0.9, weight decay 0.01), linear learning-rate warm-up, the gradient norm clipped to
`grad_clip` and the update skipped when that (unclipped) norm is not finite or not below
`skip_threshold` (one device-to-host read per step, as the reference), and an EMA of the
weights updated after each applied update. bfloat16 runs the blocks under `torch.autocast`;
the Gaussians' statistics, the KL, the output conv and the likelihood stay float32, as the JAX
model with `dtype=bfloat16`.

`forward(x, eps=None)` takes the noise of each latent group explicitly (a list of (N, zdim, r,
r) tensors, top group first); JAX's HVAE draws group g from `fold_in(key, g)`, so a test feeds
those same draws here (tests/test_hvae_peer.py) and gets the JAX loss. `from_jax_params`
converts a JAX parameter tree into this module's state dict."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

MIN_LOG_SCALE = -7.0  # genart_jax.dmol.MIN_LOG_SCALE

MIRRORS = ("vae", "hvae")  # the (model.family, model.arch) this peer is written after
# torch.compile is timed on the GPU only: on the CPU, inductor's C++ compile of the unrolled
# blocks takes minutes, longer than a `genart bench` run of the whole recipe.
COMPILE_ON = ("cuda",)


def peer_kwargs(cfg) -> dict | None:
    """`make_step`'s keyword arguments for an hvae config (`harness.peer_for`): the model's
    `HVAE` attributes (`model.hvae.*` at `data.image_size` x `data.channels`) and the step's
    (`hvae.*`); None for what the peer does not implement: an optimizer other than AdamW
    (`hvae.optimizer="adamax"`) or class conditioning. The JAX config's 0 ("off") becomes the
    peer's own off: no clipping (clip at infinity), skip_threshold -1, no EMA (JAX's EMA at
    rate 0 is the parameters themselves)."""
    from genart_jax.models.hvae import SETTINGS

    h = cfg.hvae
    if h.optimizer != "adamw" or cfg.model.num_classes:
        return None
    s = cfg.model.hvae
    model = {k: tuple(s[k]) if isinstance(s[k], tuple | list) else s[k] for k in SETTINGS}
    return {"image_size": cfg.data.image_size, "channels": cfg.data.channels, **model,
            "lr": h.learning_rate, "betas": (h.b1, h.b2), "weight_decay": h.weight_decay,
            "eps": h.eps, "warmup_iters": h.warmup_steps,
            "grad_clip": h.grad_clip if h.grad_clip > 0 else math.inf,
            "skip_threshold": h.skip_threshold if h.skip_threshold > 0 else -1,
            "ema_rate": h.ema_rate or None}


def num_dmol_params(channels: int, num_mixtures: int) -> int:
    """genart_jax.dmol.num_params: M * (1 + 2C + C(C-1)/2)."""
    return num_mixtures * (1 + 2 * channels + channels * (channels - 1) // 2)


def build(image_size: int = 32, channels: int = 3, resolutions: Sequence[int] = (32, 16, 8, 4, 1),
          widths: Sequence[int] = (384,) * 5, enc_blocks: Sequence[int] = (12, 7, 7, 4, 3),
          dec_blocks: Sequence[int] = (22, 11, 6, 3, 1), zdim: int = 16,
          bottleneck: float = 0.25, num_mixtures: int = 10, no_bias_above: int = 64,
          input_mean: float = 127.5, input_std: float = 64.0):
    """The HVAE as one nn.Module (arguments as `genart_jax.models.hvae.HVAE`'s attributes);
    `forward(x, eps=None)` -> (DMoL parameters (N, P, S, S) float32, KL per group (N, G)).
    Build it under `torch.device("meta")` to count the parameters without allocating them."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from genart_jax.models.hvae import check_schema

    check_schema(image_size, resolutions, widths, enc_blocks, dec_blocks)
    n_enc, n_dec = sum(enc_blocks), sum(dec_blocks)

    def conv(cin: int, cout: int, k: int, scale: float = 1.0) -> nn.Conv2d:
        layer = nn.Conv2d(cin, cout, k, padding=(k - 1) // 2)  # PyTorch's default weights
        with torch.no_grad():
            layer.weight.mul_(math.sqrt(scale))
            layer.bias.zero_()
        return layer

    def fit_width(x, width: int):
        c = x.shape[1]
        if c >= width:
            return x[:, :width]
        return F.pad(x, (0, 0, 0, 0, 0, width - c))

    def f32(x):
        return x if x.dtype == torch.float64 else x.float()

    class Block(nn.Module):
        def __init__(self, cin: int, middle: int, out: int, use_3x3: bool, residual: bool,
                     last_scale: float = 1.0):
            super().__init__()
            k = 3 if use_3x3 else 1
            self.residual = residual
            self.convs = nn.ModuleList([conv(cin, middle, 1), conv(middle, middle, k),
                                        conv(middle, middle, k), conv(middle, out, 1, last_scale)])

        def forward(self, x):
            h = x
            for c in self.convs:
                h = c(F.gelu(h))
            return x + h if self.residual else h

    class DecBlock(nn.Module):
        def __init__(self, width: int, use_3x3: bool):
            super().__init__()
            mid = int(width * bottleneck)
            self.enc = Block(2 * width, mid, 2 * zdim, use_3x3, False)
            self.prior = Block(width, mid, 2 * zdim + width, use_3x3, False, 0.0)
            self.z_proj = conv(zdim, width, 1, 1.0 / n_dec)
            self.resnet = Block(width, mid, width, use_3x3, True, 1.0 / n_dec)

        def forward(self, x, acts, eps):
            feats = self.prior(x)
            pm, ps = f32(feats[:, :2 * zdim]).chunk(2, dim=1)
            qm, qs = f32(self.enc(torch.cat([x, acts.to(x.dtype)], dim=1))).chunk(2, dim=1)
            z = qm + torch.exp(qs) * eps
            kl = (-0.5 + ps - qs
                  + 0.5 * (torch.exp(2.0 * qs) + (qm - pm) ** 2) * torch.exp(-2.0 * ps))
            x = x + feats[:, 2 * zdim:]
            x = self.resnet(x + self.z_proj(z))
            return x, kl.flatten(1).sum(-1)

    class HVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.in_conv = conv(channels, widths[0], 3)
            self.encoder = nn.ModuleList(
                Block(w, int(w * bottleneck), w, r > 2, True, 1.0 / n_enc)
                for r, w, n in zip(resolutions, widths, enc_blocks, strict=True)
                for _ in range(n))
            order = list(zip(resolutions, widths, dec_blocks, strict=True))[::-1]
            self.decoder = nn.ModuleList(DecBlock(w, r > 2) for r, w, n in order
                                         for _ in range(n))
            self.bias_x = nn.ParameterDict({f"x{r}": nn.Parameter(torch.zeros(w, r, r))
                                            for r, w, _ in order if r <= no_bias_above})
            self.gain = nn.Parameter(torch.ones(widths[0]))
            self.bias = nn.Parameter(torch.zeros(widths[0]))
            self.out_conv = conv(widths[0], num_dmol_params(channels, num_mixtures), 1)

        def latent_shapes(self) -> list[tuple[int, int, int]]:
            """(zdim, r, r) per latent group, top (lowest r) first."""
            return [(zdim, r, r) for r, n in zip(resolutions[::-1], dec_blocks[::-1],
                                                 strict=True) for _ in range(n)]

        def encode(self, x):
            h = self.in_conv((f32(x) - input_mean) / input_std)
            acts, blocks, last = [], iter(self.encoder), len(resolutions) - 1
            for i, count in enumerate(enc_blocks):
                for b in range(count):
                    pools = i < last and b == count - 1
                    if pools:
                        acts.append(h)
                    h = next(blocks)(h)
                    if pools:
                        h = fit_width(F.avg_pool2d(h, resolutions[i] // resolutions[i + 1]),
                                      widths[i + 1])
                if i == last:
                    acts.append(h)
            return acts

        def forward(self, x, eps: Sequence[Any] | None = None):
            """x: uint8 images (N, C, S, S); eps: N(0, I) noise per group (N, zdim, r, r), top
            group first (drawn here when None)."""
            n = x.shape[0]
            if eps is None:
                eps = [torch.randn(n, *s, device=x.device) for s in self.latent_shapes()]
            acts = self.encode(x)
            blocks, g, prev, kls = iter(self.decoder), 0, None, []
            order = list(zip(resolutions, widths, dec_blocks, strict=True))[::-1]
            for i, (r, w, count) in enumerate(order):
                bias = self.bias_x[f"x{r}"] if r <= no_bias_above else None
                h = (bias.expand(n, w, r, r) if bias is not None
                     else torch.zeros(n, w, r, r, device=x.device))
                if prev is not None:
                    up = fit_width(prev, w)
                    h = h + F.interpolate(up, scale_factor=r // prev.shape[-1], mode="nearest")
                for _ in range(count):
                    h, kl = next(blocks)(h, acts[len(order) - 1 - i], eps[g])
                    kls.append(kl)
                    g += 1
                prev = h
            with torch.autocast(x.device.type, enabled=False):
                h = f32(prev) * self.gain.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
                out = self.out_conv(h)
            return out, torch.stack(kls, dim=-1)

    return HVAE()


def dmol_log_likelihood(params, x, bits: int = 8):
    """genart_jax.dmol.log_likelihood in PyTorch: params (N, P, H, W), images (N, C, H, W)
    integer values 0..2^bits-1 -> log P(image) per example (N,), nats (float32, or float64
    for float64 params)."""
    import torch
    from torch.nn import functional as F

    c = x.shape[1]
    top = 2**bits - 1
    p = params.permute(0, 2, 3, 1)  # (N, H, W, P)
    p = p if p.dtype == torch.float64 else p.float()
    m = p.shape[-1] // (1 + 2 * c + c * (c - 1) // 2)
    lead = p.shape[:-1]
    logits = p[..., :m]
    means = p[..., m:m + c * m].reshape(*lead, c, m)
    log_scales = p[..., m + c * m:m + 2 * c * m].reshape(*lead, c, m).clamp_min(MIN_LOG_SCALE)
    coeffs = torch.tanh(p[..., m + 2 * c * m:]).reshape(*lead, c * (c - 1) // 2, m)
    k = x.permute(0, 2, 3, 1).long()  # (N, H, W, C)
    xf = k.to(p.dtype) * (2.0 / top) - 1.0
    rows, pair = [], 0
    for ch in range(c):
        mean = means[..., ch, :]
        for j in range(ch):
            mean = mean + coeffs[..., pair, :] * xf[..., j, None]
            pair += 1
        rows.append(mean)
    centred = xf[..., None] - torch.stack(rows, dim=-2)
    half = 1.0 / top
    inv_scale = torch.exp(-log_scales)
    upper, lower = inv_scale * (centred + half), inv_scale * (centred - half)
    log_cdf_upper, log_sf_lower = F.logsigmoid(upper), F.logsigmoid(-lower)
    width = (2.0 * half * inv_scale).clamp_min(1e-30)
    big = width > math.log(2.0)  # log(1 - exp(-width)), each branch on safe inputs
    log1mexp = torch.where(big, torch.log1p(-torch.exp(-torch.where(big, width, 1.0))),
                           torch.log(-torch.expm1(-torch.where(big, 0.5, width))))
    log_mass = log_cdf_upper + log_sf_lower + log1mexp
    kk = k[..., None]
    per_channel = torch.where(kk == 0, log_cdf_upper,
                              torch.where(kk == top, log_sf_lower, log_mass))
    lp = torch.logsumexp(F.log_softmax(logits, dim=-1) + per_channel.sum(-2), dim=-1)
    return lp.flatten(1).sum(-1)


def loss_per_dim(model, x, eps=None):
    """(the batch's mean negative ELBO in nats per dimension (`hvae.loss_per_dim`), per-example
    distortion (N,), KL per group (N, G))."""
    params, kls = model(x, eps)
    distortion = -dmol_log_likelihood(params, x)
    neg_elbo = distortion + kls.sum(-1)
    return neg_elbo.mean() / x[0].numel(), distortion, kls


def from_jax_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A JAX HVAE's parameter tree (`variables["params"]`) -> this module's state dict (torch
    float tensors): conv kernels (kh, kw, in, out) -> weights (out, in, kh, kw),
    `encoder_i/Conv_k` -> `encoder.i.convs.k`, `decoder_g/{enc,prior,resnet}/Conv_k` ->
    `decoder.g.{...}.convs.k`, `bias_x{r}` (r, r, w) -> `bias_x.x{r}` (w, r, r)."""
    import numpy as np
    import torch

    out: dict[str, Any] = {}

    def put(name: str, a) -> None:
        out[name] = torch.from_numpy(np.array(a))

    def conv(prefix: str, p) -> None:
        put(prefix + ".weight", np.transpose(np.asarray(p["kernel"]), (3, 2, 0, 1)))
        put(prefix + ".bias", p["bias"])

    for key, value in params.items():
        if key in ("in_conv", "out_conv"):
            conv(key, value)
        elif key in ("gain", "bias"):
            put(key, value)
        elif key.startswith("bias_x"):
            put(f"bias_x.x{key[6:]}", np.transpose(np.asarray(value), (2, 0, 1)))
        elif key.startswith("encoder_"):
            for c, p in value.items():
                conv(f"encoder.{key[8:]}.convs.{c[5:]}", p)
        elif key.startswith("decoder_"):
            g = key[8:]
            for part, sub in value.items():
                if part == "z_proj":
                    conv(f"decoder.{g}.z_proj", sub)
                else:
                    for c, p in sub.items():
                        conv(f"decoder.{g}.{part}.convs.{c[5:]}", p)
        else:
            raise KeyError(f"unknown HVAE parameter {key!r}")
    return out


def make_step(batch: int = 16, compile_model: bool = False, dtype: str = "float32",
              device: str = "cpu", lr: float = 2e-4, betas: tuple[float, float] = (0.9, 0.9),
              weight_decay: float = 0.01, eps: float = 1e-8, warmup_iters: int = 100,
              grad_clip: float = 200.0, skip_threshold: float = 400.0,
              ema_rate: float | None = 0.9999, **model_kwargs: Any) -> Callable[[], object]:
    """One VDVAE train step of the PyTorch HVAE on `device` ("cpu" or "cuda"), as a callable
    returning (loss, gradient norm, skipped) when the step's work is done. `model_kwargs`: the
    `build` arguments (HVAE's attributes); the defaults of the rest are VDVAE's cifar10
    (`skip_threshold` -1 never skips, `ema_rate` None keeps no EMA). A fixed uint8 batch is
    reused; the latent noise is drawn every step."""
    import copy

    import torch

    from genart_jax.bench.peers.timing import autocast, finish

    torch.manual_seed(0)
    model = build(**model_kwargs).to(device)
    ema = copy.deepcopy(model).requires_grad_(False) if ema_rate else None
    ema_params = list(ema.parameters()) if ema is not None else []
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr, betas=betas, eps=eps, weight_decay=weight_decay)
    warm = max(float(warmup_iters), 1.0)
    it = [0]
    loss_fn = torch.compile(model) if compile_model else model
    size, channels = model_kwargs.get("image_size", 32), model_kwargs.get("channels", 3)
    x = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8, device=device)
    counts = {"skipped_updates": 0}

    def step():
        for group in opt.param_groups:  # linear warm-up, counted in iterations
            group["lr"] = lr * min(1.0, (it[0] + 1) / warm)
        it[0] += 1  # skipped or not, as the reference's scheduler
        opt.zero_grad(set_to_none=True)
        with autocast(dtype, device):
            loss, _, _ = loss_per_dim(loss_fn, x)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip).item()
        skipped = not math.isfinite(norm) or (skip_threshold != -1 and norm >= skip_threshold)
        if skipped:
            counts["skipped_updates"] += 1
        else:
            opt.step()
            if ema is not None:
                with torch.no_grad():
                    torch._foreach_lerp_(ema_params, params, 1.0 - ema_rate)
        finish(device)
        return loss.detach(), norm, skipped

    step.model, step.ema, step.optimizer, step.counts, step.x = model, ema, opt, counts, x
    return step
