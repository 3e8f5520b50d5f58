"""Convolutional VAE at 64x64x3 on TFDS celeb_a, discretised Gaussian likelihood with learned
per-pixel scale. Needs celeb_a prepared once as array_record (README, "Standard datasets").

    genart train --config configs/convvae64_celeba.py --config.data.data_dir=/path/to/tfds
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.family = "vae"
    c.model.arch = "conv"
    c.model.latent_dim = 128
    c.model.vae_width = 32
    c.data.name = "celeb_a"
    c.data.image_size = 64
    c.data.channels = 3
    c.data.cache = True  # one conversion to the training size, kept as uint8 (streaming needs
    # images prepared at that size: genart prepare folder ... --size S)
    c.vae.likelihood = "gaussian"
    c.vae.scale = "learned"
    c.vae.discretized = True
    c.vae.kl_warmup_steps = 5000
    c.vae.eval_split = "validation"
    c.train.steps = 100000
    c.train.batch_size = 128
    c.train.sample_every = 5000
    return c
