"""Exact resume, restore onto other device counts and drivers, config checks on resume, the
non-finite guard, and the generator export."""

import json
import shutil

import jax
import numpy as np
import pytest

from genart_jax import checkpoint, sampling
from genart_jax.config import apply_overrides
from genart_jax.data.convert import to_model_range_np
from genart_jax.export import ExportError, export_generator, load_generator
from genart_jax.train import TrainingDiverged, abstract_state, train_and_evaluate
from genart_jax.train import loop as loop_module
from genart_jax.train.loop import build_training
from tests.conftest import tiny_config

STEPS = 6


def cfg_with(**overrides):
    base = {"train.log_every": "1", "train.sample_every": "0", "checkpoint.every_steps": "0",
            "checkpoint.every_minutes": "0", "sample.num": "4"}
    return tiny_config("dcgan", **{**base, **overrides})


def train(cfg, workdir, steps, devices=None, **kw):
    cfg = apply_overrides(cfg, {"train.steps": str(steps)})
    return train_and_evaluate(cfg, workdir, progress=False, devices=devices, **kw)


def final_state(cfg, workdir):
    state, meta, step = checkpoint.restore(workdir, abstract_state(cfg))
    return state, meta, step


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cfg = cfg_with()
    workdir = tmp_path_factory.mktemp("full")
    train(cfg, workdir, STEPS)
    return cfg, final_state(cfg, workdir)[0]


@pytest.fixture(scope="module")
def halfway(tmp_path_factory):
    cfg = cfg_with()
    workdir = tmp_path_factory.mktemp("half")
    train(cfg, workdir, STEPS // 2)
    return workdir


def assert_states(a, b, exact, atol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if exact:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def test_resume_equals_uninterrupted_run_bitwise(uninterrupted, halfway, tmp_path):
    cfg, want = uninterrupted
    workdir = tmp_path / "run"
    shutil.copytree(halfway, workdir)
    summary = train(cfg, workdir, STEPS)
    got, meta, step = final_state(cfg, workdir)
    assert step == STEPS and summary["steps"] == STEPS
    assert meta["data_position"] == {"epoch": 0, "batch": STEPS}
    assert_states(got, want, exact=True)
    steps = [json.loads(r)["step"] for r in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))


@pytest.mark.parametrize("driver,num_devices", [("shard_map", 1), ("shard_map", 4),
                                                ("pmap", 8)])
def test_restore_onto_other_device_counts_and_drivers(uninterrupted, halfway, tmp_path, driver,
                                                      num_devices):
    cfg, want = uninterrupted
    workdir = tmp_path / "run"
    shutil.copytree(halfway, workdir)  # saved by the shard_map driver on 8 devices
    train(apply_overrides(cfg, {"train.driver": driver}), workdir, STEPS,
          devices=jax.devices()[:num_devices])
    assert_states(final_state(cfg, workdir)[0], want, exact=False)


def test_resume_with_a_shape_changing_config_is_a_clear_error(halfway, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(halfway, workdir)
    bigger = cfg_with(**{"model.dcgan.g_width": "16", "train.log_every": "2"})
    with pytest.raises(checkpoint.CheckpointError,
                       match="Differing keys: model.dcgan.g_width: 8 -> 16; "
                             "train.log_every: 1 -> 2"):
        train(bigger, workdir, STEPS)
    # A change that keeps the shapes resumes fine.
    train(cfg_with(**{"train.log_every": "2"}), workdir, STEPS // 2 + 1)
    assert checkpoint.latest_step(workdir) == STEPS // 2 + 1


def test_no_resume_moves_the_old_run_aside(halfway, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(halfway, workdir)
    train(cfg_with(), workdir, 2, resume=False)
    assert checkpoint.latest_step(workdir) == 2
    moved = list(workdir.glob("replaced-*"))
    assert len(moved) == 1 and (moved[0] / "checkpoints" / str(STEPS // 2)).is_dir()


def test_restore_of_another_model_is_a_clear_error(halfway):
    other = tiny_config("mlp")
    with pytest.raises(checkpoint.CheckpointError, match="does not match this model"):
        checkpoint.restore(halfway, abstract_state(other))
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint for step 99"):
        checkpoint.restore(halfway, abstract_state(cfg_with()), step=99)


def poisoned_input(bad_step):
    """make_input whose batch for iteration `bad_step` holds a NaN (a corrupt image)."""
    real = loop_module.make_input

    def make_input(*args, **kwargs):
        iterator, n = real(*args, **kwargs)
        fetch = iterator.fetch
        calls = {"n": 0}

        def poisoned(idx):
            calls["n"] += 1
            x, y = fetch(idx)
            if calls["n"] == bad_step:  # uint8 holds no NaN: this batch in the model's range
                x = to_model_range_np(x)
                x[0, 0, 0, 0] = np.nan
            return x, y
        iterator.fetch = poisoned
        return iterator, n
    return make_input


def test_nonfinite_stop_names_the_step_and_keeps_the_last_good_checkpoint(monkeypatch,
                                                                          tmp_path):
    monkeypatch.setattr(loop_module, "make_input", poisoned_input(bad_step=4))
    cfg = cfg_with(**{"checkpoint.every_steps": "2", "data.prefetch": "0"})
    with pytest.raises(TrainingDiverged, match="NaN/Inf at step 4 .*d_loss"):
        train(cfg, tmp_path, STEPS)
    assert checkpoint.latest_step(tmp_path) == 2
    state, _, _ = final_state(cfg, tmp_path)
    assert int(state.nonfinite_count) == 0


def test_nonfinite_skip_drops_the_update_and_counts_it(monkeypatch, tmp_path):
    monkeypatch.setattr(loop_module, "make_input", poisoned_input(bad_step=2))
    cfg = cfg_with(**{"train.nonfinite": "skip", "data.prefetch": "0"})
    train(cfg, tmp_path, 3)
    state, _, _ = final_state(cfg, tmp_path)
    assert int(state.nonfinite_count) == 1 and int(state.first_nonfinite_step) == 2
    records = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["nonfinite_count"] for r in records] == [0, 1, 1]
    assert records[1]["d_loss"] is None and records[2]["d_loss"] is not None
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.g_params))


def test_guard_keeps_the_weights_of_a_nonfinite_iteration():
    cfg = cfg_with()
    driver, init_fn = build_training(cfg, jax.devices()[:2])
    state = driver.init_state(init_fn, jax.random.PRNGKey(0))
    before = driver.get_state(state)
    batch = {"image": np.full((1, 16, 16, 16, 1), np.nan, np.float32),
             "label": np.zeros((1, 16), np.int32)}
    state, metrics = driver.step(state, driver.put_batch(batch))
    after = driver.get_state(state)
    assert driver.get_metrics(metrics)["nonfinite_count"] == 1 and int(after.step) == 1
    assert_states(after.g_params, before.g_params, exact=True)
    assert_states(after.d_opt_state, before.d_opt_state, exact=True)


def test_export_round_trip_samples_identically(halfway, tmp_path):
    cfg = cfg_with()
    state, _, step = final_state(cfg, halfway)
    path = export_generator(cfg, state, tmp_path / "gen.msgpack", step=step)
    cfg2, params, stats, meta = load_generator(path)
    assert cfg2 == cfg and meta["step"] == step and meta["ema"] is True
    want = sampling.generate(cfg, *sampling.generator_variables(cfg, state), num=4, seed=3)
    np.testing.assert_array_equal(sampling.generate(cfg2, params, stats, num=4, seed=3), want)
    with pytest.raises(ExportError, match="must end in .msgpack"):
        export_generator(cfg, state, tmp_path / "gen.pkl", step=step)
    (tmp_path / "gen.json").write_text('{"format": "something else"}')
    with pytest.raises(ExportError, match="is not a genart_jax.generator.v1 export"):
        load_generator(path)


def test_device_resident_data_gives_the_same_run(uninterrupted, tmp_path):
    cfg, want = uninterrupted
    train(apply_overrides(cfg, {"data.on_device": "true"}), tmp_path, STEPS)
    assert_states(final_state(cfg, tmp_path)[0], want, exact=True)
