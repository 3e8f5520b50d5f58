"""MLP VAE on TFDS mnist at 28x28x1 (Bernoulli, dynamic binarisation). Needs mnist prepared
once as array_record (README, "Standard datasets").

    genart train --config configs/vae_mnist.py --config.data.data_dir=/path/to/tfds
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.family = "vae"
    c.model.arch = "mlp"
    c.model.latent_dim = 32
    c.model.vae_hidden = (512, 256)
    c.data.name = "mnist"
    c.data.image_size = 28
    c.data.channels = 1
    c.data.cache = False
    c.vae.likelihood = "bernoulli"
    c.vae.kl_warmup_steps = 2000
    c.train.steps = 50000
    c.train.batch_size = 128
    c.train.sample_every = 5000
    return c
