"""Hierarchical VAE (VDVAE-style, `genart_jax.models.hvae`) at 32x32 RGB on the user's own
prepared folder data set, sized for a CPU: resolutions 32, 16, 8, 4, 1 of widths 32, 64, 96,
96, 96 (the 32 px blocks are the costly ones on a CPU, so they are narrow), 2/3/3/2/2 encoder
blocks and 1/3/4/2/1 latent groups of 8 channels (11 groups), 543,644 parameters. AdamW 1e-3
with 100 warm-up updates, VDVAE's clip (200) and skip (400) in nats per dimension, a weight EMA
at 0.999 (its half-life about 700 updates: a CPU run is thousands of updates, not VDVAE's
millions; with the EMA's warm-up), samples at temperature 1.

    genart prepare folder ./my_images --name my_folder --size 32 --channels 3
    genart train --config hvae_folder32 --config.data.name=my_folder
    genart sample --workdir runs/hvae_folder32 --out s.png --temperature 0.8
    genart eval --workdir runs/hvae_folder32          # bits/dim on the test split

On one CPU core a step of 32 images takes about 0.6 s (benchmarks/results/
cpu-2core-hvae-vs-convvae: what 30 minutes give against the conv VAE).
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.family = "vae"
    c.model.arch = "hvae"
    c.model.hvae.resolutions = (32, 16, 8, 4, 1)
    c.model.hvae.widths = (32, 64, 96, 96, 96)
    c.model.hvae.enc_blocks = (2, 3, 3, 2, 2)
    c.model.hvae.dec_blocks = (1, 3, 4, 2, 1)
    c.model.hvae.zdim = 8
    c.data.name = "my_folder"  # set --config.data.name=NAME of the prepared folder
    c.data.image_size = 32
    c.data.channels = 3
    c.hvae.learning_rate = 1e-3
    c.hvae.warmup_steps = 100
    c.hvae.ema_rate = 0.999
    c.hvae.temperature = (1.0,)  # the best sample FID of 1.0, 0.8, 0.6 (benchmarks/results/
    # cpu-2core-hvae-vs-convvae): the mode pixels already smooth what a lower t would
    c.train.steps = 20_000
    c.train.batch_size = 32
    c.train.log_every = 50
    c.train.sample_every = 500
    c.checkpoint.every_steps = 1000
    return c
