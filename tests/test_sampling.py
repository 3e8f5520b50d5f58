"""Sample grids, seeded latents and sampling from generator weights."""

import jax
import numpy as np
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
