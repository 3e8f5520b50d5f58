"""Conditional MLP VAE on the embedded digits: vae_digits's recipe plus the class label into
encoder and decoder, so a theme (digit) is chosen at sampling time.

    genart train --config cvae_digits --workdir runs/cvae_digits
    genart sample --workdir runs/cvae_digits --theme 1,4,7 --out themes.png
"""

from genart_jax.config import recipe


def get_config():
    c = recipe("vae_digits")
    c.model.num_classes = 10
    c.sample.num = 100
    return c
