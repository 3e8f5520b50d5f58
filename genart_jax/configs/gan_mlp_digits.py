"""The origin document's MLP GAN (Dense 128-256-512-1024-784 / 1024-512-256-1, LeakyReLU 0.01,
RMSprop lr 1e-4) on the embedded digits at 28x28x1.

    genart train --config gan_mlp_digits
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.arch = "mlp"
    c.model.latent_dim = 100
    c.model.mlp_gan.g_hidden = (128, 256, 512, 1024)
    c.model.mlp_gan.d_hidden = (1024, 512, 256)
    c.model.mlp_gan.leak = 0.01
    c.data.name = "digits"
    c.data.image_size = 28
    c.data.channels = 1
    c.train.steps = 3000
    c.train.batch_size = 64
    c.train.d_steps = 1
    c.train.g_steps = 1
    for opt in (c.g_optimizer, c.d_optimizer):
        opt.name = "rmsprop"
        opt.learning_rate = 1e-4
        opt.decay = 0.9
        opt.eps = 1e-7
    return c
