"""Hierarchical VAE on the embedded digits at 32x32x1: a quick look on a CPU (width 32, 1
encoder block and 1-2 latent groups of 4 channels per resolution, 5 mixtures; 86,959
parameters),
bits/dim of the 8-bit pixels under the DMoL likelihood.

    genart train --config hvae_digits
    genart sample --workdir runs/hvae_digits --out s.png --temperature 0.8
    genart eval --workdir runs/hvae_digits
"""

from genart_jax.config import recipe


def get_config():
    c = recipe("hvae_folder32")
    c.model.hvae.widths = (32, 32, 32, 32, 32)
    c.model.hvae.enc_blocks = (1, 1, 1, 1, 1)
    c.model.hvae.dec_blocks = (1, 2, 2, 1, 1)
    c.model.hvae.zdim = 4
    c.model.hvae.num_mixtures = 5
    c.data.name = "digits"
    c.data.channels = 1
    c.train.steps = 1500
    c.train.sample_every = 500
    c.train.batch_size = 32
    c.hvae.eval_split = "test"
    return c
