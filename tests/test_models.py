"""Model shapes, dtypes and UpConv against the transposed-convolution definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genart_jax.models import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    UpConv,
    build_gan,
)
from tests.conftest import tiny_config


def transposed_conv_reference(x, w):
    """float64 definition of ConvTranspose2d(k=4, s=2, p=1): out[2i + k - 1] += x[i] * w[k]."""
    n, h, wd, _ = x.shape
    out = np.zeros((n, 2 * h + 2, 2 * wd + 2, w.shape[-1]))  # index shifted by +1 for padding
    for i in range(h):
        for j in range(wd):
            for kh in range(4):
                for kw in range(4):
                    out[:, 2 * i + kh, 2 * j + kw] += x[:, i, j] @ w[kh, kw]
    return out[:, 1:-1, 1:-1]


def test_upconv_equals_transposed_convolution():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3, 4))
    module = UpConv(6)
    params = module.init(jax.random.PRNGKey(0), jnp.asarray(x, jnp.float32))
    w = np.asarray(params["params"]["kernel"], np.float64)
    got = jax.jit(module.apply)(params, jnp.asarray(x, jnp.float32))
    assert got.shape == (2, 10, 6, 6)
    np.testing.assert_allclose(got, transposed_conv_reference(x, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,channels", [(16, 1), (32, 3), (64, 3)])
def test_dcgan_shapes(size, channels):
    g = DCGANGenerator(image_size=size, channels=channels, width=4)
    d = DCGANDiscriminator(width=4)
    z = jnp.zeros((3, 10))
    gv = g.init(jax.random.PRNGKey(0), z, train=False)
    images = g.apply(gv, jax.random.normal(jax.random.PRNGKey(1), (3, 10)), train=False)
    assert images.shape == (3, size, size, channels)
    assert float(jnp.max(jnp.abs(images))) <= 1.0
    dv = d.init(jax.random.PRNGKey(2), images, train=False)
    assert d.apply(dv, images, train=False).shape == (3,)
    # Training mode updates batch statistics and needs no axis when axis_name is None.
    _, upd = g.apply(gv, z, train=True, mutable=["batch_stats"])
    assert jax.tree.structure(upd["batch_stats"]) == jax.tree.structure(gv["batch_stats"])


def test_mlp_gan_is_the_origin_architecture():
    g, d = MLPGenerator(), MLPDiscriminator()
    gv = g.init(jax.random.PRNGKey(0), jnp.zeros((1, 100)))
    widths = [gv["params"][f"Dense_{i}"]["kernel"].shape[1] for i in range(5)]
    assert widths == [128, 256, 512, 1024, 784]
    x = g.apply(gv, jnp.ones((2, 100)))
    assert x.shape == (2, 28, 28, 1)
    dv = d.init(jax.random.PRNGKey(1), x)
    assert [dv["params"][f"Dense_{i}"]["kernel"].shape[1] for i in range(4)] == [1024, 512,
                                                                                    256, 1]
    assert d.apply(dv, x).shape == (2,)


def test_bfloat16_compute_keeps_float32_params():
    cfg = tiny_config("dcgan", **{"model.dtype": "bfloat16"})
    g, d = build_gan(cfg.model, cfg.data)
    gv = g.init(jax.random.PRNGKey(0), jnp.zeros((2, 16)), train=False)
    assert {x.dtype for x in jax.tree.leaves(gv["params"])} == {jnp.dtype(jnp.float32)}
    images = g.apply(gv, jnp.ones((2, 16)), train=False)
    assert images.dtype == jnp.float32
    hidden = jax.make_jaxpr(lambda v: g.apply(v, jnp.ones((2, 16)), train=False))(gv)
    assert "bf16" in str(hidden)  # the convolutions really run in bfloat16


@pytest.mark.parametrize("size", [12, 4, 48])
def test_dcgan_rejects_sizes_that_are_not_4_times_a_power_of_two(size):
    cfg = tiny_config("dcgan")
    data = cfg.data.to_dict() | {"image_size": size}
    with pytest.raises(ValueError, match="4 \\* 2\\^k"):
        build_gan(cfg.model, type(cfg.data)(data))
    with pytest.raises(ValueError, match="config key 'data.image_size'.*4 \\* 2\\^k"):
        tiny_config("dcgan", **{"data.image_size": str(size)})  # the config says so first
