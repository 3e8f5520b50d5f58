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
    with pytest.raises(DataError, match="prepared with --test-fraction 0.1"):
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

    cfg = load_config("dcgan_mnist", {"data.image_size": "16"})
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        it, n = make_input(cfg.data, global_batch=8, seed=0)
        batch, _ = next(it)
    assert n == 40 and batch["image"].shape == (1, 8, 16, 16, 1)
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0


@pytest.mark.slow
def test_prepare_folder_then_train_end_to_end(tmp_path):
    make_folder(tmp_path / "art")
    data = str(tmp_path / "data")
    proc = run_genart(["prepare", "folder", str(tmp_path / "art"), "--name", "my_art",
                       "--size", "16", "--data_dir", data])
    assert proc.returncode == 0, proc.stderr
    assert "13 images of 16x16x3 (12 train, 1 test)" in proc.stdout, proc.stdout
    assert "2 skipped" in proc.stdout
    proc = run_genart(["train", "--workdir", str(tmp_path / "run"), "--steps", "4",
                       "--config.data.name=my_art", f"--config.data.data_dir={data}",
                       "--config.data.channels=3", "--config.data.image_size=16",
                       "--config.train.batch_size=8", "--config.model.g_width=8",
                       "--config.model.d_width=8", "--config.augment.diffaugment=translation",
                       "--config.augment.flip=true"])
    assert proc.returncode == 0, proc.stderr
    assert "on my_art (12 images, 16x16x3)" in proc.stdout
    assert (tmp_path / "run" / "samples" / "final.png").is_file()
