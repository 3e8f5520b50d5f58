"""Default recipe: DCGAN on the embedded digits (scikit-learn's 1797 8x8 digits, shown at 32x32).

    genart train                       # this config; about 3 minutes on 2 CPU cores
    genart train --config dcgan_digits --config.train.steps=500

Expect recognisable digits in runs/dcgan_digits/samples/final.png.
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.arch = "dcgan"
    c.model.latent_dim = 64
    c.model.dcgan.g_width = 32
    c.model.dcgan.d_width = 32
    c.data.name = "digits"
    c.data.image_size = 32
    c.data.channels = 1
    c.train.steps = 2000
    c.train.batch_size = 64
    c.train.sample_every = 500
    return c
