"""Conditional MLP VAE on the embedded digits: the class label goes into encoder and decoder, so
a theme (digit) is chosen at sampling time.

    genart train --config configs/cvae_digits.py
    genart sample --workdir runs/cvae_digits --theme 1,4,7 --out themes.png
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.family = "vae"
    c.model.arch = "mlp"
    c.model.latent_dim = 16
    c.model.vae_hidden = (512, 256)
    c.model.num_classes = 10
    c.data.name = "digits"
    c.data.image_size = 28
    c.data.channels = 1
    c.vae.likelihood = "bernoulli"
    c.vae.binarize = True
    c.vae.kl_warmup_steps = 500
    c.train.steps = 4000
    c.train.batch_size = 64
    c.train.sample_every = 1000
    c.sample.num = 100
    return c
