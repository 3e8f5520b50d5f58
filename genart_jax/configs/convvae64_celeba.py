"""Convolutional VAE at 64x64x3 on TFDS celeb_a: bench_convvae32's model (discretised Gaussian
likelihood with a learned per-pixel scale) one resolution up, with KL warm-up. Needs celeb_a
prepared once as array_record (README, "Train on a TFDS dataset").

    genart train --config convvae64_celeba --config.data.data_dir=/path/to/tfds
"""

from genart_jax.config import recipe


def get_config():
    c = recipe("bench_convvae32")
    c.data.name = "celeb_a"
    c.data.image_size = 64
    c.data.cache = True  # one conversion to the training size, kept as uint8 (streaming needs
    # images prepared at that size: genart prepare folder ... --size S)
    c.vae.kl_warmup_steps = 5000
    c.vae.eval_split = "validation"
    c.train.steps = 100000
    c.train.sample_every = 5000
    return c
