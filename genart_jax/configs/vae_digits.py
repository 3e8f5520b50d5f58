"""MLP VAE (the origin document's encoder -> (mu, log sigma^2) -> decoder) on the embedded
digits at 28x28x1, Bernoulli likelihood on dynamically binarised pixels.

    genart train --config vae_digits
    genart eval --workdir runs/vae_digits          # -ELBO and IWAE(K=100) on the test split
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.family = "vae"
    c.model.arch = "mlp"
    c.model.latent_dim = 16
    c.model.mlp_vae.hidden = (512, 256)
    c.data.name = "digits"
    c.data.image_size = 28
    c.data.channels = 1
    c.vae.likelihood = "bernoulli"
    c.vae.binarize = True
    c.vae.kl_warmup_steps = 500
    c.train.steps = 4000
    c.train.batch_size = 64
    c.train.sample_every = 1000
    c.optimizer.learning_rate = 1e-3
    return c
