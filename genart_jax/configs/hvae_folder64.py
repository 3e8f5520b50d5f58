"""Hierarchical VAE at 64x64 RGB on the user's own prepared folder data set (a GPU recipe):
VDVAE's layout scaled to a few thousand images: resolutions 64, 32, 16, 8, 4, 1, width 128 at
64 px and 256 below, 4/6/6/6/4/3 encoder blocks and 4/8/8/6/3/1 latent groups of 16 channels
(30 groups), 12,172,324 parameters; AdamW 2e-4 with warm-up, clip 200,
skip 400 (VDVAE's ImageNet-64 thresholds are larger: raise them if `skipped_updates` climbs),
EMA 0.999, bfloat16, samples at temperature 0.85.

    genart prepare folder ./my_images --name my_folder --size 64 --channels 3
    genart train --config hvae_folder64 --config.data.name=my_folder
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.family = "vae"
    c.model.arch = "hvae"
    c.model.hvae.resolutions = (64, 32, 16, 8, 4, 1)
    c.model.hvae.widths = (128, 256, 256, 256, 256, 256)
    c.model.hvae.enc_blocks = (4, 6, 6, 6, 4, 3)
    c.model.hvae.dec_blocks = (4, 8, 8, 6, 3, 1)
    c.model.hvae.zdim = 16
    c.model.dtype = "bfloat16"
    c.data.name = "my_folder"  # set --config.data.name=NAME of the prepared folder
    c.data.image_size = 64
    c.data.channels = 3
    c.hvae.ema_rate = 0.999
    c.hvae.temperature = (0.85,)
    c.train.steps = 200_000
    c.train.batch_size = 32
    c.train.log_every = 200
    c.train.sample_every = 5000
    c.checkpoint.every_steps = 5000
    return c
