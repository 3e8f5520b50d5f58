"""Benchmark recipe, and the base of dcgan_mnist and dcgan64_celeba: DCGAN at 32x32x3 with the
pytorch/examples layer widths (nz=100, ngf=ndf=64, kernel 4, BatchNorm, LeakyReLU 0.2 in D),
batch 128, Adam 2e-4 / 0.5.

    genart bench --configs bench_dcgan32 --out benchmarks/results/cpu
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.arch = "dcgan"
    c.model.latent_dim = 100
    c.model.dcgan.g_width = 64
    c.model.dcgan.d_width = 64
    c.data.image_size = 32
    c.data.channels = 3
    c.train.batch_size = 128
    return c
