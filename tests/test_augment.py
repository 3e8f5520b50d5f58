"""On-device augmentation: what each transform does, gradients through it, and device-count
invariance of a GAN step that uses it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genart_jax import augment
from genart_jax.config import apply_overrides
from genart_jax.train.loop import build_training
from tests.conftest import tiny_config


def image(seed=0, shape=(16, 16, 3)):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape), jnp.float32)


def test_translation_is_a_zero_filled_shift():
    x = image()
    for seed in range(20):
        y = augment.translation(jax.random.PRNGKey(seed), x)
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(y, np.roll(np.pad(x, ((2, 2), (2, 2), (0, 0))), (dy, dx),
                                               axis=(0, 1))[2:-2, 2:-2])]
        assert len(found) == 1  # exactly one shift by at most 1/8 of the side explains it


def test_cutout_zeroes_one_square_and_nothing_else():
    x = image() + 5.0  # no zeros in the input
    for seed in range(20):
        y = np.asarray(augment.cutout(jax.random.PRNGKey(seed), x))
        zero = np.all(y == 0, axis=-1)
        rows, cols = np.nonzero(zero)
        assert 0 < zero.sum() <= 64 and zero.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
        np.testing.assert_array_equal(y[~zero], np.asarray(x)[~zero])


def test_flip_and_color():
    x = image()
    flips = [np.array_equal(augment.flip(jax.random.PRNGKey(s), x), x[:, ::-1])
             for s in range(40)]
    assert 5 < sum(flips) < 35
    y = augment.color(jax.random.PRNGKey(0), x)
    assert y.shape == x.shape and not np.allclose(y, x)


def test_augment_batch_differs_per_example_and_is_differentiable():
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jnp.broadcast_to(image(), (4, 16, 16, 3))
    policy = augment.parse_policy("color,translation,cutout")
    y = augment.augment_batch(keys, augment.flip_batch(keys, x), policy)
    assert y.shape == x.shape and not np.allclose(y[0], y[1])
    g = jax.grad(lambda v: jnp.sum(augment.augment_batch(keys, v, policy) ** 2))(x)
    assert np.all(np.isfinite(g)) and np.any(g != 0)
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        augment.parse_policy("colour")


def test_gan_step_with_diffaugment_matches_across_device_counts():
    cfg = apply_overrides(tiny_config("mlp"), {"augment.diffaugment": "color,translation,cutout",
                                               "augment.flip": "true", "data.image_size": "16"})
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(-1, 1, (1, 16, 16, 16, 1)).astype(np.float32),
             "label": np.zeros((1, 16), np.int32)}
    states = []
    for n in (1, 8):
        driver, init_fn = build_training(cfg, jax.devices()[:n])
        state = driver.init_state(init_fn, jax.random.PRNGKey(0))
        for _ in range(2):
            state, _ = driver.step(state, driver.put_batch(batch))
        states.append(driver.get_state(state))
    for a, b in zip(jax.tree.leaves(states[0].g_params), jax.tree.leaves(states[1].g_params),
                    strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
