"""Benchmark recipe, and the base of convvae64_celeba: a convolutional VAE at 32x32x3 (three
encoder stages 32/64/128 channels, k4 s2 p1, LeakyReLU 0.2; latent 128; decoder Dense ->
4x4x128 then k4 s2 p1 transposed convs with bias, ReLU), discretised Gaussian likelihood with a
learned per-pixel log-scale, batch 128, Adam 1e-3 / (0.9, 0.999), float32. `genart bench`
times it on synthetic batches of this shape; the PyTorch peer is
genart_jax/bench/peers/torch_vae.py.

    genart bench --configs bench_convvae32 --out benchmarks/results/cpu-convvae
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.family = "vae"
    c.model.arch = "conv"
    c.model.latent_dim = 128
    c.model.conv_vae.width = 32
    c.model.dtype = "float32"
    c.data.image_size = 32
    c.data.channels = 3
    c.vae.likelihood = "gaussian"
    c.vae.scale = "learned"
    c.vae.discretized = True
    c.train.batch_size = 128
    return c
