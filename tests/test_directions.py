"""Per-class attribute directions: the pure function against a hand computation, skipped
classes, steering on a toy generator and judge, and `genart directions` end to end."""

import json

import jax
import numpy as np
import pytest

from genart_jax import directions as dirs
from genart_jax import sampling
from genart_jax.cli import main
from genart_jax.config import load_config, to_json
from genart_jax.train import train_and_evaluate
from tests.conftest import tiny_config
from tests.test_feedback import DIM, Identity, Threshold


def test_class_directions_match_a_hand_computation():
    z = np.array([[2.0, 1.0], [4.0, -1.0], [-1.0, 3.0], [-3.0, 5.0], [-2.0, 0.0]])
    pred = (z[:, 0] < 0).astype(int)  # class 0: first coordinate positive
    d, counts = dirs.class_directions(z, pred, 2)
    # class 0: mean of rows 0-1 = (3, 0); rest: mean of rows 2-4 = (-2, 8/3)
    np.testing.assert_allclose(d[0], [5.0, -8.0 / 3.0], rtol=1e-6)
    np.testing.assert_allclose(d[1], [-5.0, 8.0 / 3.0], rtol=1e-6)
    assert counts.tolist() == [2, 3] and d.dtype == np.float32


def test_class_directions_on_prior_latents_point_along_the_labelling_coordinate():
    z = np.asarray(sampling.latents(0, 2000, DIM))
    d, counts = dirs.class_directions(z, (z[:, 0] > 0).astype(int), 2)
    # E[z0 | z0 > 0] - E[z0 | z0 < 0] = 2 * sqrt(2 / pi) = 1.596; other coordinates ~ 0
    assert d[1][0] == pytest.approx(2 * np.sqrt(2 / np.pi), abs=0.06)
    assert np.all(np.abs(d[1][1:]) < 0.15) and counts.sum() == 2000
    np.testing.assert_allclose(d[0], -d[1], rtol=1e-5)


def test_an_empty_class_and_a_class_of_everything_are_skipped():
    z = np.random.default_rng(0).normal(size=(6, 3))
    d, counts = dirs.class_directions(z, np.array([0, 0, 2, 2, 2, 0]), 4)
    assert counts.tolist() == [3, 0, 3, 0]
    assert np.isnan(d[1]).all() and np.isnan(d[3]).all() and np.isfinite(d[[0, 2]]).all()
    d, counts = dirs.class_directions(z, np.zeros(6, int), 2)  # class 0 has no "rest"
    assert counts.tolist() == [6, 0] and np.isnan(d).all()
    with pytest.raises(ValueError, match=r"in 0\.\.1"):
        dirs.class_directions(z, np.array([0, 1, 2, 0, 0, 0]), 2)


def test_chunked_classification_is_the_same_as_one_batch():
    gen, judge = Identity(), Threshold()
    z, pred = dirs.classify_prior(gen, judge, 300, seed=4, chunk=64)
    np.testing.assert_array_equal(z, np.asarray(sampling.latents(4, 300, DIM)))
    np.testing.assert_array_equal(pred, (z[:, 0] > 1.28).astype(int))


def test_adding_a_class_direction_raises_the_share_judged_as_that_class():
    gen, judge = Identity(), Threshold()
    z, pred = dirs.classify_prior(gen, judge, 2048, seed=0)
    d, counts = dirs.class_directions(z, pred, 2)
    assert 0.05 < counts[1] / 2048 < 0.15  # Threshold: about 10% of the prior
    shares = dirs.steering_shares(gen, judge, d, [1.0, 2.0], num=512, seed=1)
    assert shares[1][0] < 0.15 and shares[1][0] < shares[1][1] < shares[1][2]
    assert shares[1][2] > 0.6  # d[1] is about (2.2, 0, ...): strength 2 moves z0 by ~4.4
    assert shares[0][0] > 0.85 and shares[0][2] == 1.0


def test_find_directions_writes_the_files_and_notes_a_skipped_class(tmp_path):
    class ThreeClasses(Threshold):  # class 2 is never predicted
        def probabilities(self, images):
            return np.concatenate([super().probabilities(images),
                                   np.zeros((len(images), 1), np.float32)], axis=1)

    result = dirs.find_directions(Identity(), ThreeClasses(), 3, tmp_path, num=600, seed=2,
                                  report=[2.0], report_num=128, info={"workdir": "toy"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "class_0.npy", "class_1.npy", "directions.json", "directions.png"]
    assert json.loads((tmp_path / "directions.json").read_text()) == result
    assert result["skipped"] == {"2": "no sample classified as it"}
    assert result["counts"]["2"] == 0 and sum(result["counts"].values()) == 600
    assert result["png"]["rows"] == ["none", "class 0", "class 1"]
    shares = result["steering"]["shares"]
    assert set(shares) == {"0", "1"} and shares["1"][1] > shares["1"][0]
    assert np.load(tmp_path / "class_1.npy").shape == (DIM,)


@pytest.fixture(scope="module")
def tiny_gan_and_classifier(tmp_path_factory):
    from genart_jax.classifier import train_classifier

    root = tmp_path_factory.mktemp("dirs")
    cfg = tiny_config("dcgan", **{"train.steps": "4", "train.sample_every": "0",
                                  "checkpoint.async_save": "False"})
    train_and_evaluate(cfg, root / "gan", progress=False, devices=jax.devices()[:1])
    train_classifier(cfg.data, root / "clf", steps=3, width=8, feature_dim=16, progress=False)
    return root / "gan", root / "clf"


@pytest.mark.slow
def test_directions_command_end_to_end(tiny_gan_and_classifier, tmp_path, capsys,
                                       monkeypatch):
    gan, clf = tiny_gan_and_classifier
    out = tmp_path / "dirs"
    assert main(["directions", "--workdir", str(gan), "--classifier", str(clf), "--num", "200",
                 "--out", str(out), "--report", "2", "--report-num", "32"]) == 0
    printed = capsys.readouterr().out
    meta = json.loads((out / "directions.json").read_text())
    assert meta["step"] == 4 and meta["num"] == 200 and meta["seed"] == 0
    assert meta["workdir"] == str(gan) and meta["classifier"] == str(clf)
    assert sum(meta["counts"].values()) == 200 and len(meta["counts"]) == 10
    found = sorted(meta["directions"], key=int)
    assert found and set(found) | set(meta["skipped"]) == set(map(str, range(10)))
    for k in range(10):
        assert (out / f"class_{k}.npy").is_file() == (str(k) in found)
    assert (out / "directions.png").is_file() and "share classified" in printed
    assert set(meta["steering"]["shares"]) == set(found)

    png = tmp_path / "steered.png"
    assert main(["sample", "--workdir", str(gan), "--num", "4", "--out", str(png),
                 "--direction", str(out / f"class_{found[0]}.npy"), "--strength", "2"]) == 0
    assert png.is_file()

    # Errors: no classifier (with the command to train one), a VAE, a conditional GAN.
    monkeypatch.chdir(tmp_path)
    assert main(["directions", "--workdir", str(gan), "--out", str(tmp_path / "x")]) == 2
    assert "genart train-classifier --data digits --image-size 16 --channels 1 --out " \
           "runs/classifier_digits_16" in capsys.readouterr().err
    for name, words in [("vae_digits", "holds a VAE"), ("cdcgan_digits", "--theme K")]:
        work = tmp_path / name
        work.mkdir()
        (work / "config.json").write_text(to_json(load_config(name)))
        assert main(["directions", "--workdir", str(work), "--classifier", str(clf),
                     "--out", str(tmp_path / "y")]) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
