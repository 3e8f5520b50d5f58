"""Sample grids, seeded latents and sampling from generator weights."""

import jax
import numpy as np
import pytest
from PIL import Image

from genart_jax import sampling
from genart_jax.train.loop import abstract_state, build_training
from tests.conftest import tiny_config


def test_latents_depend_only_on_seed_and_index():
    a = sampling.latents(3, 16, 8)
    np.testing.assert_array_equal(a[:4], sampling.latents(3, 4, 8))
    assert not np.allclose(a, sampling.latents(4, 16, 8))


def test_image_grid_layout_and_png(tmp_path):
    images = np.stack([np.full((4, 5, 3), v) for v in (-1.0, 0.0, 1.0)])
    grid = sampling.image_grid(images, ncols=2, pad=1)
    assert grid.shape == (2 * 5 + 1, 2 * 6 + 1, 3) and grid.dtype == np.uint8
    assert grid[1, 1, 0] == 0 and grid[1, 7, 0] == 128 and grid[6, 1, 0] == 255
    assert grid[8, 9, 0] == 255  # the empty cell stays white
    path = sampling.save_png(sampling.image_grid(images[..., :1]), tmp_path / "a" / "g.png")
    with Image.open(path) as img:
        assert img.mode == "L" and max(img.size) >= 256


def test_generate_with_recalibrated_batch_norm():
    cfg = tiny_config("dcgan")
    driver, init_fn = build_training(cfg, jax.devices()[:1])
    state = driver.get_state(driver.init_state(init_fn, jax.random.PRNGKey(0)))
    assert jax.tree.structure(state) == jax.tree.structure(abstract_state(cfg))
    params, stats = sampling.generator_variables(cfg, state, use_ema=True)
    # Recalibration replaces the initial statistics (mean 0, var 1) by measured ones.
    assert not np.allclose(jax.tree.leaves(stats)[0], jax.tree.leaves(state.g_batch_stats)[0])
    imgs = sampling.generate(cfg, params, stats, num=5, seed=1)
    assert imgs.shape == (5, 16, 16, 1) and np.all(np.abs(imgs) <= 1.0)
    # Sample i does not depend on how many are drawn with it.
    more = sampling.generate(cfg, params, stats, num=9, seed=1)
    np.testing.assert_allclose(imgs, more[:5], atol=1e-5)


def test_truncation_and_direction_closed_forms():
    z = np.asarray(sampling.latents(0, 6, 4))
    center = np.array([1.0, -2.0, 0.0, 3.0])
    np.testing.assert_allclose(sampling.truncate(z, 0.5), 0.5 * z)
    np.testing.assert_allclose(sampling.truncate(z, 0.0, center), np.tile(center, (6, 1)))
    np.testing.assert_allclose(sampling.truncate(z, 0.25, center), center + 0.25 * (z - center),
                               rtol=1e-6)
    direction = sampling.attribute_direction(z[:2], z[2:])
    np.testing.assert_allclose(direction, z[:2].mean(0) - z[2:].mean(0))
    moved = sampling.apply_direction(z, direction, -1.5)
    np.testing.assert_allclose(moved - z, np.tile(-1.5 * direction, (6, 1)), atol=1e-6)
    with pytest.raises(ValueError, match="both sets"):
        sampling.attribute_direction(z[:2], z[:0])


def test_interpolation_strips_run_from_endpoint_to_endpoint():
    z = sampling.interpolation_latents(3, rows=2, frames=5, latent_dim=8)
    ends = sampling.latents(3, 4, 8)
    assert z.shape == (10, 8)
    for r in range(2):
        np.testing.assert_allclose(z[5 * r], ends[2 * r], atol=1e-5)
        np.testing.assert_allclose(z[5 * r + 4], ends[2 * r + 1], atol=1e-5)
    # Slerp keeps norms between the endpoints' (a linear mix would shrink the middle).
    norms = np.linalg.norm(z[:5], axis=1)
    lo, hi = sorted(np.linalg.norm(ends[:2], axis=1))
    assert np.all(norms >= 0.9 * lo)


def test_generate_is_generate_from_latents_of_the_seeded_latents():
    cfg = tiny_config("mlp")
    _, init_fn = build_training(cfg, jax.devices()[:1])
    state = init_fn(jax.random.PRNGKey(0))
    params, stats = sampling.generator_variables(cfg, state, use_ema=False)
    z = sampling.latents(4, 3, cfg.model.latent_dim)
    np.testing.assert_array_equal(sampling.generate(cfg, params, stats, num=3, seed=4),
                                  sampling.generate_from_latents(cfg, params, stats, z))
    with pytest.raises(ValueError, match=r"latents must be \(N > 0, 16\)"):
        sampling.generate_from_latents(cfg, params, stats, np.zeros((3, 5)))
