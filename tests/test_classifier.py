"""The package-trained classifier (train, save, load, features), user extractors, and
`genart train-classifier` / `genart eval --metrics` end to end."""

import json
import textwrap

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genart_jax.classifier import ClassifierError, load_classifier, load_extractor
from genart_jax.cli import main
from genart_jax.config import load_config
from genart_jax.data import read_split
from genart_jax.data.pipeline import subset_indices
from tests.test_cli import TINY, jax_state, run_genart

TINY_CLF = dict(steps=150, batch_size=32, width=8, feature_dim=32)


@pytest.fixture(scope="module")
def data16():
    return load_config("dcgan_digits", {"data.image_size": "16"}).data


@pytest.fixture(scope="module")
def trained(data16, tmp_path_factory):
    from genart_jax.classifier import train_classifier

    out = tmp_path_factory.mktemp("clf")
    meta = train_classifier(data16, out, seed=0, progress=False, **TINY_CLF)
    return out, meta


def test_short_training_reaches_a_reasonable_accuracy(trained):
    _, meta = trained
    assert meta["dataset"] == "digits" and meta["num_classes"] == 10
    assert (meta["image_size"], meta["channels"], meta["feature_dim"]) == (16, 1, 32)
    assert meta["test_examples"] == 300 and meta["steps"] == 150
    assert meta["test_accuracy"] > 0.8  # chance is 0.1


def test_save_load_round_trip_gives_identical_outputs(trained, data16):
    out, meta = trained
    images, labels = read_split(data16, "test", 40)
    a, b = load_classifier(out), load_classifier(out)
    assert a.name == "digits classifier"
    fa, fb = a.features(images), b.features(images)
    assert fa.shape == (40, 32) and np.array_equal(fa, fb) and fa.std() > 0
    probs = a.probabilities(images)
    assert probs.shape == (40, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # Batching does not change results: 300 images in batches of 256 (the last one padded).
    all_images, all_labels = read_split(data16, "test")
    acc = float((a.probabilities(all_images).argmax(1) == all_labels).mean())
    assert acc == pytest.approx(meta["test_accuracy"])
    drawn = subset_indices(len(all_images), 40)  # the 40 that read_split drew
    assert np.allclose(a.features(all_images)[drawn], fa, atol=1e-5)


def test_load_errors_are_clear(trained, tmp_path):
    out, _ = trained
    with pytest.raises(ClassifierError, match="no classifier at"):
        load_classifier(tmp_path / "missing")
    with pytest.raises(ClassifierError, match="not a genart_jax classifier"):
        load_classifier(tmp_path)
    clf = load_classifier(out)
    with pytest.raises(ClassifierError, match=r"shape \(N, 16, 16, 1\)"):
        clf.features(np.zeros((2, 32, 32, 1), np.float32))


EXTRACTOR_MODULE = textwrap.dedent('''
    import flax.linen as nn


    class MeanPool(nn.Module):
        features: int = 4

        @nn.compact
        def __call__(self, x):
            return nn.Dense(self.features)(x.mean(axis=(1, 2)))
''')


def test_user_extractor_from_a_module_spec(tmp_path, monkeypatch):
    (tmp_path / "my_extractor.py").write_text(EXTRACTOR_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_extractor

    module = my_extractor.MeanPool(features=6)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (5, 16, 16, 1)), jnp.float32)
    params = module.init(jax.random.PRNGKey(0), x)["params"]
    (tmp_path / "p.msgpack").write_bytes(flax.serialization.msgpack_serialize(
        {"params": jax.tree.map(np.asarray, params)}))
    (tmp_path / "kw.json").write_text(json.dumps({"features": 6}))
    ext = load_extractor("my_extractor:MeanPool", tmp_path / "p.msgpack", tmp_path / "kw.json")
    assert ext.name == "my_extractor:MeanPool features"
    np.testing.assert_allclose(ext.features(np.asarray(x)), module.apply({"params": params}, x),
                               rtol=1e-6)
    with pytest.raises(ClassifierError, match="package.module:ClassName"):
        load_extractor("my_extractor.MeanPool", tmp_path / "p.msgpack")
    with pytest.raises(ClassifierError, match="cannot import"):
        load_extractor("my_extractor:Nope", tmp_path / "p.msgpack")
    with pytest.raises(ClassifierError, match="cannot read extractor params"):
        load_extractor("my_extractor:MeanPool", tmp_path / "missing.msgpack")
    with pytest.raises(ClassifierError, match="failed on images"):  # params for 6, module of 4
        load_extractor("my_extractor:MeanPool", tmp_path / "p.msgpack").features(np.asarray(x))


def test_eval_without_a_classifier_says_how_to_train_one(tmp_path, capsys, monkeypatch):
    from genart_jax import checkpoint as ckpt
    from genart_jax.config import to_json

    cfg = load_config("dcgan_digits", {"model.dcgan.g_width": "8", "model.dcgan.d_width": "8",
                                       "data.image_size": "16"})
    (tmp_path / "config.json").write_text(to_json(cfg))
    ckpt.save(tmp_path, 0, jax_state(cfg), {"config": {}, "data_position": {}})
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--workdir", str(tmp_path), "--metrics", "fid"]) == 2
    err = capsys.readouterr().err
    assert "genart train-classifier --data digits --image-size 16 --channels 1 --out " \
           "runs/classifier_digits_16" in err
    assert "genart train-features --data digits --image-size 16 --channels 1" in err
    assert main(["eval", "--workdir", str(tmp_path), "--metrics", "fid,is"]) == 2
    assert "subset of fid,kid,pr" in capsys.readouterr().err
    assert not (tmp_path / "eval.json").exists()


@pytest.mark.slow
def test_train_classifier_then_eval_a_gan_end_to_end(tmp_path):
    clf = tmp_path / "clf"
    proc = run_genart(["train-classifier", "--image-size", "16", "--steps", "30", "--width",
                       "8", "--feature-dim", "16", "--out", str(clf), "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    assert "digits classifier (16x16x1, 10 classes, 16-d features): 30 steps" in proc.stdout
    meta = json.loads((clf / "classifier.json").read_text())
    assert meta["steps"] == 30 and 0 <= meta["test_accuracy"] <= 1

    workdir = tmp_path / "gan"
    proc = run_genart(["train", "--workdir", str(workdir), "--steps", "4", *TINY,
                       "--config.train.sample_every=0", "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    proc = run_genart(["eval", "--workdir", str(workdir), "--metrics", "fid,kid,pr",
                       "--classifier", str(clf), "--num", "64", "--limit", "80"])
    assert proc.returncode == 0, proc.stderr
    result = json.loads((workdir / "eval.json").read_text().splitlines()[-1])
    assert result["step"] == 4 and result["ema"] is True and result["real_split"] == "test"
    assert (result["real_images"], result["generated_images"]) == (80, 64)
    assert result["features"] == "digits classifier"
    fid = result["FID (digits classifier features)"]
    assert np.isfinite(fid) and fid > 0
    assert 0 <= result["precision (k=3, digits classifier features)"] <= 1
    assert "FID (digits classifier features)" in proc.stdout

    proc = run_genart(["eval", "--reference", "train", "--image-size", "16", "--classifier",
                       str(clf), "--limit", "80", "--metrics", "fid"])
    assert proc.returncode == 0, proc.stderr
    ref = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ref["reference_split"] == "train" and ref["real_images"] == 80
    # Real digits are closer to real digits than a 4-step GAN's samples are.
    assert ref["FID (digits classifier features)"] < fid
