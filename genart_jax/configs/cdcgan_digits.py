"""Class-conditional DCGAN on the embedded digits: dcgan_digits's recipe plus the digit's class
as a theme (conditional BatchNorm in the generator, a projection discriminator).

    genart train --config cdcgan_digits --workdir runs/cdcgan_digits
    genart sample --workdir runs/cdcgan_digits --theme 1,4,7 --out themes.png

Training grids and `genart sample` without --theme show one class per column (0..9).
"""

from genart_jax.config import recipe


def get_config():
    c = recipe("dcgan_digits")
    c.model.num_classes = 10
    c.sample.num = 100
    return c
