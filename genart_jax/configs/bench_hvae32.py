"""Benchmark recipe: the hierarchical VAE (VDVAE-style, `genart_jax.models.hvae`) at 32x32x3,
VDVAE's CIFAR-10 layout made narrower and shallower to be timed on a CPU as on a GPU: width 128
at every resolution (32, 16, 8, 4, 1), encoder blocks 3/2/2/1/1, latent groups 4/3/2/1/1 of 16
channels (11 groups), bottleneck 1/4, 10 logistic mixtures: 1,298,788 parameters (VDVAE's
CIFAR-10 network, `hvae_cifar32`, is width 384 and 43 groups: 39,145,700). VDVAE's step: AdamW
2e-4, betas (0.9, 0.9), weight decay 0.01, 100 warm-up updates, clip 200, skip 400, EMA 0.9999;
batch 32, float32 (`genart bench --dtypes float32,bfloat16` times bfloat16 too). `genart bench`
times it on synthetic uint8 batches; its PyTorch eager peer is genart_jax/bench/peers/hvae.py
(the same layers, initialisation, parameter count and step).

    genart bench --configs bench_hvae32 --devices 1 --out benchmarks/results/cpu-2core-bench-hvae32
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.family = "vae"
    c.model.arch = "hvae"
    c.model.hvae.resolutions = (32, 16, 8, 4, 1)
    c.model.hvae.widths = (128, 128, 128, 128, 128)
    c.model.hvae.enc_blocks = (3, 2, 2, 1, 1)
    c.model.hvae.dec_blocks = (4, 3, 2, 1, 1)
    c.model.hvae.zdim = 16
    c.model.hvae.bottleneck = 0.25
    c.model.hvae.num_mixtures = 10
    c.model.hvae.no_bias_above = 64
    c.model.dtype = "float32"
    c.data.image_size = 32
    c.data.channels = 3
    c.train.batch_size = 32
    return c
