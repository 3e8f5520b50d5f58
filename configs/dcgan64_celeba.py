"""DCGAN at 64x64x3 on TFDS celeb_a (the pytorch/examples DCGAN widths: nz=100, ngf=ndf=64).
Needs celeb_a prepared once as array_record (see README, "Standard datasets"); an accelerator is
advised.

    genart train --config configs/dcgan64_celeba.py --config.data.data_dir=/path/to/tfds
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.arch = "dcgan"
    c.model.latent_dim = 100
    c.model.g_width = 64
    c.model.d_width = 64
    c.data.name = "celeb_a"
    c.data.image_size = 64
    c.data.channels = 3
    c.data.cache = True  # one conversion to the training size, kept as uint8 (streaming needs
    # images prepared at that size: genart prepare folder ... --size S)
    c.train.steps = 30000
    c.train.batch_size = 128
    c.train.sample_every = 2000
    return c
