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

TINY = ["--config.model.g_width=8", "--config.model.d_width=8", "--config.model.latent_dim=16",
        "--config.data.image_size=16", "--config.train.batch_size=16"]


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
    assert "2 cpu device(s)" in proc.stdout and "Done: 6 steps" in proc.stdout
    cfg = from_json((workdir / "config.json").read_text())
    assert cfg.train.steps == 6 and cfg.model.g_width == 8
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
