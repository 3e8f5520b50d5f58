"""Steering an hvae: the family hook's top-group latents (the prior's standard form, a fixed
key for the rest: the same latent, the same image in any batch), the GAN hook unchanged,
`genart feedback` on an hvae workdir (--finetune refused, --temperature kept by the session),
the studio's temperature control, and `genart directions` in the top group."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genart_jax import feedback as fb
from genart_jax import sampling
from genart_jax.cli import main
from genart_jax.studio import render
from genart_jax.train import hvae
from genart_jax.train.families import family_of
from tests.studio_support import Client, start, trained_gan, trained_hvae, workdir_copy


@pytest.fixture(scope="module")
def hv(tmp_path_factory):
    """The tiny hvae workdir and its checkpoint generator (loaded once)."""
    work = trained_hvae(tmp_path_factory)
    return work, fb.CheckpointGenerator(work)


def test_top_group_latents_are_the_prior_in_standard_form_and_batch_free(hv):
    work, gen = hv
    cfg = gen.cfg
    assert family_of(cfg).steers_latents and gen.family == "hvae" and gen.step == 4
    lat = gen.latents
    assert gen.latent_dim == lat.latent_dim == 3 and lat.shape == (1, 1, 3)
    assert not lat.distillable and not lat.conditional
    np.testing.assert_allclose(gen.temperature, 1.0)  # hvae_digits' hvae.temperature
    # u = 0 is the top prior's mean: what model.sample draws at temperature 0 in the top group.
    model = lat.model
    temps = jnp.asarray([0.0] + [1.0] * (model.num_groups - 1))
    _, zs = model.apply({"params": gen.params}, 2, key=jax.random.PRNGKey(5), temperature=temps,
                        method=model.sample, return_latents=True)
    np.testing.assert_allclose(np.asarray(zs[0]), np.broadcast_to(lat.mean, (2, 1, 1, 3)),
                               rtol=1e-5, atol=1e-6)
    assert np.abs(lat.mean).max() > 0 and np.abs(np.log(lat.std)).max() > 0

    u = np.asarray(sampling.latents(0, 6, 3), np.float32)
    a = gen(u)
    assert a.shape == (6, 32, 32, 1) and a.min() >= -1 and a.max() <= 1
    b = gen(np.concatenate([u[4:], u[:4], u[:1]]))  # other places, another batch size
    np.testing.assert_array_equal(b[2:6], a[:4])
    np.testing.assert_array_equal(b[:2], a[4:])
    assert np.abs(a[0] - a[1]).max() > 0  # the top latents matter
    cold = gen.latents(u, temperature=0.0)
    assert np.abs(cold - a).max() > 0
    np.testing.assert_array_equal(gen.latents(u, temperature=1.0), a)
    with pytest.raises(ValueError, match="unconditional"):
        gen.latents(u, np.zeros(6, np.int32))
    with pytest.raises(ValueError, match=r"\(N > 0, 3\)"):
        gen(np.zeros((2, 4), np.float32))


def test_gan_hook_is_generate_from_latents(tmp_path_factory):
    work = trained_gan(tmp_path_factory)
    gen = fb.CheckpointGenerator(work)
    assert gen.family == "gan" and gen.temperature is None and gen.latents.distillable
    params, stats = sampling.generator_variables(gen.cfg, gen.state, True)
    z = np.asarray(sampling.latents(3, 5, gen.latent_dim))
    np.testing.assert_array_equal(gen(z), sampling.generate_from_latents(gen.cfg, params,
                                                                         stats, z))
    with pytest.raises(ValueError, match="hvae"):
        gen.latents(z, temperature=0.5)
    with pytest.raises(fb.FeedbackError, match="temperature applies"):
        fb.CheckpointGenerator(work, temperature=0.5)


@pytest.mark.slow
def test_feedback_command_on_an_hvae(hv, tmp_path, capsys):
    work = workdir_copy(hv[0], tmp_path / "run")
    fdir = work / "feedback"
    assert main(["feedback", "--workdir", str(work), "--num", "8"]) == 0
    assert (fdir / "round_001.png").is_file()
    assert np.load(fdir / "round_001.npy").shape == (8, 3)
    assert main(["feedback", "--workdir", str(work), "--like", "0,1,5", "--dislike", "2"]) == 0
    assert "round 1: liked 3, disliked 1 of 8" in capsys.readouterr().out
    rec = json.loads((fdir / "feedback.jsonl").read_text())
    assert (rec["liked"], rec["disliked"], rec["checkpoint_step"]) == ([0, 1, 5], [2], 4)
    assert json.loads((fdir / "session.json").read_text())["latent_dim"] == 3
    assert main(["feedback", "--workdir", str(work), "--finetune", "3"]) == 2
    assert "--finetune distils a GAN generator" in capsys.readouterr().err
    assert main(["feedback", "--workdir", str(work), "--temperature", "0.5"]) == 2
    assert "omit those options" in capsys.readouterr().err
    out = tmp_path / "d.npy"
    assert main(["feedback", "--workdir", str(work), "--save-direction", str(out)]) == 0
    assert np.load(out).shape == (3,)
    assert not list(fdir.glob("finetuned-*"))
    fresh = workdir_copy(hv[0], tmp_path / "fresh")  # refused before anything is written
    assert main(["feedback", "--workdir", str(fresh), "--finetune", "2"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (fresh / "feedback").exists()

    # A new session at another temperature keeps it, and draws the same latents colder.
    s = fb.FeedbackSession(work, session_dir=tmp_path / "cold", temperature=0.0)
    s.draw(8)
    assert json.loads((tmp_path / "cold" / "session.json").read_text())["temperature"] == 0.0
    z = np.load(fdir / "round_001.npy")
    np.testing.assert_array_equal(s.pending(), z)  # same seed: same latents
    np.testing.assert_array_equal(s.images, hv[1].latents(z, temperature=0.0))
    assert fb.FeedbackSession(work, session_dir=tmp_path / "cold").generator.temperature[1] == 0
    with pytest.raises(fb.FeedbackError, match=">= 0"):
        fb.FeedbackSession(work, session_dir=tmp_path / "bad", temperature=-1.0)


def test_studio_on_an_hvae_has_a_temperature_and_no_finetune(hv, tmp_path):
    work = workdir_copy(hv[0], tmp_path / "run")
    server = start(work, num=8)
    try:
        client = Client(server)
        status, st = client.call("/api/state")
        assert status == 200 and st["temperature"] == pytest.approx(1.0)
        assert st["finetune"] is False and st["latent_dim"] == 3
        shown = client.call("/api/round", {})[1]
        z = fb.FeedbackSession(work).pending()
        gen = server.studio.gen
        np.testing.assert_array_equal(
            _pixels(shown["images"]), _pixels(render.data_urls(gen.latents(z))))
        status, cold = client.call("/api/round", {"controls": {"temperature": 0.1}})
        assert status == 200
        np.testing.assert_array_equal(
            _pixels(cold["images"]),
            _pixels(render.data_urls(gen.latents(z, temperature=0.1))))
        assert np.abs(_pixels(cold["images"]) - _pixels(shown["images"])).max() > 0
        for bad in (-0.1, 3.0, "hot"):
            assert client.call("/api/round", {"controls": {"temperature": bad}})[0] == 400
        status, walk = client.call("/api/walk", {"a": 0, "b": 1, "frames": 3,
                                                 "controls": {"temperature": 0.1}})
        assert status == 200  # the walk's ends are the round's samples (up to slerp's rounding)
        ends = np.abs(_pixels(walk["images"])[[0, -1]] - _pixels(cold["images"])[[0, 1]])
        assert ends.mean() < 1.0
        assert client.call("/api/rate", {"round": 1, "like": [0], "dislike": [1]})[0] == 200
        status, body = client.call("/api/finetune", {"steps": 3})
        assert status == 400 and "GAN generator" in body["error"]
        assert client.call("/api/round", {})[1]["round"] == 2
    finally:
        server.shutdown()
        server.server_close()


def test_gan_studio_refuses_a_temperature(tmp_path_factory):
    work = workdir_copy(trained_gan(tmp_path_factory), tmp_path_factory.mktemp("gt") / "run")
    server = start(work, num=8)
    try:
        client = Client(server)
        st = client.call("/api/state")[1]
        assert st["temperature"] is None and st["finetune"] is True
        status, body = client.call("/api/round", {"controls": {"temperature": 0.5}})
        assert status == 400 and "hvae" in body["error"]
    finally:
        server.shutdown()
        server.server_close()


class Brightness:
    """A judge of two classes: 1 if an image is brighter than `threshold` on average."""

    def __init__(self, threshold):
        self.threshold = threshold

    def probabilities(self, images):
        bright = np.asarray(images).mean(axis=(1, 2, 3)) > self.threshold
        return np.stack([~bright, bright], axis=-1).astype(np.float32)


@pytest.mark.slow
def test_directions_in_the_top_group(hv, tmp_path, capsys):
    from genart_jax import directions as dirs
    from genart_jax.classifier import train_classifier

    work, gen = hv
    assert dirs.checkpoint_generator(work).family == "hvae"
    # The command, with a (3-step) classifier of the digits' labels: it runs and writes.
    clf = tmp_path / "clf"
    train_classifier(gen.cfg.data, clf, steps=3, width=8, feature_dim=16, progress=False)
    out = tmp_path / "dirs"
    assert main(["directions", "--workdir", str(work), "--classifier", str(clf), "--num", "32",
                 "--out", str(out)]) == 0
    meta = json.loads((out / "directions.json").read_text())
    assert meta["step"] == 4 and sum(meta["counts"].values()) == 32
    assert "32 samples of step 4 classified" in capsys.readouterr().out
    # A judge that splits the prior's samples: a direction in the top group that steers.
    brightness = gen(np.asarray(sampling.latents(0, 64, 3))).mean(axis=(1, 2, 3))
    judge = Brightness(float(np.median(brightness)))
    out = tmp_path / "bright"
    result = dirs.find_directions(gen, judge, 2, out, num=64, report=(3.0,), report_num=32)
    assert sorted(result["directions"]) == ["0", "1"]
    assert np.load(out / "class_1.npy").shape == (3,)
    share = result["steering"]["shares"]["1"]
    assert share[1] > share[0]
    # The studio picks them up as class sliders.
    studio_work = workdir_copy(work, tmp_path / "run")
    shutil.copytree(out, studio_work / "directions")
    server = start(studio_work, num=8)
    try:
        client = Client(server)
        assert client.call("/api/state")[1]["directions"] == [0, 1]
        status, moved = client.call("/api/round", {"controls": {"strengths": {"1": 3.0}}})
        assert status == 200 and len(moved["images"]) == 8
    finally:
        server.shutdown()
        server.server_close()


def test_a_plain_vae_is_still_refused(tmp_path):
    from genart_jax.config import load_config, to_json

    work = tmp_path / "vae"
    work.mkdir()
    (work / "config.json").write_text(to_json(load_config("vae_digits")))
    with pytest.raises(fb.FeedbackError, match="GAN or an hvae; this workdir holds a VAE"):
        fb.CheckpointGenerator(work)
    assert hvae.latent_generator  # the hook the families registry points at


def _pixels(urls):
    import base64
    import io

    from PIL import Image
    return np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))))
                     for u in urls]).astype(np.float64)
