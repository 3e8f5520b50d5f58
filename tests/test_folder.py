"""`genart prepare folder` on a folder with odd and broken files, `genart prepare NAME` without
TensorFlow or network, and a TFDS name read through mock data."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from genart_jax.cli import main
from genart_jax.data import DataError, open_source
from genart_jax.data import prepare as prepare_module
from genart_jax.data.folder import assign_splits, load_image, prepare_folder
from tests.test_cli import run_genart


def make_folder(root):
    rng = np.random.default_rng(0)
    (root / "sun").mkdir(parents=True)
    (root / "sea").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(
            root / "sun" / f"s{i}.png")
        Image.fromarray(rng.integers(0, 255, (20, 50), dtype=np.uint8)).save(
            root / "sea" / f"w{i}.jpg")
    Image.fromarray(rng.integers(0, 255, (16, 16, 4), dtype=np.uint8), "RGBA").save(
        root / "sun" / "alpha.png")
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).convert("P").save(
        root / "sea" / "palette.gif")
    (root / "sea" / "notes.txt").write_text("not an image")
    good = (root / "sun" / "s0.png").read_bytes()
    (root / "sun" / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "loose.png")
    return root


def test_load_image_normalises_modes_and_shapes(tmp_path):
    Image.new("RGBA", (30, 10), (255, 0, 0, 0)).save(tmp_path / "clear.png")  # transparent
    x = load_image(tmp_path / "clear.png", 8, 3)
    assert x.shape == (8, 8, 3) and x.dtype == np.uint8 and np.all(x == 255)  # on white
    Image.new("RGB", (30, 10), (0, 0, 255)).save(tmp_path / "blue.jpg")
    grey = load_image(tmp_path / "blue.jpg", 5, 1)
    assert grey.shape == (5, 5, 1) and 20 < grey.mean() < 40  # luminance of blue


def test_prepare_folder_skips_and_reports_bad_files(tmp_path):
    src = make_folder(tmp_path / "art")
    report = prepare_folder(src, "my_art", data_dir=str(tmp_path / "data"), size=16,
                            labels_from_subfolders=True)
    assert report["images"] == 12 and report["classes"] == ["sea", "sun"]
    skipped = {s["file"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"sun/truncated.png", "sea/notes.txt", "loose.png"}
    assert "truncated" in skipped["sun/truncated.png"]
    on_disk = json.loads((tmp_path / "data" / "my_art" / "prepare_report.json").read_text())
    assert on_disk == report
    # 6 images per class, 10% held out per class: round(0.6) = 1 of each in "test".
    assert report["splits"] == {"train": 10, "test": 2} and report["test_fraction"] == 0.1
    source = open_source("my_art", "train", str(tmp_path / "data"))
    assert len(source) == 10 and source[0]["image"].shape == (16, 16, 3)
    assert sorted({int(source[i]["label"]) for i in range(10)}) == [0, 1]
    test = open_source("my_art", "test", str(tmp_path / "data"))
    assert sorted(int(test[i]["label"]) for i in range(2)) == [0, 1]  # labels in both splits
    # Preparing again changes nothing.
    again = prepare_folder(src, "my_art", data_dir=str(tmp_path / "data"), size=16,
                           labels_from_subfolders=True)
    assert again == report
    with pytest.raises(DataError, match=r"prepared differently \(test_fraction 0.1 -> 0.2\)"):
        prepare_folder(src, "my_art", data_dir=str(tmp_path / "data"), size=16,
                       labels_from_subfolders=True, test_fraction=0.2)


def test_assign_splits_is_deterministic_per_class_and_order_free():
    keys = [f"img_{i:04d}.png" for i in range(200)]
    labels = [i % 3 for i in range(200)]  # classes of 67, 67, 66
    splits = assign_splits(keys, labels, 0.25)
    for c in range(3):
        n = labels.count(c)
        held = sum(s == "test" for s, y in zip(splits, labels, strict=True) if y == c)
        assert held == round(0.25 * n)
    order = np.random.default_rng(0).permutation(200)
    shuffled = assign_splits([keys[i] for i in order], [labels[i] for i in order], 0.25)
    assert [shuffled[list(order).index(i)] for i in range(200)] == splits
    test_idx = [i for i, s in enumerate(splits) if s == "test"]
    assert test_idx != list(range(len(test_idx)))  # not simply the first files by name
    assert assign_splits(keys, labels, 0.0) == ["train"] * 200
    assert assign_splits(["a", "b"], [0, 1], 0.5) == ["train", "train"]  # one per class: kept
    assert sorted(assign_splits(["a", "b"], [0, 0], 0.01)) == ["test", "train"]  # at least 1
    for bad in (-0.1, 1.0):
        with pytest.raises(DataError, match="--test-fraction must be in"):
            assign_splits(keys, labels, bad)


def test_raw_records_hold_the_decoded_pixels_and_reject_damage(tmp_path):
    src = make_folder(tmp_path / "art")
    data = tmp_path / "data"
    prepare_folder(src, "raw_art", data_dir=str(data), size=8, channels=1,
                   labels_from_subfolders=True, test_fraction=0.0)
    record = json.loads((data / "raw_art" / "prepared.json").read_text())
    assert (record["source"], record["size"], record["channels"], record["count"]) == (
        str(src.resolve()), 8, 1, 12)
    source = open_source("raw_art", "train", str(data))
    images, labels = source.read(np.arange(12))
    files = sorted(p for p in src.rglob("*") if p.suffix in (".png", ".jpg", ".gif")
                   and p.parent != src and p.name != "truncated.png")
    np.testing.assert_array_equal(images, np.stack([load_image(p, 8, 1) for p in files]))
    np.testing.assert_array_equal(labels, [int(p.parent.name == "sun") for p in files])
    shard = data / "raw_art" / "train.array_record"
    shard.write_bytes(shard.read_bytes()[:-100])  # a truncated shard: one clear error
    with pytest.raises(DataError, match="(?s)^[^\n]*raw_art.*prepare it again with --overwrite"
                       "[^\n]*$"):
        open_source("raw_art", "train", str(data)).read(np.arange(12))


def test_prepare_again_differently_refuses_or_rebuilds_with_overwrite(tmp_path, capsys):
    src = make_folder(tmp_path / "art")
    data = str(tmp_path / "data")
    prepare_folder(src, "art", data_dir=data, size=8)
    for kw, diff in [({"size": 16}, "size 8 -> 16"), ({"channels": 1}, "channels 3 -> 1")]:
        with pytest.raises(DataError, match=f"prepared differently.*{diff}.*--overwrite"):
            prepare_folder(src, "art", data_dir=data, **kw)
    other = tmp_path / "other"
    other.mkdir()
    Image.new("RGB", (9, 9)).save(other / "a.png")
    assert main(["prepare", "folder", str(other), "--name", "art", "--data_dir", data,
                 "--size", "8"]) == 2
    assert "source" in capsys.readouterr().err
    assert main(["prepare", "folder", str(other), "--name", "art", "--data_dir", data,
                 "--size", "12", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "art: 1 images of 12x12x3" in out
    assert (f"Train with --config.data.name=art --config.data.data_dir={data} (size and "
            f"channels come from its prepared.json" in out) and "image_size" not in out
    assert len(open_source("art", "train", data)) == 1


def test_a_config_that_disagrees_with_the_prepared_data_names_both(tmp_path):
    from genart_jax.config import load_config
    from genart_jax.data import make_input

    src = make_folder(tmp_path / "art")
    data = str(tmp_path / "data")
    prepare_folder(src, "art", data_dir=data, size=8)
    for cache in ("true", "false"):
        cfg = load_config("dcgan_digits", {"data.name": "art", "data.data_dir": data,
                                           "data.image_size": "16", "data.channels": "3",
                                           "data.cache": cache})
        with pytest.raises(DataError, match="prepared at 8x8x3 from .*asks data.image_size=16 "
                                            "data.channels=3.*--size 16 --channels 3"):
            make_input(cfg.data, global_batch=4, seed=0)


def test_commands_default_to_the_prepared_size_and_channels(tmp_path, capsys):
    """Size and channels come from prepared.json unless set; a set value that disagrees is the
    one-line error; datasets without prepared.json (digits) keep the config's values."""
    from genart_jax import cli
    from genart_jax.config import load_config
    from genart_jax.data import make_input
    from genart_jax.data.defaults import data_shape

    src = make_folder(tmp_path / "art")
    data = str(tmp_path / "data")
    prepare_folder(src, "art", data_dir=data, size=8)  # 3 channels
    assert data_shape("art", data) == (8, 3)
    assert data_shape("art", data, image_size=16) == (16, 3)
    assert data_shape("art", data, channels=1) == (8, 1)
    assert data_shape("digits") == (32, 1) and data_shape("digits", default=(28, 1)) == (28, 1)
    flags = cli._data_config("art", data_dir=data)  # train-features, train-classifier, eval
    assert (flags.image_size, flags.channels, flags.data_dir) == (8, 3, data)
    assert (cli._data_config("digits").image_size, cli._data_config("digits").channels) == (
        32, 1)

    overrides = {"data.name": "art", "data.data_dir": data}
    recipe = load_config("dcgan_digits", overrides)  # the recipe says 32x32x1
    cfg = cli._with_prepared_shape(recipe, overrides)
    assert (cfg.data.image_size, cfg.data.channels) == (8, 3)
    assert ("Data: data.image_size=8 data.channels=3 from the prepared.json of 'art' (the "
            "recipe has 32 and 1;" in capsys.readouterr().out)
    make_input(cfg.data, global_batch=4, seed=0)  # reads without a mismatch error
    set_one = {**overrides, "data.channels": "1"}  # set by the user: kept, and an error
    cfg = cli._with_prepared_shape(load_config("dcgan_digits", set_one), set_one)
    assert (cfg.data.image_size, cfg.data.channels) == (8, 1)
    with pytest.raises(DataError, match="^[^\n]*prepared at 8x8x3 .*asks data.image_size=8 "
                                        "data.channels=1[^\n]*$"):
        make_input(cfg.data, global_batch=4, seed=0)
    digits = load_config("dcgan_digits")
    assert cli._with_prepared_shape(digits, {}) is digits  # no prepared.json: the recipe's
    # A recipe whose model cannot take the prepared size says where the size came from.
    assert main(["train", "--workdir", str(tmp_path / "run"), "--config", "r3gan_folder64",
                 "--config.data.name=art", f"--config.data.data_dir={data}"]) == 2
    err = capsys.readouterr().err
    assert ("r3gan at 8 px" in err and "(data.image_size=8 from the prepared.json of 'art'; "
            "the recipe has 64: take a recipe for that size" in err and err.count("\n") == 1)
    assert not (tmp_path / "run").exists()


def test_prepare_folder_errors(tmp_path):
    src = make_folder(tmp_path / "art")
    with pytest.raises(DataError, match="unreadable image .*sea/notes.txt"):
        prepare_folder(src, "strict_art", data_dir=str(tmp_path / "d"), size=8, strict=True)
    assert not (tmp_path / "d" / "strict_art" / "1.0.0").exists()  # nothing half-written
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no readable image"):
        prepare_folder(tmp_path / "empty", "empty_art", data_dir=str(tmp_path / "d"))
    with pytest.raises(DataError, match="lower_snake_case"):
        prepare_folder(src, "My Art", data_dir=str(tmp_path / "d"))


def test_prepare_tfds_without_tensorflow_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(prepare_module.importlib.util, "find_spec", lambda name: None)
    assert main(["prepare", "mnist", "--data_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs TensorFlow" in err and '.[prepare]' in err


def test_prepare_tfds_offline_says_where_to_put_the_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(prepare_module.importlib.util, "find_spec", lambda name: object())

    def offline(builder, manual_dir):
        raise OSError("Failed to establish a new connection: Network is unreachable")

    monkeypatch.setattr(prepare_module, "_download_and_prepare", offline)
    assert main(["prepare", "mnist", "--data_dir", str(tmp_path)]) == 2
    assert "--manual-dir FOLDER" in capsys.readouterr().err


def test_a_standard_tfds_name_reads_through_mock_data():
    from genart_jax.config import load_config
    from genart_jax.data import make_input

    # Streaming at the stored 28 px (an MLP VAE: a DCGAN needs 4 * 2^k); in this process (mock
    # data are not seen by workers).
    cfg = load_config("vae_mnist", {"data.image_size": "28", "data.cache": "false",
                                      "data.workers": "0"})
    asked = []

    def mnist_like(builder, split, **kwargs):
        """`builder.as_data_source` under mock_data: 40 MNIST-shaped examples as a plain
        sequence (TFDS's own mock source has a `__getitems__` that cannot be called)."""
        asked.append((builder.name, split))
        rng = np.random.default_rng(0)
        return [{"image": rng.integers(0, 256, (28, 28, 1), dtype=np.uint8), "label": i % 10}
                for i in range(40)]

    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE,
                                as_data_source_fn=mnist_like):
        it, n = make_input(cfg.data, global_batch=8, seed=0)
        batch, _ = next(it)
    assert asked == [("mnist", "train")]
    assert n == 40 and batch["image"].shape == (1, 8, 28, 28, 1)
    assert batch["image"].dtype == np.uint8


@pytest.mark.slow
def test_prepare_folder_then_train_end_to_end(tmp_path):
    make_folder(tmp_path / "art")
    data = str(tmp_path / "data")
    proc = run_genart(["prepare", "folder", str(tmp_path / "art"), "--name", "my_art",
                       "--size", "16", "--data_dir", data])
    assert proc.returncode == 0, proc.stderr
    assert "13 images of 16x16x3 (12 train, 1 test)" in proc.stdout, proc.stdout
    assert "2 skipped" in proc.stdout
    # No size or channel flag: 16x16x3 come from prepared.json, over the recipe's 32x32x1.
    proc = run_genart(["train", "--workdir", str(tmp_path / "run"), "--steps", "4",
                       "--config.data.name=my_art", f"--config.data.data_dir={data}",
                       "--config.train.batch_size=8", "--config.model.dcgan.g_width=8",
                       "--config.model.dcgan.d_width=8", "--config.augment.diffaugment=translation",
                       "--config.augment.flip=true"])
    assert proc.returncode == 0, proc.stderr
    assert ("Data: data.image_size=16 data.channels=3 from the prepared.json of 'my_art'"
            in proc.stdout)
    assert "on my_art (12 images, 16x16x3)" in proc.stdout
    assert (tmp_path / "run" / "samples" / "final.png").is_file()
