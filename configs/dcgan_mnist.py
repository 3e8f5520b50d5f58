"""DCGAN on TFDS mnist at 32x32x1. Needs the dataset prepared once as array_record (see README,
"Standard datasets"); reading it needs no TensorFlow.

    genart train --config configs/dcgan_mnist.py --config.data.data_dir=/path/to/tfds
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.arch = "dcgan"
    c.model.latent_dim = 100
    c.model.g_width = 64
    c.model.d_width = 64
    c.data.name = "mnist"
    c.data.image_size = 32
    c.data.channels = 1
    c.data.cache = True  # one conversion to the training size, kept as uint8 (streaming needs
    # images prepared at that size: genart prepare folder ... --size S)
    c.train.steps = 10000
    c.train.batch_size = 128
    c.train.sample_every = 1000
    return c
