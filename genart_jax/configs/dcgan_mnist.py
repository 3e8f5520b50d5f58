"""DCGAN on TFDS mnist at 32x32x1: bench_dcgan32's model (the pytorch/examples widths nz=100,
ngf=ndf=64, batch 128) on one channel. Needs the dataset prepared once as array_record (README,
"Train on a TFDS dataset"); reading it needs no TensorFlow.

    genart train --config dcgan_mnist --config.data.data_dir=/path/to/tfds
"""

from genart_jax.config import recipe


def get_config():
    c = recipe("bench_dcgan32")
    c.data.name = "mnist"
    c.data.channels = 1
    c.data.cache = True  # one conversion to the training size, kept as uint8 (streaming needs
    # images prepared at that size: genart prepare folder ... --size S)
    c.train.steps = 10000
    c.train.sample_every = 1000
    return c
