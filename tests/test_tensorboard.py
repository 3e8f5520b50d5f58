"""TensorBoard event files (`train.tensorboard`, WORKDIR/tensorboard/), read back with the
tensorboard package's own readers: scalars per logged step, the sample grids, the config, and
no step twice after a resume from a run that wrote past its last checkpoint."""

import json
import shutil
import subprocess
import sys

import pytest

from genart_jax import history
from genart_jax.config import apply_overrides
from genart_jax.train import loop as loop_module
from genart_jax.train import tensorboard_log, train_and_evaluate
from genart_jax.train.tensorboard_log import TensorBoardWriter, event_files
from tests.conftest import tiny_config

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
event_file_loader = pytest.importorskip("tensorboard.backend.event_processing.event_file_loader")


def cfg_with(**overrides):
    base = {"train.log_every": "1", "train.sample_every": "2", "checkpoint.every_steps": "2",
            "checkpoint.every_minutes": "0", "sample.num": "4"}
    return tiny_config("dcgan", **{**base, **overrides})


def train(cfg, workdir, steps, **kw):
    cfg = apply_overrides(cfg, {"train.steps": str(steps)})
    return train_and_evaluate(cfg, workdir, progress=False, **kw)


def accumulated(logdir):
    acc = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0,
                                    event_accumulator.TENSORS: 0})
    return acc.Reload()


def raw_steps(logdir):
    """(tag, step) of every summary value in every event file, as the files hold them (no
    reader-side purging)."""
    return [(v.tag, e.step) for path in event_files(logdir)
            for e in event_file_loader.EventFileLoader(str(path)).Load() for v in e.summary.value]


def config_texts(acc):
    return [(t.step, t.tensor_proto.string_val[0].decode())
            for t in acc.Tensors("config/text_summary")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 6-step run: logged every step, grids at 2 and 4 and the final one at 6."""
    workdir = tmp_path_factory.mktemp("tb")
    train(cfg_with(), workdir, 6)
    return workdir


def test_event_files_hold_every_metric_the_sample_grids_and_the_config(run):
    acc = accumulated(run / "tensorboard")
    records = history.read_records(run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 7))
    names = {k for r in records for k in r} - {"step"}
    assert {"d_loss", "g_loss", "images_per_sec", "epoch", "d_grad_norm"} <= names
    assert set(acc.Tags()["scalars"]) == names
    for name in names:
        got = {s.step: s.value for s in acc.Scalars(name)}
        assert [s.step for s in acc.Scalars(name)] == [r["step"] for r in records], name
        assert got == pytest.approx({r["step"]: r[name] for r in records}, rel=1e-6), name
    assert set(acc.Tags()["images"]) == {"samples"}
    images = acc.Images("samples")
    assert [i.step for i in images] == [2, 4, 6]
    for image, png in zip(images, ["step_000002.png", "step_000004.png", "final.png"],
                          strict=True):
        assert image.encoded_image_string == (run / "samples" / png).read_bytes()
        assert image.width >= 16 and image.height >= 16
    [(step, text)] = config_texts(acc)
    assert step == 0
    assert json.loads(text.removeprefix("```json\n").removesuffix("\n```")) == json.loads(
        (run / "config.json").read_text())
    assert len(event_files(run / "tensorboard")) == 1


def test_a_resume_after_a_run_that_logged_past_its_checkpoint_has_no_step_twice(run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(run, workdir)
    # As a kill before the save at step 6 leaves it: events and metrics of steps 5 and 6 (and
    # step 6's grid), the checkpoint of step 4, and a record torn by the kill.
    shutil.rmtree(workdir / "checkpoints" / "6")
    [old] = event_files(workdir / "tensorboard")
    with open(old, "ab") as f:
        f.write(b"\x40\x00\x00\x00\x00\x00\x00\x00\x01\x02")
    before = accumulated(workdir / "tensorboard")  # a TensorBoard watching the killed run
    assert [s.step for s in before.Scalars("d_loss")] == list(range(1, 7))
    old_d_loss = {s.step: s.value for s in before.Scalars("d_loss")}

    train(cfg_with(), workdir, 8)
    records = history.read_records(workdir / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 9))
    # In the files themselves: each tag has each step once, in file order.
    raw = raw_steps(workdir / "tensorboard")
    assert len(raw) == len(set(raw))
    for tag in {t for t, _ in raw}:
        steps = [s for t, s in raw if t == tag]
        assert steps == sorted(steps), tag
    # TensorBoard's reader sees steps 1-8 once each, steps 5 and 6 from the resumed run.
    acc = accumulated(workdir / "tensorboard")
    for name in ("d_loss", "g_loss", "images_per_sec"):
        got = {s.step: s.value for s in acc.Scalars(name)}
        assert [s.step for s in acc.Scalars(name)] == list(range(1, 9)), name
        assert got == pytest.approx({r["step"]: r[name] for r in records}, rel=1e-6), name
    d_loss = {s.step: s.value for s in acc.Scalars("d_loss")}
    assert {s: d_loss[s] for s in range(1, 5)} == {s: old_d_loss[s] for s in range(1, 5)}
    images = acc.Images("samples")
    assert [i.step for i in images] == [2, 4, 6, 8]
    assert images[2].encoded_image_string == (workdir / "samples" / "step_000006.png"
                                              ).read_bytes()
    assert [s for s, _ in config_texts(acc)] == [0, 4]
    assert len(event_files(workdir / "tensorboard")) == 2
    # The running TensorBoard that had loaded the orphaned steps drops them (the new file's
    # restart marker) instead of showing steps 5 and 6 twice.
    before.Reload()
    assert [s.step for s in before.Scalars("d_loss")] == list(range(1, 9))


def test_a_finished_run_started_again_writes_no_grid_twice(run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(run, workdir)
    train(cfg_with(), workdir, 6)  # nothing left to train: the final grid again, at step 6
    raw = raw_steps(workdir / "tensorboard")
    assert len(raw) == len(set(raw))
    assert [s for t, s in raw if t == "samples"] == [2, 4, 6]
    assert [s for t, s in raw if t == "config/text_summary"] == [0, 6]
    # Started again with another config: its text replaces the one at step 6.
    train(cfg_with(**{"train.log_every": "3"}), workdir, 6)
    texts = config_texts(accumulated(workdir / "tensorboard"))
    assert [s for s, _ in texts] == [0, 6]
    assert '"log_every": 1' in texts[0][1] and '"log_every": 3' in texts[1][1]
    assert len(raw_steps(workdir / "tensorboard")) == len(raw)


def test_no_resume_moves_the_event_files_aside(run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(run, workdir)
    moved = loop_module._move_aside(workdir)
    assert event_files(moved / "tensorboard") and not (workdir / "tensorboard").exists()


def test_tensorboard_false_writes_no_event_files(tmp_path):
    train(cfg_with(**{"train.tensorboard": "false", "train.sample_every": "0"}), tmp_path, 1)
    assert not (tmp_path / "tensorboard").exists()
    assert [r["step"] for r in history.read_records(tmp_path / "metrics.jsonl")] == [1]


def test_without_tensorboardx_training_goes_on_and_says_so_once(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(tensorboard_log, "_import_tensorboardx",
                        lambda: (None, "ModuleNotFoundError: No module named 'tensorboardX'"))
    train(cfg_with(**{"train.sample_every": "0"}), tmp_path, 2)
    out = capsys.readouterr().out
    assert out.count("TensorBoard event files are off") == 1
    assert "No module named 'tensorboardX'" in out and "pip install -U tensorboardX" in out
    assert not (tmp_path / "tensorboard").exists()
    assert [r["step"] for r in history.read_records(tmp_path / "metrics.jsonl")] == [1, 2]


def test_a_writer_without_tensorboardx_is_off_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    told = []
    tb = TensorBoardWriter(tmp_path / "tb", start=0, enabled=True, log=told.append)
    tb.scalars(1, {"step": 1, "loss": 1.0})
    tb.close()
    assert not tb.enabled and not (tmp_path / "tb").exists()
    assert len(told) == 1 and "tensorboardX cannot be imported (ModuleNotFoundError" in told[0]


def test_a_vaes_extra_grids_have_their_own_tags(tmp_path):
    import numpy as np
    from PIL import Image

    paths = [tmp_path / f"step_000002{s}.png" for s in ("", "_reconstructions", "_interpolation")]
    for i, p in enumerate(paths):
        Image.fromarray(np.full((8 + i, 12, 3), 40 * i, np.uint8)).save(p)
    tb = TensorBoardWriter(tmp_path / "tb", start=0, enabled=True)
    tb.images(2, paths)
    tb.close()
    acc = accumulated(tmp_path / "tb")
    tags = ["samples", "samples/reconstructions", "samples/interpolation"]
    assert sorted(acc.Tags()["images"]) == sorted(tags)
    for i, (tag, p) in enumerate(zip(tags, paths, strict=True)):
        [image] = acc.Images(tag)
        assert (image.step, image.height, image.width) == (2, 8 + i, 12)
        assert image.encoded_image_string == p.read_bytes()


def test_a_disabled_writer_writes_nothing(tmp_path):
    tb = TensorBoardWriter(tmp_path / "tb", start=0, enabled=False)
    tb.config(0, "{}")
    tb.scalars(1, {"step": 1, "loss": 1.0})
    tb.close()
    assert not tb.enabled and not (tmp_path / "tb").exists()


def test_the_writer_imports_neither_torch_nor_tensorflow():
    code = ("import importlib.util, sys; "
            "spec = importlib.util.spec_from_file_location('t', sys.argv[1]); "
            "t = importlib.util.module_from_spec(spec); spec.loader.exec_module(t); "
            "tbx, why = t._import_tensorboardx(); assert tbx is not None, why; "
            "print(sorted(m for m in ('torch', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, tensorboard_log.__file__],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
