"""The command line as a user runs it: train on the embedded digits, sample, and the errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from genart_jax import checkpoint
from genart_jax.cli import main
from genart_jax.config import from_json
from genart_jax.train import abstract_state

TINY = ["--config.model.dcgan.g_width=8", "--config.model.dcgan.d_width=8",
        "--config.model.latent_dim=16", "--config.data.image_size=16",
        "--config.train.batch_size=16"]


def run_genart(args, devices=1, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.run([sys.executable, "-m", "genart_jax.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_train_then_sample_end_to_end(tmp_path):
    workdir = tmp_path / "run"
    proc = run_genart(["train", "--workdir", str(workdir), "--steps", "6", *TINY,
                       "--config.train.log_every=2", "--config.train.sample_every=4"],
                      devices=2)
    assert proc.returncode == 0, proc.stderr
    assert "2 cpu device(s)" in proc.stdout and "Done: step 6 " in proc.stdout
    cfg = from_json((workdir / "config.json").read_text())
    assert cfg.train.steps == 6 and cfg.model.dcgan.g_width == 8
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert {"d_loss", "g_loss", "images_per_sec", "d_real", "d_fake"} <= set(records[0])
    assert all(np.isfinite(r["d_loss"]) and r["images_per_sec"] > 0 for r in records)
    assert (workdir / "samples" / "step_000004.png").is_file()
    with Image.open(workdir / "samples" / "final.png") as img:
        assert img.size[0] >= 256
    state, meta, step = checkpoint.restore(workdir, abstract_state(cfg))
    assert step == 6 and int(state.step) == 6
    assert meta["data_position"] == {"epoch": 0, "batch": 6}

    out = tmp_path / "grid.png"
    proc = run_genart(["sample", "--workdir", str(workdir), "--num", "9", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "from step 6" in proc.stdout
    with Image.open(out) as img:
        grid = np.asarray(img)
    assert grid.std() > 1.0  # not a blank image


def test_bad_config_key_is_one_clear_error(tmp_path, capsys):
    code = main(["train", "--workdir", str(tmp_path), "--config.train.batchsize=8"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown config key 'train.batchsize'" in err and "'train.batch_size'" in err
    assert "Traceback" not in err and not (tmp_path / "config.json").exists()


def test_batch_not_divisible_by_devices_is_one_clear_error(tmp_path, capsys):
    code = main(["train", "--workdir", str(tmp_path), *TINY, "--config.train.batch_size=12",
                 "--no-progress"])
    assert code == 2
    assert "not divisible by the 8 devices" in capsys.readouterr().err


def test_unknown_argument_and_missing_value(tmp_path):
    with pytest.raises(SystemExit):
        main(["train", "--workdir", str(tmp_path), "--stpes", "3"])
    with pytest.raises(SystemExit):
        main(["train", "--config.train.steps"])


def test_sample_without_a_trained_workdir_is_a_clear_error(tmp_path, capsys):
    assert main(["sample", "--workdir", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "has no config.json" in capsys.readouterr().err


VAE_TINY = ["--config", "cvae_digits", "--config.model.mlp_vae.hidden=(32, 16)",
            "--config.model.latent_dim=4", "--config.train.batch_size=16",
            "--config.train.sample_every=0", "--config.sample.num=20"]


@pytest.mark.slow
def test_conditional_vae_train_eval_sample_export(tmp_path):
    workdir = tmp_path / "vae"
    proc = run_genart(["train", "--workdir", str(workdir), "--steps", "20", *VAE_TINY])
    assert proc.returncode == 0, proc.stderr
    for name in ("final.png", "final_reconstructions.png", "final_interpolation.png"):
        assert (workdir / "samples" / name).is_file()
    proc = run_genart(["eval", "--workdir", str(workdir), "--samples", "5", "--limit", "40"])
    assert proc.returncode == 0, proc.stderr
    result = json.loads((workdir / "eval.json").read_text().splitlines()[-1])
    assert result["examples"] == 40 and result["k"] == 5 and result["split"] == "test"
    # The K-sample bound is tighter (a smaller negative bound) than the ELBO.
    assert 0 < result["neg_iwae_nats"] < result["neg_elbo_nats"]

    out = tmp_path / "themes.png"
    proc = run_genart(["sample", "--workdir", str(workdir), "--theme", "1,4,7", "--num", "9",
                       "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and (tmp_path / "themes_reconstructions.png").is_file()
    proc = run_genart(["sample", "--workdir", str(workdir), "--theme", "12", "--out",
                       str(out)])
    assert proc.returncode == 2 and "0..9" in proc.stderr

    export = tmp_path / "vae.msgpack"
    assert run_genart(["export", "--workdir", str(workdir), "--out", str(export)]).returncode == 0
    proc = run_genart(["sample", "--from-export", str(export), "--theme", "3", "--num", "4",
                       "--out", str(tmp_path / "exported.png")])
    assert proc.returncode == 0, proc.stderr


def jax_state(cfg):
    import jax

    from genart_jax.train.loop import build_training

    driver, init_fn = build_training(cfg, jax.devices()[:1])
    return driver.get_state(driver.init_state(init_fn, jax.random.PRNGKey(0)))
