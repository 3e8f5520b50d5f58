"""A real `genart train` process stopped by SIGTERM, by two signals, and by kill -9 at random
moments (also during asynchronous saves): every resume starts from the latest complete
checkpoint and the final params equal an uninterrupted run, bitwise."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from genart_jax import checkpoint
from genart_jax.config import from_json
from genart_jax.train import abstract_state
from tests.test_cli import TINY

ARGS = ["train", "--no-progress", *TINY, "--config.train.log_every=1",
        "--config.train.sample_every=0", "--config.checkpoint.every_minutes=0",
        "--config.data.prefetch=0"]


def start(workdir, steps, every):
    """Start `genart train`; its stdout lines are collected on a thread into `proc.lines`."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "genart_jax.cli", *ARGS, "--workdir", str(workdir), "--steps",
         str(steps), f"--config.checkpoint.every_steps={every}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return watch(proc)


def watch(proc):
    """Collect a process's stdout lines on a thread into `proc.lines` (so its pipe never fills)."""
    proc.lines = []
    proc.reader = threading.Thread(target=lambda: proc.lines.extend(proc.stdout), daemon=True)
    proc.reader.start()
    return proc


def finish(proc, timeout):
    """(stdout, stderr) of a process, waiting at most `timeout` seconds."""
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    proc.reader.join(timeout=10)
    return "".join(proc.lines), proc.stderr.read()


def logged_steps(workdir):
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:  # a line being written
            pass
    return steps


def wait_for_training(proc, workdir, beyond, timeout=120):
    """Wait until the process said it trains (after a resume has cut metrics.jsonl back to its
    checkpoint) and logged a step past `beyond`, or ended."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            return
        started = any(line.startswith("Training ") for line in list(proc.lines))
        if started and any(s > beyond for s in logged_steps(workdir)):
            return
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("training did not start in time")


def restore(workdir):
    cfg = from_json((workdir / "config.json").read_text())
    return checkpoint.restore(workdir, abstract_state(cfg))


def assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_with_preemption_code(tmp_path):
    proc = start(tmp_path, 100000, every=0)
    wait_for_training(proc, tmp_path, beyond=2)
    proc.send_signal(signal.SIGTERM)
    _, err = finish(proc, 120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "finishing this step and writing a checkpoint" in err and "to resume" in err
    state, meta, step = restore(tmp_path)
    assert step >= 3 and int(state.step) == step
    assert meta["data_position"]["batch"] == step % 93  # 1497 // 16 batches per epoch

    # Two signals: the second exits at once; whatever checkpoints exist are complete.
    proc = start(tmp_path, 100000, every=1)
    wait_for_training(proc, tmp_path, beyond=step + 2)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    _, err = finish(proc, 120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    later, _, later_step = restore(tmp_path)
    assert later_step >= step and int(later.step) == later_step


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_matches_uninterrupted(tmp_path):
    steps, every = 300, 3
    reference = tmp_path / "reference"
    proc = start(reference, steps, every)
    _, err = finish(proc, 300)
    assert proc.returncode == 0, err
    want, _, _ = restore(reference)

    workdir, rng = tmp_path / "killed", random.Random(0)
    kills, resumed_from = 0, []
    while kills < 10:
        before = checkpoint.latest_step(workdir) or 0
        proc = start(workdir, steps, every)
        wait_for_training(proc, workdir, beyond=before)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is not None:
            break  # finished before the kill
        proc.kill()  # SIGKILL: no handler runs
        out, _ = finish(proc, 60)
        kills += 1
        if before:
            assert f"Resuming from checkpoint {before} " in out
            resumed_from.append(before)
    proc = start(workdir, steps, every)
    out, err = finish(proc, 300)
    assert proc.returncode == 0, err
    print(f"{kills} kills; resumed from steps {resumed_from}")
    assert kills == 10 and len(resumed_from) >= 9
    assert resumed_from == sorted(resumed_from)
    got, meta, step = restore(workdir)
    assert step == steps
    assert_same(got, want)


def test_the_first_signal_is_announced_once_and_names_the_step(capsys):
    from genart_jax.parallel import announce_preemption
    from genart_jax.train.preemption import PreemptionGuard

    announced = []
    with PreemptionGuard(on_signal=announced.append) as guard:
        guard.step = 7
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler runs in the main thread between bytecodes
    assert guard.signum == signal.SIGTERM and announced == [signal.SIGTERM]
    assert "signal 15 at step 7: finishing this step" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is not guard._handle  # handlers given back
    assert announce_preemption() is False  # one process: no other process to tell
