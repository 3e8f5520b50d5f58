"""genart studio's API: controls against closed forms, rating and next round over HTTP, the
history equal to the CLI's files and continued by the CLI, token, path traversal, bad input
that writes nothing, two tabs, the latent walk and seeds, fine-tune in the background, and the
run page from the workdir's files."""

import hashlib
import json
import threading
import time

import numpy as np
import pytest

from genart_jax import feedback as fb
from genart_jax import sampling
from genart_jax.cli import main
from genart_jax.studio import controls as ctl
from genart_jax.studio import render, run_files
from tests.studio_support import Client, start, trained_gan, workdir_copy


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _pixels(urls):
    import base64
    import io

    from PIL import Image
    return np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))))
                     for u in urls]).astype(np.float64)


def test_controls_are_truncation_then_directions_in_closed_form():
    rng = np.random.default_rng(0)
    z, centre, d3 = rng.normal(size=(5, 4)), rng.normal(size=4), rng.normal(size=4)
    dirs = {3: d3.astype(np.float32)}
    c = ctl.parse_controls({"psi": 0.5, "strengths": {"3": -1.5}}, 0, dirs)
    np.testing.assert_allclose(ctl.apply_latents(z, c, centre, dirs),
                               centre + 0.5 * (z - centre) - 1.5 * d3, rtol=1e-5, atol=1e-5)
    assert ctl.parse_controls({"psi": 1.0}, 0, dirs).is_identity and not c.is_identity
    mix = ctl.parse_controls({"themes": [2, 5]}, 10, {})
    np.testing.assert_array_equal(ctl.labels_for(5, mix, 10), [2, 5, 2, 5, 2])
    for bad, msg in [({"psi": 3}, "psi"), ({"psi": float("nan")}, "psi"), ({"psi": "1"}, "number"),
                     ({"strengths": {"4": 1}}, "no direction"), ({"strengths": {"3": 1e30}}, "3"),
                     ({"themes": [1]}, "conditional"), ({"x": 1}, "controls")]:
        with pytest.raises(ctl.ControlError, match=msg):
            ctl.parse_controls(bad, 0, dirs)
    with pytest.raises(ctl.ControlError, match="theme"):
        ctl.parse_controls({"themes": [10]}, 10, {})
    assert [render.bucket(n) for n in (1, 8, 9, 16, 17)] == [8, 8, 16, 16, 32]


def test_run_overview_reads_metrics_tolerating_a_torn_line(tmp_path):
    rows = [{"step": s, "g_loss": 1.0 / s, "images_per_sec": 100.0 + s} for s in range(1, 1001)]
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 1001, "g_lo')
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "step_000500.png").write_bytes(b"png")
    (tmp_path / "eval.json").write_text('{"fid": 12.5}')
    out = run_files.overview(tmp_path)
    g = out["curves"]["g_loss"]
    assert len(g) <= run_files.MAX_POINTS + 1 and g[0] == [1, 1.0] and g[-1] == [1000, 0.001]
    assert out["samples"] == ["samples/step_000500.png"]
    assert out["results"] == {"eval.json": {"fid": 12.5}} and out["checkpoints"] == []


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A studio on a copy of the tiny GAN with a class-3 direction, and its client."""
    src = trained_gan(tmp_path_factory)
    work = workdir_copy(src, tmp_path_factory.mktemp("studio") / "run")
    (work / "directions").mkdir()
    dim = json.loads((work / "config.json").read_text())["model"]["latent_dim"]
    np.save(work / "directions" / "class_3.npy", np.linspace(-1, 1, dim).astype(np.float32))
    server = start(work, num=8)
    yield server, Client(server), work
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_token_is_required_on_every_route(studio):
    server, client, _ = studio
    for token in ("", "wrong"):
        bad = Client(server, token=token)
        for path in ("/", "/static/studio.js", "/api/state", "/files/config.json"):
            status, body = bad.call(path)
            assert status == 403 and "token" in body["error"], path
    status, page = client.call(f"/?token={server.token}", headers={"X-Studio-Token": ""})
    assert status == 200 and server.token.encode() in page and b"<script src" in page
    assert b"http" not in page.replace(b"http-equiv", b"")  # no remote asset


@pytest.mark.slow
def test_only_files_under_the_workdir_are_served(studio, tmp_path):
    server, client, work = studio
    assert client.call("/files/config.json")[0] == 200
    (tmp_path / "secret.txt").write_text("no")
    (work / "link.txt").symlink_to(tmp_path / "secret.txt")
    for path in ("/files/../config.json", "/files/%2e%2e/%2e%2e/etc/passwd",
                 "/files//etc/passwd", "/files/link.txt", "/files/samples/../../x"):
        status, body = client.call(path)
        assert status == 403 and "workdir" in body["error"], path
    assert client.call("/files/nothing.png")[0] == 404
    assert client.call("/static/../app.py")[0] == 404
    (work / "link.txt").unlink()


@pytest.mark.slow
def test_rounds_bad_input_two_tabs_and_the_cli_continuing(studio, tmp_path):
    server, client, work = studio
    status, r1 = client.call("/api/round", {})
    assert status == 200 and r1["round"] == 1 and len(r1["images"]) == 8
    session_dir = work / "feedback"
    before = _digest(session_dir)
    bad = [({"round": 1, "like": [99]}, "0..7"), ({"round": 1, "like": "3,x"}, "lists"),
           ({"round": 1, "like": [10**30]}, "0..7"), ({"round": 1, "like": [1], "dislike": [1]},
                                                      "both"),
           ({"round": 1, "like": [1.5]}, "whole"), ({"round": 2, "like": [1]}, "reload"),
           ({"like": [1]}, "round"), ([1, 2], "rating"), ({"round": 1, "x": 1}, "rating")]
    for body, msg in bad:
        status, err = client.call("/api/rate", body)
        assert 400 <= status < 500 and msg in err["error"], (body, err)
    for raw, code in [(b"{not json", 400), (b"x" * 70_000, 413)]:
        assert client.call("/api/rate", raw=raw)[0] == code
    assert client.call("/api/nothing", {})[0] == 404
    assert _digest(session_dir) == before  # nothing written by any bad request

    # two tabs rate round 1 at once: one is written, the other is told to reload
    results = []
    tabs = [threading.Thread(target=lambda lk=lk: results.append(client.call(
        "/api/rate", {"round": 1, "like": lk, "dislike": [7]}))) for lk in ([0, 2], [0, 2, 5])]
    [t.start() for t in tabs]
    [t.join() for t in tabs]
    assert sorted(s for s, _ in results) == [200, 409]
    lines = (session_dir / fb.HISTORY).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["disliked"] == [7]
    liked_1 = json.loads(lines[0])["liked"]
    status, r2 = client.call("/api/round", {})
    assert r2["round"] == 2

    # the same ratings through `genart feedback` on a fresh copy give the same files
    cli_work = workdir_copy(work, tmp_path / "cli")
    import shutil
    shutil.rmtree(cli_work / "feedback")
    assert main(["feedback", "--workdir", str(cli_work), "--num", "8"]) == 0
    assert main(["feedback", "--workdir", str(cli_work), "--like",
                 ",".join(map(str, liked_1)), "--dislike", "7"]) == 0
    ours, theirs = _digest(session_dir), _digest(cli_work / "feedback")
    for name in ("feedback.jsonl", "round_001.npy", "round_002.npy", "round_001.png"):
        assert ours[name] == theirs[name], name

    # the CLI continues the studio's session, and the studio sees it
    assert main(["feedback", "--workdir", str(work), "--like", "1", "--dislike", "0"]) == 0
    st = client.call("/api/state")[1]
    assert st["round"] == 3 and [h["share"] for h in st["history"]] == [len(liked_1) / 8, 1 / 8]
    hist = client.call("/api/history", {"round": 1})[1]
    assert hist["liked"] == liked_1 and len(hist["images"]) == 8
    assert client.call("/api/history", {"round": 9})[0] == 400


@pytest.mark.slow
def test_truncation_walk_and_seed_render_what_they_say(studio):
    server, client, work = studio
    r = client.call("/api/round", {})[1]
    s = fb.FeedbackSession(work, generator=server.studio.gen)
    z, mean = s.pending(), s.distribution.mean
    shown = _pixels(r["images"])
    flat = _pixels(client.call("/api/round", {"controls": {"psi": 0.0}})[1]["images"])
    assert np.ptp(flat, axis=0).max() == 0 and np.abs(flat - shown).max() > 0  # all G(mean)
    pushed = _pixels(client.call("/api/round", {"controls": {"strengths": {"3": 2.0}}})[1][
        "images"])
    want = render.generate(server.studio.gen, z + 2.0 * np.linspace(-1, 1, len(mean)))
    np.testing.assert_allclose(pushed, _pixels(render.data_urls(want)), atol=1)
    walk = _pixels(client.call("/api/walk", {"a": 1, "b": 4, "frames": 5})[1]["images"])
    ends = _pixels(render.data_urls(render.generate(server.studio.gen, z[[1, 4]])))
    np.testing.assert_allclose(walk[[0, -1]], ends, atol=1)
    assert np.abs(walk[2] - walk[0]).max() > 0
    seed7 = _pixels(client.call("/api/explore", {"seed": 7, "num": 4})[1]["images"])
    direct = render.generate(server.studio.gen, s.distribution.sample(7, 4))
    np.testing.assert_allclose(seed7, _pixels(render.data_urls(direct)), atol=1)
    for body in ({"a": 0, "b": 8}, {"a": 0, "b": 1, "frames": 1000}, {"a": "0", "b": 1}):
        assert client.call("/api/walk", body)[0] == 400
    assert client.call("/api/explore", {"seed": 2**40})[0] == 400
    assert client.call("/api/round", {"controls": {"themes": [1]}})[0] == 400


@pytest.mark.slow
def test_finetune_runs_in_the_background_and_keeps_the_original(studio):
    server, client, work = studio
    ckpt = _digest(work / "checkpoints")
    status, job = client.call("/api/finetune", {"steps": 3})
    assert status == 200 and job["state"] in ("running", "done")
    assert client.call("/api/finetune", {"steps": 0})[0] == 400
    deadline = time.time() + 120
    while job["state"] == "running" and time.time() < deadline:
        time.sleep(0.2)
        job = client.call("/api/job")[1]
    assert job["state"] == "done" and job["done"] == 3, job
    out = work / "feedback" / "finetuned-round2"
    assert job["out"] == str(out) and (out / "finetune.json").is_file()
    assert json.loads((out / "finetune.json").read_text())["steps"] == 3
    assert _digest(work / "checkpoints") == ckpt
    assert client.call("/api/finetune", {"steps": 3})[0] == 409  # its folder exists now


@pytest.mark.slow
def test_run_page_api_and_cli_errors(studio, tmp_path, capsys):
    server, client, work = studio
    run = client.call("/api/run")[1]
    assert run["config"]["model"]["arch"] == "dcgan" and run["checkpoints"] == [4]
    assert [p[0] for p in run["curves"]["g_loss"]] == [2, 4]
    assert main(["studio", "--workdir", str(tmp_path / "none")]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["studio", "--workdir", str(work), "--port", "70000"]) == 2


@pytest.mark.slow
def test_themes_of_a_conditional_model_are_its_labels(tmp_path_factory):
    work = workdir_copy(trained_gan(tmp_path_factory, num_classes=10),
                        tmp_path_factory.mktemp("cond") / "run")
    server = start(work, num=8)
    try:
        client = Client(server)
        assert client.call("/api/state")[1]["num_classes"] == 10
        gen = server.studio.gen
        shown = client.call("/api/round", {})[1]["images"]
        z = fb.FeedbackSession(work, generator=gen).pending()
        mixed = client.call("/api/round", {"controls": {"themes": [2, 7]}})[1]["images"]
        want = sampling.generate_from_latents(gen.cfg, gen.params, gen.stats, z,
                                              np.asarray([2, 7] * 4, np.int32))
        np.testing.assert_allclose(_pixels(mixed), _pixels(render.data_urls(want)), atol=1)
        assert np.abs(_pixels(mixed) - _pixels(shown)).max() > 0  # default: classes 0..7
        assert client.call("/api/round", {"controls": {"themes": [10]}})[0] == 400
    finally:
        server.shutdown()
        server.server_close()
