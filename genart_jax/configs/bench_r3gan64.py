"""Benchmark recipe: R3GAN at 64x64x3 (stages 4..64 px of 128, 128, 128, 64, 32 channels, one
block each, expansion 2, groups of 16), relativistic pairing loss with R1 and R2 (gamma 0.1),
Adam (0, 0.99), batch 32, no augmentation; its PyTorch eager peer is
genart_jax/bench/peers/torch_r3gan.py (same layers, parameter count and losses).

    genart bench --configs bench_r3gan64 --devices 1 --out benchmarks/results/cpu-2core-r3gan64
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.arch = "r3gan"
    c.model.latent_dim = 64
    c.model.r3gan.widths = (128, 128, 128, 64, 32)
    c.model.r3gan.blocks = (1, 1, 1, 1, 1)
    c.model.r3gan.expansion = 2
    c.model.r3gan.group_size = 16
    c.data.image_size = 64
    c.data.channels = 3
    c.train.batch_size = 32
    c.train.gan_loss = "relativistic"
    c.train.r1_gamma = 0.1
    c.train.r2_gamma = 0.1
    for opt in (c.g_optimizer, c.d_optimizer):
        opt.b1 = 0.0
        opt.b2 = 0.99
    return c
