"""genart_jax.train.feed and fused steps in training: the call plan, stacked and placed batches,
and a run with several steps per call against one step per call and against its own resume."""

import json

import jax
import numpy as np
import pytest

from genart_jax import checkpoint
from genart_jax.config import ConfigError
from genart_jax.data import DataError, check_label_range
from genart_jax.train import abstract_state, train_and_evaluate
from genart_jax.train.feed import (
    call_sizes,
    default_steps_per_call,
    device_calls,
    feed,
    resolve_steps_per_call,
    stack,
)
from tests.conftest import tiny_config


def test_call_sizes_stop_at_every_boundary_and_end_exactly():
    assert list(call_sizes(0, 10, 1, (5,))) == [1] * 10
    assert list(call_sizes(0, 22, 4, (5, 10, 0))) == [4, 1, 4, 1, 4, 1, 4, 1, 2]
    assert list(call_sizes(0, 16, 8, (8, 16))) == [8, 8]
    # resumed at a step that is no boundary (a signal's checkpoint): realigned at the next one
    assert list(call_sizes(3, 20, 8, (8,))) == [5, 8, 4]
    assert list(call_sizes(7, 7, 8, (8,))) == []
    sizes = list(call_sizes(0, 1000, 16, (50, 500, 300)))
    ends = np.cumsum(sizes)
    assert ends[-1] == 1000 and max(sizes) == 16
    for period in (50, 500, 300):  # every multiple of every period is the end of some call
        assert set(range(period, 1001, period)) <= set(ends.tolist())


def test_steps_per_call_default_per_backend_and_config_check():
    assert resolve_steps_per_call(0, "cpu") == default_steps_per_call("cpu") == 1
    assert resolve_steps_per_call(0, "gpu") == resolve_steps_per_call(0, "tpu") == 16
    # on an accelerator, calls of one length where the log/sample/save periods allow it
    assert default_steps_per_call("gpu", (50, 500, 0)) == 10
    assert default_steps_per_call("tpu", (64, 1000)) == 8
    assert default_steps_per_call("gpu", (50, 7)) == 16  # gcd 1: 16 and shorter calls
    assert default_steps_per_call("cpu", (64,)) == 1
    assert resolve_steps_per_call(3, "gpu") == 3
    with pytest.raises(ConfigError, match="steps_per_call"):
        tiny_config("mlp", **{"train.steps_per_call": "-1"})


def host_batches(n, dtype):
    """(batch, position) pairs as the input pipeline yields them: (d_steps=1, B, H, W, C)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 255, (1, 4, 2, 2, 1)).astype(dtype)
        yield {"image": image, "label": np.full((1, 4), i % 3, np.int32)}, i + 1


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_device_calls_stack_check_and_place_each_call(dtype):
    host = list(host_batches(7, dtype))
    placed = []

    def put(n, batch):
        placed.append((n, jax.tree.map(np.shape, batch)))
        return jax.device_put(batch)

    checked = []
    calls = list(device_calls(iter(host), [3, 1, 3], put, check=checked.append))
    assert [c.steps for c in calls] == [3, 1, 3] and [c.position for c in calls] == [3, 4, 7]
    assert len(checked) == 7
    assert placed[0] == (3, {"image": (3, 1, 4, 2, 2, 1), "label": (3, 1, 4)})
    assert placed[1] == (1, {"image": (1, 4, 2, 2, 1), "label": (1, 4)})  # one step: unstacked
    np.testing.assert_array_equal(np.asarray(calls[2].batch["image"][1]), host[5][0]["image"])
    assert calls[2].batch["image"].dtype == dtype  # the model range is the step's business
    assert calls[0].first is host[0][0]
    assert stack([host[0][0]]) is host[0][0]


def test_feed_runs_ahead_on_a_thread_and_hands_over_data_errors():
    def check(batch):
        check_label_range(batch["label"], 2)  # the third batch has label 2

    calls = feed(host_batches(6, np.float32), [1, 1, 1], lambda n, b: b, check=check)
    assert next(calls).position == 1 and next(calls).position == 2
    with pytest.raises(DataError, match="label 2"):
        next(calls)


def cfg_with(k, steps):
    return tiny_config("mlp", **{"train.log_every": "2", "train.sample_every": "0",
                                 "checkpoint.every_steps": "2", "checkpoint.every_minutes": "0",
                                 "sample.num": "4", "train.steps": str(steps),
                                 "train.steps_per_call": str(k)})


def run(cfg, workdir):
    summary = train_and_evaluate(cfg, workdir, progress=False, devices=jax.devices()[:2])
    state, meta, step = checkpoint.restore(workdir, abstract_state(cfg))
    records = [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]
    return summary, state, meta, records


@pytest.mark.slow
def test_fused_training_matches_single_steps_and_resumes_bitwise(tmp_path):
    _, one, _, one_records = run(cfg_with(1, 4), tmp_path / "k1")
    summary, fused, meta, records = run(cfg_with(2, 4), tmp_path / "k2")
    assert summary["steps"] == 4 and meta["data_position"] == {"epoch": 0, "batch": 4}
    assert [r["step"] for r in records] == [r["step"] for r in one_records] == [2, 4]
    for got, want in zip(records, one_records, strict=True):
        for key in ("d_loss", "g_loss", "d_grad_norm", "g_grad_norm"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, err_msg=key)
    for x, y in zip(jax.tree.leaves(fused), jax.tree.leaves(one), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=0)
    # stopped at step 2 (a checkpoint), resumed with the same k: the same run, bit for bit
    half = tmp_path / "half"
    run(cfg_with(2, 2), half)
    _, resumed, _, resumed_records = run(cfg_with(2, 4), half)
    for x, y in zip(jax.tree.leaves(resumed), jax.tree.leaves(fused), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert [r["step"] for r in resumed_records] == [2, 4]


def test_the_host_runs_calls_ahead_calls_ahead_of_the_devices(tmp_path, monkeypatch):
    """The loop launches call j, then waits for call j - CALLS_AHEAD (never more queued, so two
    processes over gloo cannot pile up calls), and does not wait for the calls after it (the
    devices keep queued work); no result is read between the logged steps here."""
    from genart_jax import parallel
    from genart_jax.train import loop

    events = []  # ("launch" | "wait", the call's metrics), the objects kept alive
    step, block = parallel.ShardMapDriver.step, jax.block_until_ready

    def launch(self, state, batch):
        out = step(self, state, batch)
        events.append(("launch", out[1]))
        return out

    def wait(x):
        events.append(("wait", x))
        return block(x)

    monkeypatch.setattr(parallel.ShardMapDriver, "step", launch)
    monkeypatch.setattr(loop.jax, "block_until_ready", wait)
    cfg = tiny_config("mlp", **{"train.log_every": "100", "train.sample_every": "0",
                                "checkpoint.every_steps": "0", "checkpoint.every_minutes": "0",
                                "sample.num": "4", "train.steps": "10",
                                "train.steps_per_call": "1"})
    train_and_evaluate(cfg, tmp_path, progress=False, devices=jax.devices()[:2])
    calls = [m for kind, m in events if kind == "launch"]
    assert len(calls) == 10 and 1 <= loop.CALLS_AHEAD <= 4  # a bound, and checked below
    for j in range(loop.CALLS_AHEAD, len(calls) - 1):
        before_next = events[:next(i for i, (kind, m) in enumerate(events)
                                   if kind == "launch" and m is calls[j + 1])]
        waited = [m for kind, m in before_next if kind == "wait"]
        assert any(m is calls[j - loop.CALLS_AHEAD] for m in waited), j
        assert not any(m is calls[j] for m in waited), j
