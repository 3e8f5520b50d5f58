"""VDVAE's CIFAR-10 network (Child 2021, reference `hps.py` cifar10: width 384, zdim 16,
encoder "32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3", decoder "1x1,4m1,4x2,8m4,8x5,16m8,16x10,
32m16,32x21"; 43 latent groups, 39,145,700 parameters) and its optimisation: AdamW 2e-4,
betas (0.9, 0.9), weight decay 0.01, 100 warm-up updates, clip 200, skip 400, EMA 0.9999, batch
16 per GPU (32 here, global). A GPU recipe, bfloat16 compute (the likelihood and KLs float32);
the paper trains ~1.1M updates to 2.87 bits/dim.

    genart prepare tfds cifar10 --size 32      # or any prepared 32 px RGB data set
    genart train --config hvae_cifar32 --config.data.name=cifar10
"""

from genart_jax.config import base_config
from genart_jax.models.hvae import vdvae_cifar10


def get_config():
    c = base_config()
    c.model.family = "vae"
    c.model.arch = "hvae"
    net = vdvae_cifar10()
    for k in ("resolutions", "widths", "enc_blocks", "dec_blocks", "zdim", "bottleneck",
              "num_mixtures", "no_bias_above"):
        c.model.hvae[k] = net[k]
    c.model.dtype = "bfloat16"
    c.data.name = "cifar10"
    c.data.image_size = 32
    c.data.channels = 3
    c.hvae.eval_split = "test"
    c.train.steps = 1_100_000
    c.train.batch_size = 32
    c.train.log_every = 200
    c.train.sample_every = 10_000
    c.checkpoint.every_steps = 10_000
    return c
