"""MLP VAE on TFDS mnist at 28x28x1: vae_digits's model (Bernoulli, dynamic binarisation) with
latent 32, batch 128 and a longer schedule. Needs mnist prepared once as array_record (README,
"Train on a TFDS dataset").

    genart train --config vae_mnist --config.data.data_dir=/path/to/tfds
"""

from genart_jax.config import recipe


def get_config():
    c = recipe("vae_digits")
    c.model.latent_dim = 32
    c.data.name = "mnist"
    c.data.cache = False
    c.vae.kl_warmup_steps = 2000
    c.train.steps = 50000
    c.train.batch_size = 128
    c.train.sample_every = 5000
    return c
