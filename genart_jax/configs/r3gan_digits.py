"""R3GAN (BN-free residual G and D, relativistic pairing loss, R1 + R2, adaptive augmentation)
on the embedded digits (scikit-learn's 1797 8x8 digits, shown at 32x32).

    genart train --config r3gan_digits
    genart train --config r3gan_digits --config.train.steps=200   # a quick look

On 2 CPU cores a step takes about 2.2 s (`python -m benchmarks.r3gan_step`), so the 2000 steps
take over an hour there: this recipe is for checking the model, a GPU is for training it.
benchmarks/results/cpu-2core-r3gan-digits-quality/ has FID/KID/precision/recall against the
default DCGAN at equal wall-clock (measured before the CPU grouped-convolution fix).
"""

from genart_jax.config import base_config


def get_config():
    c = base_config()
    c.model.arch = "r3gan"
    c.model.latent_dim = 64
    c.model.r3gan.widths = (64, 64, 64, 32)  # 4x4, 8x8, 16x16, 32x32
    c.model.r3gan.blocks = (1, 1, 1, 1)
    c.model.r3gan.expansion = 2
    c.model.r3gan.group_size = 16
    c.data.name = "digits"
    c.data.image_size = 32
    c.data.channels = 1
    c.train.steps = 2000
    c.train.batch_size = 64
    c.train.sample_every = 500
    c.train.gan_loss = "relativistic"
    c.train.r1_gamma = 0.1  # paper: 0.05 (CIFAR-10) .. 150 (FFHQ 256); small for 32 px digits
    c.train.r2_gamma = 0.1
    c.train.ema_halflife_kimg = 10.0
    for opt in (c.g_optimizer, c.d_optimizer):  # the paper's Adam: beta1 0, beta2 0.99
        opt.learning_rate = 2e-4
        opt.b1 = 0.0
        opt.b2 = 0.99
    c.augment.ada = "adaptive"
    c.augment.ada_target = 0.6
    c.augment.ada_kimg = 20.0  # a fast controller: 2000 steps see 128k images
    return c
