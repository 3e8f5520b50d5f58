"""Class-conditional DCGAN on the embedded digits: dcgan_digits's recipe plus the digit's class
as a theme (a label embedding into the generator, a projection discriminator).

    genart train --config configs/cdcgan_digits.py
    genart sample --workdir runs/cdcgan_digits --theme 1,4,7 --out themes.png

Training grids and `genart sample` without --theme show one class per column (0..9).
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.arch = "dcgan"
    c.model.latent_dim = 64
    c.model.g_width = 32
    c.model.d_width = 32
    c.model.num_classes = 10
    c.data.name = "digits"
    c.data.image_size = 32
    c.data.channels = 1
    c.train.steps = 2000
    c.train.batch_size = 64
    c.train.sample_every = 500
    c.sample.num = 100
    return c
