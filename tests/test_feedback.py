"""Feedback sessions: the CEM update, rating validation, history and resume, a simulated user
on a toy generator, and the `genart feedback` command end to end (with --finetune)."""

import hashlib
import json
import shutil

import jax
import numpy as np
import pytest

from genart_jax import feedback as fb
from genart_jax import sampling
from genart_jax.cli import main
from genart_jax.train import train_and_evaluate
from tests.conftest import tiny_config

DIM = 8


class Identity:
    """A toy 'generator': the latent itself, shown as a 1 x D image."""
    latent_dim = DIM

    def __call__(self, z):
        return np.tanh(np.asarray(z))[:, None, :, None]


class Threshold:
    """A toy judge: class 1 when the first latent coordinate exceeds 1.28 (about 10% of the
    prior), class 0 otherwise."""

    def probabilities(self, images):
        hit = images[:, 0, 0, 0] > np.tanh(1.28)
        return np.stack([~hit, hit], axis=1).astype(np.float32)


def toy_session(tmp_path, **kw):
    return fb.FeedbackSession(tmp_path, generator=Identity(), **kw)


def test_cem_update_closed_form_and_floor():
    prev = fb.Gaussian(np.full(DIM, 0.5), np.full(DIM, 2.0))
    liked = np.random.default_rng(0).normal(size=(5, DIM))
    new = fb.cem_update(prev, liked, smoothing=0.25, std_floor=0.0)
    np.testing.assert_allclose(new.mean, 0.75 * 0.5 + 0.25 * liked.mean(0))
    np.testing.assert_allclose(new.std, 0.75 * 2.0 + 0.25 * liked.std(0))
    one = fb.cem_update(fb.Gaussian.prior(DIM), liked[:1], smoothing=1.0, std_floor=0.3)
    np.testing.assert_allclose(one.mean, liked[0])
    np.testing.assert_allclose(one.std, 0.3)  # one like has std 0: the floor holds
    floor = float(np.median(0.5 * new.std))
    shrunk = fb.cem_update(prev, liked, smoothing=0.25, std_floor=floor, contraction=0.5)
    np.testing.assert_allclose(shrunk.std, np.maximum(0.5 * new.std, floor))
    assert shrunk.std.min() == floor and shrunk.std.max() > floor  # binds on some only
    assert fb.cem_update(prev, np.zeros((0, DIM)), smoothing=0.5, std_floor=0.1) is prev
    with pytest.raises(ValueError, match="smoothing"):
        fb.cem_update(prev, liked, smoothing=0.0, std_floor=0.1)


def test_likes_from_one_half_space_move_the_mean_there():
    z = np.asarray(sampling.latents(0, 400, DIM))
    liked = z[z[:, 0] > 0]
    new = fb.cem_update(fb.Gaussian.prior(DIM), liked, smoothing=0.7, std_floor=0.1)
    assert new.mean[0] > 0.4  # 0.7 * E[z | z > 0] = 0.7 * 0.80
    assert np.all(np.abs(new.mean[1:]) < 0.2) and new.std[0] < new.std[1:].min()


def test_ratings_are_validated():
    assert fb.validate_ratings([3, 1, 3], [0], 4) == ([1, 3], [0])
    with pytest.raises(fb.FeedbackError, match=r"in 0\.\.3 .*\[4, 9\]"):
        fb.validate_ratings([4], [9], 4)
    with pytest.raises(fb.FeedbackError, match="-1"):
        fb.validate_ratings([-1], [], 4)
    with pytest.raises(fb.FeedbackError, match=r"\[2\] are both liked and disliked"):
        fb.validate_ratings([1, 2], [2], 4)
    with pytest.raises(fb.FeedbackError, match="like 3,7"):
        fb.parse_indices("3;x")
    with pytest.raises(fb.FeedbackError, match="whole sample numbers"):
        fb.parse_indices([1.5])


def test_ratings_file(tmp_path):
    good, bad = tmp_path / "r.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"like": [1, 2], "dislike": [0]}))
    bad.write_text(json.dumps({"likes": [1]}))
    assert fb.read_ratings_file(good) == ([1, 2], [0])
    with pytest.raises(fb.FeedbackError, match="must hold"):
        fb.read_ratings_file(bad)
    with pytest.raises(fb.FeedbackError, match="cannot read"):
        fb.read_ratings_file(tmp_path / "missing.json")


def test_history_round_trips_and_the_session_resumes(tmp_path):
    s = toy_session(tmp_path, seed=5, smoothing=0.5, std_floor=0.2, contraction=0.8, screen=1)
    with pytest.raises(fb.FeedbackError, match="not been drawn"):
        s.rate(like=[0])
    grid = s.draw(16)
    assert grid.size[0] > 4 * 8 and (tmp_path / "feedback" / "round_001.png").is_file()
    first = s.pending()
    with pytest.raises(fb.FeedbackError, match="in 0..15"):
        s.rate(like=[16])
    s.rate(like="0,3", dislike=[1])
    assert s.pending() is None and s.round == 2

    again = toy_session(tmp_path)  # a new process: everything comes from disk
    assert again.settings["smoothing"] == 0.5 and again.round == 2
    np.testing.assert_array_equal(again.distribution.mean, s.distribution.mean)
    expect = fb.cem_update(fb.Gaussian.prior(DIM), first[[0, 3]], smoothing=0.5,
                           std_floor=0.2, contraction=0.8)
    np.testing.assert_allclose(again.distribution.std, expect.std)
    again.draw(16)
    np.testing.assert_allclose(np.load(tmp_path / "feedback" / "round_002.npy"),
                               expect.sample(5 + 2, 16), rtol=1e-6)
    again.rate(like=[2], dislike=[])
    records = [json.loads(line) for line in
               (tmp_path / "feedback" / "feedback.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2] and records[0]["liked"] == [0, 3]
    assert records[1]["seed"] == 7 and records[1]["distribution"]["std_min"] >= 0.2
    direction = again.direction()
    liked = np.concatenate([first[[0, 3]], np.load(tmp_path / "feedback" / "round_002.npy")[[2]]])
    np.testing.assert_allclose(direction, liked.mean(0) - first[[1]].mean(0), rtol=1e-6)
    with pytest.raises(fb.FeedbackError, match="started with smoothing=0.5"):
        toy_session(tmp_path, smoothing=0.9)
    with pytest.raises(fb.FeedbackError, match="smoothing and contraction must be in"):
        toy_session(tmp_path / "new", contraction=0.0)
    assert not (tmp_path / "new").exists()


def test_preference_direction_is_the_ridge_solution_and_points_at_the_likes():
    z = np.asarray(sampling.latents(1, 300, DIM), np.float64)
    liked = z[:, 0] > 0.5
    w, centre = fb.preference_direction(z, liked, ridge=0.5)
    # Independently: least squares on the ridge-augmented system [X; sqrt(r n) I] w = [y - m; 0].
    y, x = np.where(liked, 1.0, -1.0), z - z.mean(0)
    a = np.concatenate([x, np.sqrt(0.5 * len(z)) * np.eye(DIM)])
    b = np.concatenate([y - y.mean(), np.zeros(DIM)])
    np.testing.assert_allclose(w, np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(centre, z.mean(0))
    assert np.argmax(np.abs(w)) == 0 and w[0] > 0
    with pytest.raises(ValueError, match="ridge must be > 0"):
        fb.preference_direction(z, liked, ridge=0.0)


def test_screening_keeps_the_best_scored_proposals_in_drawn_order():
    proposals = np.arange(10.0)[::-1, None] * np.array([[1.0, -1.0]])  # score 2 * value
    kept = fb.screen_proposals(proposals, 3, np.array([1.0, -1.0]), np.zeros(2))
    np.testing.assert_array_equal(kept[:, 0], [9, 8, 7])
    kept = fb.screen_proposals(proposals[::-1], 3, np.array([1.0, -1.0]), np.zeros(2))
    np.testing.assert_array_equal(kept[:, 0], [7, 8, 9])


def test_a_session_screens_once_it_has_likes_and_dislikes(tmp_path):
    only_likes = toy_session(tmp_path / "a", seed=3, screen=4)
    only_likes.draw(16)
    only_likes.rate(like=[0, 1])
    np.testing.assert_allclose(only_likes.propose(16), only_likes.distribution.sample(5, 16),
                               rtol=1e-6)
    s = toy_session(tmp_path / "b", seed=3, screen=4)
    s.draw(16)
    z1 = s.pending()
    s.rate(like=[0, 1], dislike=[2, 3, 4])
    rated, liked = s.rated_latents()
    np.testing.assert_array_equal(rated, z1[[0, 1, 2, 3, 4]])
    np.testing.assert_array_equal(liked, [True, True, False, False, False])
    w, centre = fb.preference_direction(rated, liked, 1.0)
    pool = s.distribution.sample(5, 64)
    np.testing.assert_allclose(s.propose(16), fb.screen_proposals(pool, 16, w, centre),
                               rtol=1e-6)
    assert ((s.propose(16) - centre) @ w).min() >= np.median((pool - centre) @ w)
    with pytest.raises(fb.FeedbackError, match="screen must be >= 1"):
        toy_session(tmp_path / "c", screen=0)


def test_screening_helps_a_weak_refit_on_the_toy(tmp_path):
    def share(screen):  # a small CEM step without contraction: 34% then 50% on its own
        session = toy_session(tmp_path / str(screen), contraction=1.0, smoothing=0.5,
                              screen=screen)
        return fb.simulate(session, fb.SimulatedUser(Threshold(), 1), rounds=3, num=64)[-1]
    assert share(1) < 0.6 and share(16) >= 0.9


def test_simulated_user_on_a_toy_generator_steers_the_distribution(tmp_path):
    shares = fb.simulate(toy_session(tmp_path), fb.SimulatedUser(Threshold(), 1), rounds=3,
                         num=64)
    assert shares[0] < 0.25 and shares[-1] >= 0.8, shares
    # The same user asking for the other class gets it from the first round.
    other = fb.simulate(toy_session(tmp_path / "b"), fb.SimulatedUser(Threshold(), 0), rounds=1)
    assert other[0] > 0.75


def test_numbered_grid_has_a_label_row_per_tile():
    img = fb.numbered_grid(np.zeros((10, 8, 8, 1)), tile=32)
    assert img.mode == "RGB" and img.size == (4 * (32 + 3) + 3, 3 * (32 + 12 + 3) + 3)
    pixels = np.asarray(img)
    assert (pixels[3:15, 3:35] < 128).any()  # the number "0" is written above tile 0


def _files(root):
    return {p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_gan(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gan")
    cfg = tiny_config("dcgan", **{"train.steps": "4", "train.sample_every": "0",
                                  "checkpoint.async_save": "False"})
    train_and_evaluate(cfg, workdir, progress=False,
                       devices=jax.devices()[:1])
    return workdir


@pytest.mark.slow
def test_feedback_command_end_to_end(tiny_gan, tmp_path, capsys, monkeypatch):
    work = tmp_path / "run"
    shutil.copytree(tiny_gan, work)
    original = _files(work / "checkpoints")
    fdir = work / "feedback"

    assert main(["feedback", "--workdir", str(work), "--num", "12"]) == 0
    assert (fdir / "round_001.png").is_file() and not (fdir / "feedback.jsonl").exists()
    assert main(["feedback", "--workdir", str(work), "--like", "12"]) == 2
    assert "in 0..11" in capsys.readouterr().err
    assert main(["feedback", "--workdir", str(work), "--like", "1,2", "--dislike", "2"]) == 2
    assert "both liked and disliked" in capsys.readouterr().err
    assert main(["feedback", "--workdir", str(work), "--like", "0,1,5",
                 "--dislike", "2"]) == 0
    assert "round 1: liked 3, disliked 1 of 12" in capsys.readouterr().out
    ratings = tmp_path / "r.json"
    ratings.write_text(json.dumps({"like": [4], "dislike": [0, 1]}))
    # A second call continues at the next round (round 2 was drawn by the previous call).
    assert main(["feedback", "--workdir", str(work), "--ratings", str(ratings)]) == 0
    records = [json.loads(line) for line in (fdir / "feedback.jsonl").read_text().splitlines()]
    assert [(r["round"], r["liked"], r["disliked"]) for r in records] == [
        (1, [0, 1, 5], [2]), (2, [4], [0, 1])]
    assert (fdir / "round_003.png").is_file()
    assert main(["feedback", "--workdir", str(work), "--smoothing", "0.1"]) == 2
    assert "omit those options" in capsys.readouterr().err

    # Interactive: a bad answer is reported and asked again; q stops.
    answers = iter(["0,99", "", "0", "1", "q"])
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert main(["feedback", "--workdir", str(work)]) == 0
    assert "in 0..11" in capsys.readouterr().err
    assert len((fdir / "feedback.jsonl").read_text().splitlines()) == 3
    monkeypatch.undo()

    direction = tmp_path / "d.npy"
    assert main(["feedback", "--workdir", str(work), "--finetune", "3",
                 "--save-direction", str(direction)]) == 0
    tuned = fdir / "finetuned-round3"
    assert f"genart sample --workdir {tuned}" in capsys.readouterr().out
    assert (tuned / "config.json").is_file() and (tuned / "checkpoints").is_dir()
    assert json.loads((tuned / "finetune.json").read_text())["steps"] == 3
    assert _files(work / "checkpoints") == original  # the original is never written
    assert np.load(direction).shape == (16,)
    assert main(["feedback", "--workdir", str(work), "--finetune", "3"]) == 2
    assert "exists already" in capsys.readouterr().err

    out = tmp_path / "tuned.png"
    assert main(["sample", "--workdir", str(tuned), "--num", "4", "--out", str(out)]) == 0
    steered = tmp_path / "steered.png"
    assert main(["sample", "--workdir", str(work), "--num", "16", "--out", str(steered),
                 "--interpolate", "--frames", "4", "--truncation", "0.7",
                 "--direction", str(direction), "--strength", "2"]) == 0
    assert steered.is_file()
    assert main(["sample", "--workdir", str(work), "--out", str(steered), "--direction",
                 str(ratings)]) == 2


@pytest.mark.slow
def test_simulated_user_benchmark_writes_its_curve(tiny_gan, tmp_path):
    from benchmarks import feedback_sim
    from genart_jax.classifier import train_classifier
    from genart_jax.config import from_json

    cfg = from_json((tiny_gan / "config.json").read_text())
    train_classifier(cfg.data, tmp_path / "clf", steps=3, width=8, feature_dim=16,
                     progress=False)
    before = _files(tiny_gan)
    assert feedback_sim.main(["--workdir", str(tiny_gan), "--classifier", str(tmp_path / "clf"),
                              "--theme", "1,4", "--rounds", "2", "--per-round", "8",
                              "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "feedback_sim.json").read_text())
    assert set(result["shares"]) == {"1", "4"} and len(result["shares"]["4"]) == 2
    assert all(0.0 <= s <= 1.0 for s in result["shares"]["1"])
    assert (tmp_path / "out" / "sessions" / "theme_4_seed_0" / "feedback.jsonl").is_file()
    assert len(result["runs"]) == 2 and result["seeds"] == [0]
    assert _files(tiny_gan) == before  # the benchmark does not write into the workdir
