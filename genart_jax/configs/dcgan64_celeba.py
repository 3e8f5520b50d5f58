"""DCGAN at 64x64x3 on TFDS celeb_a: bench_dcgan32's model (the pytorch/examples widths nz=100,
ngf=ndf=64, batch 128) one resolution up. Needs celeb_a prepared once as array_record (README,
"Train on a TFDS dataset"); an accelerator is advised.

    genart train --config dcgan64_celeba --config.data.data_dir=/path/to/tfds
"""

from genart_jax.config import recipe


def get_config():
    c = recipe("bench_dcgan32")
    c.data.name = "celeb_a"
    c.data.image_size = 64
    c.data.cache = True  # one conversion to the training size, kept as uint8 (streaming needs
    # images prepared at that size: genart prepare folder ... --size S)
    c.train.steps = 30000
    c.train.sample_every = 2000
    return c
