"""Every downstream command on a tiny R3GAN run through the command line: training (one process
with 2 devices), kill -9 and resume (bitwise, ADA's p included), two processes of 1 device
(equal to the one process), sample (EMA or raw, truncation, slerp, a direction, a theme of a
conditional model), export and sample --from-export, eval --metrics fid,kid,pr, feedback and
directions. The training processes share the test session's persistent compilation cache
(tests/conftest.py), so the step is compiled once for one process and once for the
two-process pair."""

import json
import os
import re
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

from genart_jax import checkpoint
from genart_jax.cli import main
from genart_jax.config import from_json, load_config
from genart_jax.train import abstract_state, train_and_evaluate
from tests.test_multihost import free_port
from tests.test_preemption import finish as finish_process
from tests.test_preemption import watch
from tests.test_r3gan import TINY

FLAGS = ["--config", "r3gan_digits", *(f"--config.{k}={v}" for k, v in TINY.items()),
         "--config.train.log_every=1",
         "--config.train.sample_every=0", "--config.sample.num=4",
         "--config.checkpoint.every_minutes=0", "--config.checkpoint.every_steps=4",
         "--config.checkpoint.keep=10", "--config.data.prefetch=0"]
STEPS = 16


def start(workdir, steps, devices, extra_env=None, flags=FLAGS):
    """`genart train` of `flags` (the tiny R3GAN) in a fresh process; stdout collected in
    `proc.lines`."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               **(extra_env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "genart_jax.cli", "train", "--no-progress",
                             *flags, "--steps", str(steps), "--workdir", str(workdir)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return watch(proc)


def finish(proc, timeout=400):
    """(stdout, stderr) of a finished process, which must have exited 0."""
    out, err = finish_process(proc, timeout)
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    return out, err


def restore(workdir, step=None):
    cfg = from_json((workdir / "config.json").read_text())
    return checkpoint.restore(workdir, abstract_state(cfg), step)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(root, the processes' outputs): in root, `ref` trains STEPS steps on 2 devices while the
    two-process pair trains 4 in `multi` and, in this process, a conditional tiny R3GAN (`cond`)
    and the digits classifier (`clf`) train; then `killed`, killed with -9 once its first checkpoint
    (step 4) is complete, resumes to STEPS. The tests below assert on them."""
    from genart_jax.classifier import train_classifier

    root = tmp_path_factory.mktemp("r3gan_cli")
    port = free_port()
    pair = [start(root / "multi", 4, 1, {
        "GENART_COORDINATOR": f"127.0.0.1:{port}", "GENART_NUM_PROCESSES": "2",
        "GENART_PROCESS_ID": str(i)}) for i in range(2)]
    reference = start(root / "ref", STEPS, 2)
    cfg = load_config("r3gan_digits", {**TINY, "model.num_classes": "10", "train.steps": "2",
                                       "train.r1_gamma": "0", "train.r2_gamma": "0",
                                       "augment.ada": "", "train.sample_every": "0",
                                       "sample.num": "4", "checkpoint.async_save": "False"})
    train_and_evaluate(cfg, root / "cond", progress=False, devices=jax.devices()[:1])
    train_classifier(cfg.data, root / "clf", steps=3, width=8, feature_dim=16, progress=False)
    outputs = {"ref": finish(reference), "multi": [finish(p) for p in pair]}

    killed = start(root / "killed", STEPS, 2)
    t0 = time.time()
    while killed.poll() is None and not checkpoint.latest_step(root / "killed"):
        assert time.time() - t0 < 300, "the killed run did not get past step 4"
        time.sleep(0.02)
    assert killed.poll() is None, "the run ended before the kill"
    killed.kill()  # SIGKILL: no handler runs
    killed.wait()
    outputs["resumed"] = finish(start(root / "killed", STEPS, 2))
    return root, outputs


@pytest.mark.slow
def test_kill_9_then_resume_equals_the_uninterrupted_run_with_p(runs):
    root, outputs = runs
    resumed = re.search(r"Resuming from checkpoint (\d+) ", outputs["resumed"][0])
    assert resumed and 4 <= int(resumed[1]) < STEPS, outputs["resumed"][0]
    want, _, step = restore(root / "ref")
    got, _, _ = restore(root / "killed")
    assert step == STEPS and float(want.ada_p) != 0.3  # p moved, so the test can fail
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    records = [json.loads(r) for r in (root / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert {"r1", "r2", "ada_p", "ada_rt"} <= set(records[0])


@pytest.mark.slow
def test_two_processes_equal_one_process_with_two_devices(runs):
    root, outputs = runs
    assert "2 cpu device(s) [cpu] over 2 process(es)" in outputs["multi"][0][0]
    want, _, _ = restore(root / "ref", 4)
    got, meta, step = restore(root / "multi")
    assert step == 4 and meta["data_position"]["batch"] == 4
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)
    assert [json.loads(r)["step"] for r in
            (root / "multi" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def tiles(png, ncols, num, size=8, pad=2):
    """The `num` tiles (size, size) of a `genart sample` grid PNG (upscaled by an integer)."""
    grid = np.asarray(Image.open(png))
    scale = grid.shape[1] // (ncols * (size + pad) + pad)
    grid = grid[::scale, ::scale]
    return [grid[pad + r * (size + pad):][:size, pad + q * (size + pad):][:, :size]
            for r, q in (divmod(i, ncols) for i in range(num))]


@pytest.mark.slow
def test_sample_export_and_their_options(runs, tmp_path, capsys):
    root, _ = runs
    work = root / "ref"

    def sample(name, *args, workdir=work):
        src = ["--workdir", str(workdir)] if workdir else []
        assert main(["sample", *src, "--out", str(tmp_path / name), *args]) == 0, \
            capsys.readouterr().err
        return tmp_path / name

    ema = tiles(sample("ema.png", "--num", "4"), 2, 4)
    raw = tiles(sample("raw.png", "--num", "4", "--no-ema"), 2, 4)
    assert not np.array_equal(ema[0], raw[0])
    assert "EMA generator" in capsys.readouterr().out
    flat = tiles(sample("flat.png", "--num", "4", "--truncation", "0"), 2, 4)
    assert all(np.array_equal(t, flat[0]) for t in flat)  # every latent at the prior's mean
    # slerp strips go from latents(seed, 2 r) to latents(seed, 2 r + 1): the plain grid's tiles.
    walk = tiles(sample("walk.png", "--num", "8", "--interpolate", "--frames", "4"), 4, 8)
    for r in range(2):
        for end, tile in ((walk[4 * r], ema[2 * r]), (walk[4 * r + 3], ema[2 * r + 1])):
            assert np.abs(end.astype(int) - tile.astype(int)).max() <= 1
    assert main(["sample", "--workdir", str(work), "--out", str(tmp_path / "x.png"),
                 "--truncation", "0.5", "--theme", "3"]) == 2  # unconditional: no theme
    capsys.readouterr()

    export = tmp_path / "g.msgpack"
    assert main(["export", "--workdir", str(work), "--out", str(export)]) == 0
    exported = tiles(sample("exported.png", "--num", "4", "--from-export", str(export),
                            workdir=None), 2, 4)
    for a, b in zip(exported, ema, strict=True):
        np.testing.assert_array_equal(a, b)

    # A conditional R3GAN: one theme per column, the themes change the images.
    cond = root / "cond"
    three = tiles(sample("three.png", "--num", "4", "--theme", "3", workdir=cond), 1, 4)
    five = tiles(sample("five.png", "--num", "4", "--theme", "5", workdir=cond), 1, 4)
    assert not np.array_equal(three[0], five[0])
    tiles(sample("themes.png", "--num", "6", "--theme", "1,4,7", workdir=cond), 3, 6)
    assert "one theme per column: 1,4,7" in capsys.readouterr().out
    assert main(["sample", "--workdir", str(cond), "--out", str(tmp_path / "x.png"),
                 "--theme", "12"]) == 2
    assert "0..9" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_directions_and_feedback(runs, tmp_path, capsys):
    root, _ = runs
    work, clf = root / "ref", root / "clf"
    assert main(["eval", "--workdir", str(work), "--metrics", "fid,kid,pr", "--classifier",
                 str(clf), "--num", "64", "--limit", "64"]) == 0
    result = json.loads((work / "eval.json").read_text().splitlines()[-1])
    assert result["step"] == STEPS and result["ema"] is True
    keys = [k for k in result if k.startswith(("FID", "KID", "precision", "recall"))]
    assert len(keys) >= 4 and all(np.isfinite(result[k]) for k in keys)

    dirs = tmp_path / "dirs"
    assert main(["directions", "--workdir", str(work), "--classifier", str(clf), "--num", "64",
                 "--out", str(dirs), "--report", "2", "--report-num", "16"]) == 0
    meta = json.loads((dirs / "directions.json").read_text())
    assert sum(meta["counts"].values()) == 64 and meta["directions"]
    direction = dirs / f"class_{sorted(meta['directions'], key=int)[0]}.npy"
    assert np.load(direction).shape == (8,)
    plain, pushed = tmp_path / "plain.png", tmp_path / "pushed.png"
    assert main(["sample", "--workdir", str(work), "--num", "4", "--out", str(plain)]) == 0
    assert main(["sample", "--workdir", str(work), "--num", "4", "--out", str(pushed),
                 "--direction", str(direction), "--strength", "2"]) == 0
    assert not np.array_equal(tiles(plain, 2, 4)[0], tiles(pushed, 2, 4)[0])

    fdir = work / "feedback"
    assert main(["feedback", "--workdir", str(work), "--num", "8"]) == 0
    assert main(["feedback", "--workdir", str(work), "--like", "0,1", "--dislike", "2"]) == 0
    assert "round 1: liked 2, disliked 1 of 8" in capsys.readouterr().out
    liked = tmp_path / "liked.npy"
    assert main(["feedback", "--workdir", str(work), "--finetune", "2",
                 "--save-direction", str(liked)]) == 0
    (tuned,) = fdir.glob("finetuned-round*")
    assert (tuned / "config.json").is_file() and np.load(liked).shape == (8,)
    assert main(["sample", "--workdir", str(tuned), "--num", "4", "--out",
                 str(tmp_path / "tuned.png")]) == 0
