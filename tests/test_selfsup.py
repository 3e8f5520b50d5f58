"""The self-supervised (SimCLR) feature space: its loss against NumPy, the degradations against
SciPy, and the property the metrics need: on the digits and on a generated folder dataset,
real-vs-real < lightly < heavily degraded, monotone in the strength of each degradation."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

from genart_jax import degrade, metrics, selfsup
from genart_jax.classifier import ClassifierError
from genart_jax.config import load_config
from genart_jax.data import read_split
from genart_jax.data.pipeline import subset_indices
from tests.test_cli import run_genart

TINY_SSL = dict(steps=120, batch_size=32, width=8, feature_dim=32, projection_dim=16)


def numpy_nt_xent(z1, z2, t):
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n, total = len(z1), 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        logits = np.array([z[i] @ z[k] / t for k in range(2 * n) if k != i])
        pos = z[i] @ z[j] / t
        total += np.log(np.exp(logits).sum()) - pos
    return total / (2 * n)


def test_nt_xent_matches_numpy():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    loss = jax.jit(selfsup.nt_xent, static_argnums=2)
    ours = loss(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), 0.5)
    assert float(ours) == pytest.approx(numpy_nt_xent(z1, z2, 0.5), rel=1e-5)
    # identical, orthogonal views: loss near its floor; swapped partners: far above it
    e = jnp.asarray(np.eye(6, 5) * 10, jnp.float32)
    assert float(loss(e[:5], e[:5], 0.1)) < 1e-3
    assert float(loss(e[:5], e[:5][::-1], 0.1)) > 5


def test_degradations():
    x = np.random.default_rng(1).uniform(-1, 1, (3, 12, 10, 3)).astype(np.float32)
    for s in (0.5, 1.0, 2.0):
        want = scipy.ndimage.gaussian_filter(x.astype(np.float64), (0, s, s, 0), mode="reflect",
                                             truncate=3.0)
        np.testing.assert_allclose(degrade.blur(x, s), want, atol=1e-6)
    assert np.array_equal(degrade.blur(x, 0), x)
    n = degrade.noise(x, 0.1, seed=3)
    assert np.array_equal(n, degrade.noise(x, 0.1, seed=3)) and n.min() >= -1
    assert 0.05 < np.std(n - x) < 0.11
    c = degrade.color_shift(x, 0.3)
    assert np.array_equal(c[..., 1:], x[..., 1:]) and np.allclose(c[..., 0],
                                                                  np.clip(x[..., 0] + .3, -1, 1))
    labels = np.array([2, 0, 1, 2])
    x4 = np.arange(4)[:, None, None, None] * np.ones((4, 2, 2, 1), np.float32)
    assert degrade.drop_modes(x4, labels, 2)[:, 0, 0, 0].tolist() == [1, 2]


STRENGTHS = {"blur": (degrade.blur, (0.5, 1.0, 2.0)), "noise": (degrade.noise, (0.05, 0.1, 0.2)),
             "color": (degrade.color_shift, (0.1, 0.2, 0.4))}


def ranking_table(encoder, train, test, modes, mode_keeps, strengths=STRENGTHS):
    """FID in `encoder`'s features against the test split of: the train images (real vs
    real), the train images degraded at each strength, and the train images of fewer modes.
    The degraded train images stand in for a model that learnt the train split."""
    ref = encoder.features(test)

    def fid(x):
        return metrics.fid(ref, encoder.features(x))
    table = {"real": fid(train)}
    for name, (fn, levels) in strengths.items():
        table[name] = [fid(fn(train, s)) for s in levels]
    table["modes"] = [fid(degrade.drop_modes(train, modes, k)) for k in mode_keeps]
    return table


def assert_ranks(table):
    """real-vs-real < lightest < ... < heaviest, for blur, noise, colour shift and dropped
    modes (the ranking the issue asks of a feature space)."""
    for name in ("blur", "noise", "color", "modes"):
        row = [table["real"], *table[name]]
        assert all(a < b for a, b in zip(row[:-1], row[1:], strict=True)), (name, row)


def test_assert_ranks_can_fail():
    """The check the ranking tests rely on rejects a row below real-vs-real or a reversal."""
    good = {"real": 1.0, "blur": [2, 3, 4], "noise": [2, 3, 4], "color": [2, 3, 4],
            "modes": [2, 3, 4]}
    assert_ranks(good)
    for name, row in (("blur", [0.9, 3, 4]), ("noise", [2, 4, 3]), ("modes", [2, 2, 4])):
        with pytest.raises(AssertionError, match=name):
            assert_ranks({**good, name: row})


def assert_scaled_blocks(enc, folder, x):
    """The metric features of images x are the first conv layer's channel mean, std and total
    variation (against a NumPy convolution) and the feature layer, each times its saved scale;
    the scales give each block unit mean variance on the train images x and enter the
    fingerprint; a v1 file is refused with the command that retrains it."""
    meta, w = enc.meta, enc.meta["width"]
    assert meta["metric_dim"] == 3 * w + meta["feature_dim"]
    f = enc.features(x).astype(np.float64)
    assert f.shape == (len(x), meta["metric_dim"])
    conv0, s = enc.params["conv0"], x.shape[1]
    a = np.zeros((*x.shape[:3], w))
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    for dy in range(3):
        for dx in range(3):
            a += xp[:, dy:dy + s, dx:dx + s] @ np.asarray(conv0["kernel"][dy, dx], np.float64)
    a = np.maximum(a + np.asarray(conv0["bias"]), 0)
    tv = np.abs(np.diff(a, axis=1)).mean((1, 2)) + np.abs(np.diff(a, axis=2)).mean((1, 2))
    tex = np.concatenate([a.mean((1, 2)), a.std((1, 2)), tv], -1)
    np.testing.assert_allclose(f[:, :3 * w], tex * meta["block_scales"]["conv0_stats"],
                               rtol=1e-4, atol=1e-4)
    assert f[:, :3 * w].var(0).mean() == pytest.approx(1, rel=1e-3)
    assert f[:, 3 * w:].var(0).mean() == pytest.approx(1, rel=1e-3)
    meta_file = folder / selfsup.META_FILE
    changed = json.loads(meta_file.read_text())
    changed["block_scales"]["feature"] *= 2
    meta_file.write_text(json.dumps(changed))
    assert selfsup.load_encoder(folder).fingerprint != enc.fingerprint
    meta_file.write_text(json.dumps({**changed, "format": "genart_jax.features.v1"}))
    with pytest.raises(ClassifierError, match="older format v1 .* train it again with `genart "
                                              f"train-features --data digits --image-size {s}"):
        selfsup.load_encoder(folder)


@pytest.mark.slow
def test_encoder_ranks_degraded_digits(tmp_path):
    data = load_config("dcgan_digits", {"data.image_size": "16"}).data
    meta = selfsup.train_features(data, tmp_path / "enc", seed=0, progress=False, **TINY_SSL)
    assert meta["loss_last_20"] < meta["loss_first_20"] < meta["loss_chance"] + 0.1
    enc = selfsup.load_encoder(tmp_path / "enc")
    assert enc.name == "digits SimCLR encoder"
    with pytest.raises(ClassifierError, match="no classes"):
        enc.probabilities(np.zeros((1, 16, 16, 1), np.float32))
    train, labels = read_split(data, "train")
    test, _ = read_split(data, "test")
    assert_ranks(ranking_table(enc, train, test, labels, (7, 4, 1)))
    other = load_config("dcgan_digits", {"data.image_size": "32"}).data
    with pytest.raises(ClassifierError, match="train a matching one with `genart "
                                              "train-features --data digits --image-size 32"):
        selfsup.matching_encoder(other, tmp_path / "enc")
    assert_scaled_blocks(enc, tmp_path / "enc", train)


def make_art_folder(root, n_per_mode=60, size=16, seed=0):
    """Four modes of generated 'art': discs, squares, horizontal and vertical stripes, each in
    random colours and positions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for mode in range(4):
        (root / f"m{mode}").mkdir(parents=True)
        for i in range(n_per_mode):
            fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            cy, cx, r = rng.uniform(4, size - 4, 2).tolist() + [rng.uniform(2.5, 5)]
            period = rng.integers(3, 6)
            mask = [(yy - cy) ** 2 + (xx - cx) ** 2 < r * r,
                    (abs(yy - cy) < r) & (abs(xx - cx) < r),
                    (yy // period) % 2 == 0, (xx // period) % 2 == 0][mode]
            img = np.where(mask[..., None], fg, bg).astype(np.uint8)
            Image.fromarray(img).save(root / f"m{mode}" / f"{i:03d}.png")
    return root


@pytest.mark.slow
def test_train_features_cli_then_eval_ranks_a_folder_dataset(tmp_path, monkeypatch):
    make_art_folder(tmp_path / "art", n_per_mode=300)
    data_dir = str(tmp_path / "data")
    proc = run_genart(["prepare", "folder", str(tmp_path / "art"), "--name", "shapes",
                       "--size", "16", "--labels-from-subfolders", "--test-fraction", "0.25",
                       "--data_dir", data_dir])
    assert proc.returncode == 0, proc.stderr
    assert "(900 train, 300 test)" in proc.stdout
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
    proc = run_genart(["train-features", "--data", "shapes", "--image-size", "16",
                       "--channels", "3", "--data_dir", data_dir, "--steps", "120",
                       "--batch-size", "32", "--width", "8", "--feature-dim", "32",
                       "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    assert ("shapes SimCLR encoder (16x16x3, 56-d features: first-layer statistics + 32-d "
            "feature layer" in proc.stdout)
    enc_dir = tmp_path / "runs" / "features_shapes_16"
    assert json.loads((enc_dir / "features.json").read_text())["train_examples"] == 900
    # genart eval finds the encoder by default (no classifier trained for this data)
    proc = run_genart(["eval", "--reference", "train", "--data", "shapes", "--image-size",
                       "16", "--channels", "3", "--metrics", "fid"])
    assert proc.returncode == 0, proc.stderr
    assert "FID (shapes SimCLR encoder features)" in proc.stdout
    cfg = load_config("dcgan_digits", {"data.name": "shapes", "data.image_size": "16",
                                       "data.channels": "3", "data.data_dir": data_dir}).data
    enc = selfsup.load_encoder(enc_dir)
    train, modes = read_split(cfg, "train")
    test, _ = read_split(cfg, "test")
    # Measured, train-features seeds 0, 1, 2 at these settings (benchmarks/results/
    # feature_ranking_shapes16_seeds): FID ranks every row on each (real-vs-real 0.73 / 0.94 /
    # 0.83; the smallest margins blur 0.5 0.85 / 1.00 / 0.97 and 3 of 4 modes 0.95 / 1.03 /
    # 0.99). With half the images (448 train, 152 test) FID put blur 0.5 below real-vs-real on
    # all three seeds, 3 of 4 modes below on seed 1, the modes out of order on seed 2; KID
    # (unbiased MMD^2) ranked no better: blur 0.5 within its noise, the modes failed on all
    # three. The modes rows hold fewer images (675, 450, 225), which raises FID by itself:
    # against as many real images the seed-1 encoder does not see 3 or 1 of 4 modes.
    assert_ranks(ranking_table(enc, train, test, modes, (3, 2, 1)))


def test_train_features_bad_input_exits_2(capsys, tmp_path):
    from genart_jax.cli import main

    assert main(["train-features", "--augment", "blur", "--out", str(tmp_path)]) == 2
    assert "--augment: unknown DiffAugment policy ['blur']" in capsys.readouterr().err
    assert main(["train-features", "--batch-size", "1", "--out", str(tmp_path)]) == 2
    assert "the batch at least 2" in capsys.readouterr().err


KINDS = {"a_red_discs": ((220, 40, 40), (30, 30, 30)), "b_blue_squares": ((40, 60, 220),
          (230, 230, 230)), "c_green_stripes": ((40, 200, 60), (90, 60, 30)),
          "d_yellow_bars": ((230, 220, 40), (40, 40, 120))}


def make_kinds_folder(root, n_per_kind=100, size=16, seed=0):
    """Four kinds of picture in folders whose names sort by kind (so a prepared split lists
    one kind after another, like a real folder whose file names group kinds): each kind its
    own colours (jittered) and shape (random position and size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for kind, (name, (fg, bg)) in enumerate(KINDS.items()):
        (root / name).mkdir(parents=True)
        for i in range(n_per_kind):
            cy, cx, r = rng.uniform(4, size - 4, 2).tolist() + [rng.uniform(2.5, 5)]
            period = rng.integers(3, 6)
            mask = [(yy - cy) ** 2 + (xx - cx) ** 2 < r * r,
                    (abs(yy - cy) < r) & (abs(xx - cx) < r),
                    (yy // period) % 2 == 0, (xx // period) % 2 == 0][kind]
            f, b = (np.clip(np.add(c, rng.integers(-30, 31, 3)), 0, 255) for c in (fg, bg))
            img = np.where(mask[..., None], f, b).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{name[0]}_{i:03d}.png")
    return root


@pytest.mark.slow
def test_the_real_vs_real_floor_is_a_seeded_draw_over_a_folder_sorted_by_kind(
        tmp_path, monkeypatch, capsys):
    """A folder whose sorted paths group its kinds (`make_kinds_folder`), prepared at 16x16x3
    and then used with no size or channel flag: `train-features`, `eval --reference` and
    `train-classifier` take 16x16x3 from prepared.json. The reference images are a seeded
    draw over the whole train split, so the real-vs-real FID sits below that of a worse
    "model" (the drawn images blurred) and far below that of the first train images in file
    order (nearly all one kind)."""
    from genart_jax import cli

    make_kinds_folder(tmp_path / "art")
    data = str(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["prepare", "folder", "art", "--name", "kinds", "--size", "16",
                     "--labels-from-subfolders", "--test-fraction", "0.25",
                     "--data_dir", data]) == 0
    assert "(300 train, 100 test)" in capsys.readouterr().out
    assert cli.main(["train-features", "--data", "kinds", "--data_dir", data, "--steps", "60",
                     "--batch-size", "32", "--width", "8", "--feature-dim", "32",
                     "--no-progress"]) == 0
    assert "kinds SimCLR encoder (16x16x3, " in capsys.readouterr().out

    def reference(*flags):
        assert cli.main(["eval", "--reference", "train", "--data", "kinds", "--data_dir",
                         data, "--metrics", "fid", *flags]) == 0
        out = capsys.readouterr().out
        return out, json.loads(out.strip().splitlines()[-1])

    out, result = reference()
    assert ("train split (100 of 300 images, a random draw with --subset-seed 0) vs test split "
            "(100 images):" in out)
    assert (result["subset_seed"], result["reference_split_images"], result["real_images"],
            result["real_split_images"], result["generated_images"]) == (0, 300, 100, 100, 100)
    floor = result["FID (kinds SimCLR encoder features)"]

    cfg = cli._data_config("kinds", data_dir=data)
    assert (cfg.image_size, cfg.channels) == (16, 3)
    enc = selfsup.load_encoder(tmp_path / "runs" / "features_kinds_16")
    train, kinds = read_split(cfg, "train")
    test, _ = read_split(cfg, "test")
    assert list(np.bincount(kinds[:100])) == [75, 25]  # file order: the first kinds only
    drawn = subset_indices(len(train), 100, seed=0)
    assert np.bincount(kinds[drawn]).min() >= 15  # the draw holds every kind
    ref = enc.features(test)
    assert floor == pytest.approx(metrics.fid(ref, enc.features(train[drawn])), rel=1e-4)
    first = metrics.fid(ref, enc.features(train[:100]))
    worse = metrics.fid(ref, enc.features(degrade.blur(train[drawn], 1.0)))
    # Measured here: floor 2.05, blurred 5.98, first 100 in file order 10.24. With the first
    # 100 in file order as the reference draw (the old `--limit`), floor == first: it fails.
    assert floor < worse < first and 3 * floor < first, (floor, worse, first)
    out, other = reference("--subset-seed", "1", "--limit", "80")  # another draw, reported
    assert "(80 of 300 images, a random draw with --subset-seed 1) vs test split (80 of 100 " \
           "images, a random draw with --subset-seed 1)" in out
    assert other["subset_seed"] == 1 and 3 * other["FID (kinds SimCLR encoder features)"] < first

    assert cli.main(["train-classifier", "--data", "kinds", "--data_dir", data, "--steps",
                     "30", "--batch-size", "32", "--width", "8", "--feature-dim", "32",
                     "--no-progress"]) == 0
    assert "kinds classifier (16x16x3, 4 classes" in capsys.readouterr().out
    assert (tmp_path / "runs" / "classifier_kinds_16" / "classifier.json").is_file()
