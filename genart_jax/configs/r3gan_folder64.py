"""R3GAN at 64x64 RGB on the user's own prepared folder data set (`genart prepare`), with the
paper-informed settings: relativistic pairing loss, R1 + R2 (gamma 1), Adam (0, 0.99), EMA, and
adaptive augmentation toward r_t = 0.6 (ADA's 500 kimg speed), for 3,000-10,000 images.

    genart train --config r3gan_folder64 --config.data.name=NAME

A GPU recipe (about 21M parameters per network); on 2 CPU cores a step takes seconds. Not yet
measured for quality here: no folder data set was trained to convergence in this change.
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.arch = "r3gan"
    c.model.latent_dim = 128
    c.model.r3gan.widths = (384, 384, 384, 192, 96)  # 4, 8, 16, 32, 64 px
    c.model.r3gan.blocks = (2, 2, 2, 2, 2)
    c.model.r3gan.expansion = 2
    c.model.r3gan.group_size = 16
    c.data.name = "my_folder"  # set --config.data.name=NAME of the prepared folder
    c.data.image_size = 64
    c.data.channels = 3
    c.train.steps = 100_000
    c.train.batch_size = 64
    c.train.sample_every = 2000
    c.train.gan_loss = "relativistic"
    c.train.r1_gamma = 1.0
    c.train.r2_gamma = 1.0
    c.train.ema_halflife_kimg = 10.0
    for opt in (c.g_optimizer, c.d_optimizer):
        opt.learning_rate = 2e-4
        opt.b1 = 0.0
        opt.b2 = 0.99
    c.augment.ada = "adaptive"
    c.augment.ada_target = 0.6
    c.augment.ada_kimg = 500.0
    c.checkpoint.every_steps = 5000
    return c
