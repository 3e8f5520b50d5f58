"""R3GAN at 256x256 RGB on the user's own prepared folder data set, after the paper's FFHQ-256
network (stage widths 768 .. 96, two blocks per stage, groups of 16 channels, expansion 2) with
R1 + R2 gamma 150 (the paper's starting value, here held constant: no gamma/lr schedule),
Adam (0, 0.99), EMA, bfloat16 compute and adaptive augmentation. A GPU recipe:

    genart train --config r3gan_folder256 --config.data.name=NAME

Throughput on one GPU (synthetic data): see the closing note of issue 18; not measured here.
"""

from genart_jax.config import recipe


def get_config():
    c = recipe("r3gan_folder64")  # the same losses, optimizer, EMA and augmentation
    c.model.latent_dim = 512
    c.model.r3gan.widths = (768, 768, 768, 768, 384, 192, 96)  # 4 .. 256 px
    c.model.r3gan.blocks = (2, 2, 2, 2, 2, 2, 2)
    c.model.dtype = "bfloat16"
    c.data.image_size = 256
    c.train.steps = 200_000
    c.train.batch_size = 32
    c.train.sample_every = 5000
    c.train.r1_gamma = 150.0
    c.train.r2_gamma = 150.0
    return c
