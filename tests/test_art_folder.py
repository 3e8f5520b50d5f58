"""benchmarks/art_folder.py: the structured-art folder generator is deterministic per seed and
draws images, not noise."""

import numpy as np
from PIL import Image

from benchmarks.art_folder import image_rng, make_image, write_folder


def test_images_are_deterministic_per_seed_and_index():
    a = make_image(image_rng(0, 3), 32)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, make_image(image_rng(0, 3), 32))
    assert not np.array_equal(a, make_image(image_rng(0, 4), 32))
    assert not np.array_equal(a, make_image(image_rng(1, 3), 32))


def test_folder_is_deterministic(tmp_path):
    write_folder(tmp_path / "a", 5, seed=7, size=24, progress=False)
    write_folder(tmp_path / "b", 5, seed=7, size=24, progress=False)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == [f"art_{i:05d}.png" for i in range(5)]
    for n in names:
        a, b = (np.asarray(Image.open(tmp_path / d / n)) for d in "ab")
        assert a.shape == (24, 24, 3)
        np.testing.assert_array_equal(a, b)


def test_images_are_smooth_not_noise():
    """Neighbouring pixels differ far less than the same pixels shuffled; images vary."""
    rng = np.random.default_rng(0)
    imgs = np.stack([make_image(image_rng(0, i), 64) for i in range(16)]).astype(np.float32)
    neighbour = np.abs(np.diff(imgs, axis=2)).mean() + np.abs(np.diff(imgs, axis=1)).mean()
    flat = imgs.reshape(16, -1, 3)
    shuffled = np.stack([f[rng.permutation(len(f))] for f in flat]).reshape(imgs.shape)
    noise = np.abs(np.diff(shuffled, axis=2)).mean() + np.abs(np.diff(shuffled, axis=1)).mean()
    assert neighbour < 0.3 * noise, (neighbour, noise)
    assert imgs.std(axis=(1, 2)).mean() > 10  # not flat colour fields
    assert imgs.mean(axis=(1, 2, 3)).std() > 5  # images differ from each other
