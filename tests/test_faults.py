"""The fault suite: each test injects one fault a user meets (a damaged checkpoint, a torn
history line, a second run on a workdir, a full or read-only disk, damaged data, bad input)
and asserts both halves: nothing that existed before the fault is lost, and the user sees one
clear line (exit 2 for bad input, 74 for a storage fault)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from genart_jax import checkpoint, history
from genart_jax.cli import EXIT_STORAGE, main
from genart_jax.config import from_json, load_config
from genart_jax.data import DataError
from genart_jax.data.sources import read_examples
from genart_jax.train import abstract_state
from genart_jax.train.loop import MetricsWriter
from genart_jax.workdir_lock import WorkdirBusy, WorkdirLock

TINY = ["--config", "gan_mlp_digits", "--config.model.mlp_gan.g_hidden=(16, 16)",
        "--config.model.mlp_gan.d_hidden=(16, 16)", "--config.model.latent_dim=8",
        "--config.train.batch_size=16", "--config.train.log_every=1",
        "--config.train.sample_every=0", "--config.checkpoint.every_minutes=0",
        "--config.checkpoint.every_steps=2", "--config.checkpoint.async_save=false",
        "--config.sample.num=4", "--config.data.prefetch=0",
        "--config.model.num_classes=10"]  # conditional: the --finetune test needs one


def train(workdir, steps, *extra):
    return main(["train", "--no-progress", "--workdir", str(workdir), "--steps", str(steps),
                 *TINY, *extra])


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step run with checkpoints 2 and 4 and metrics of steps 1-4 (copied by each test)."""
    workdir = tmp_path_factory.mktemp("trained") / "w"
    assert train(workdir, 4) == 0
    return workdir


def copy_of(trained, tmp_path, name="w") -> Path:
    dest = tmp_path / name
    shutil.copytree(trained, dest)
    return dest


def state_of(workdir, step):
    cfg = from_json((workdir / "config.json").read_text())
    return checkpoint.restore(workdir, abstract_state(cfg), step)[0]


def assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def damage(step_dir: Path, how: str) -> None:
    """Truncate one file of a checkpoint: its largest data file, its meta record or the
    state's metadata."""
    if how == "data":
        files = [p for p in (step_dir / "state").rglob("*") if p.is_file()
                 and p.parent.name == "d"]
        target = max(files, key=lambda p: p.stat().st_size)
    else:
        target = step_dir / ("meta/metadata" if how == "meta" else "state/_METADATA")
    os.truncate(target, target.stat().st_size // 3)


def storage_scratch(tmp_path, size_kb: int) -> Path:
    """A small tmpfs mounted for the test (root only), or skip."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small filesystem needs root to mount a tmpfs")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs",
                           str(mnt)], capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    return mnt


@pytest.fixture
def tmpfs(tmp_path):
    mounted = []

    def make(size_kb):
        mnt = storage_scratch(tmp_path, size_kb)
        mounted.append(mnt)
        return mnt

    yield make
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# --- checkpoints ----------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["data", "meta", "metadata"])
def test_a_damaged_latest_checkpoint_is_named_and_the_older_one_restores(trained, tmp_path,
                                                                        how):
    workdir = copy_of(trained, tmp_path)
    want = state_of(trained, 2)
    damage(workdir / "checkpoints" / "4", how)
    seen = []
    cfg = from_json((workdir / "config.json").read_text())
    state, _, step = checkpoint.restore(workdir, abstract_state(cfg), on_damaged=seen.append)
    assert step == 2
    assert_same(state, want)
    assert [d.step for d in seen] == [4] and "is damaged" in str(seen[0])
    assert "another model" not in str(seen[0])
    with pytest.raises(checkpoint.CheckpointDamaged, match="checkpoint 4 .* is damaged"):
        checkpoint.restore(workdir, abstract_state(cfg), step=4)  # asked for: no fallback
    assert (workdir / "checkpoints" / "4").is_dir()  # a read never moves anything


def test_another_models_checkpoint_is_not_called_damaged(trained):
    other = load_config("gan_mlp_digits", {"model.mlp_gan.g_hidden": "(16, 16)",
                                           "model.mlp_gan.d_hidden": "(16, 16)",
                                           "model.latent_dim": "12", "model.num_classes": "10"})
    with pytest.raises(checkpoint.CheckpointError, match="another model's state") as e:
        checkpoint.restore(trained, abstract_state(other))
    assert not isinstance(e.value, checkpoint.CheckpointDamaged)
    assert "(8, 16)" in str(e.value) and "(12, 16)" in str(e.value)  # the differing leaf


def test_every_checkpoint_damaged_is_one_error_and_nothing_is_moved(trained, tmp_path, capsys):
    workdir = copy_of(trained, tmp_path)
    for step in (2, 4):
        damage(workdir / "checkpoints" / str(step), "meta")
    code = main(["sample", "--workdir", str(workdir), "--out", str(tmp_path / "s.png")])
    err = capsys.readouterr().err
    assert code == 2
    assert error_lines(err)[-1].startswith("genart: error: every checkpoint in")
    assert len(error_lines(err)) == 3  # a warning per damaged checkpoint, then the error
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]


@pytest.mark.slow
def test_resume_moves_a_damaged_checkpoint_aside_and_goes_on_from_the_older(trained, tmp_path,
                                                                           capsys):
    workdir = copy_of(trained, tmp_path)
    damage(workdir / "checkpoints" / "4", "data")
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "d_lo')  # and a torn last line, as a kill mid-write leaves
    assert train(workdir, 6) == 0
    out, err = capsys.readouterr()
    warnings = [ln for ln in error_lines(err) if ln.startswith("genart: warning")]
    assert len(warnings) == 1 and "torn last line" in warnings[0]
    moved = [ln for ln in out.splitlines() if "is damaged" in ln]
    assert len(moved) == 1 and "checkpoint 4" in moved[0] and "kept, not deleted" in moved[0]
    assert "Resuming from checkpoint 2" in out
    aside = list((workdir / checkpoint.DAMAGED_DIR).iterdir())
    assert len(aside) == 1 and aside[0].name.startswith("4-")
    assert "is damaged" in (aside[0] / "reason.txt").read_text()
    assert (aside[0] / "state").is_dir()  # kept, not deleted
    assert checkpoint.intact_steps(workdir) == [2, 4, 6]
    steps = [r["step"] for r in history.read_records(workdir / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]


# --- history files --------------------------------------------------------------------------

def test_a_torn_last_line_is_reported_and_the_records_before_it_are_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for step in (1, 2):
        history.append_record(path, {"step": step})
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')
    said = []
    assert history.read_records(path, warn=said.append) == [{"step": 1}, {"step": 2}]
    assert len(said) == 1 and "torn last line 3" in said[0] and "2 records kept" in said[0]
    history.append_record(path, {"step": 3})  # cuts the torn tail, then appends
    assert history.read_records(path, warn=said.append) == [{"step": s} for s in (1, 2, 3)]
    assert len(said) == 1 and path.read_text().endswith('{"step": 3}\n')


def test_damage_before_the_last_line_names_the_line(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text('{"round": 1}\nnot json\n{"round": 3}\n')
    with pytest.raises(history.HistoryError, match="line\\(s\\) 2 of 3"):
        history.read_records(path)
    assert path.read_text() == '{"round": 1}\nnot json\n{"round": 3}\n'  # untouched


def test_truncate_after_is_atomic_when_killed_mid_rewrite(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path, enabled=True)
    for step in (1, 2, 3):
        writer.write({"step": step, "loss": float("nan") if step == 3 else 0.5})
    before = path.read_text()
    assert history.read_records(path)[-1] == {"step": 3, "loss": None}

    def killed(*_):
        raise KeyboardInterrupt  # what a signal during the rename's moment would raise

    monkeypatch.setattr(history.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        writer.truncate_after(2)
    assert path.read_text() == before  # the old history, whole
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary left
    monkeypatch.undo()
    writer.truncate_after(2)
    assert [r["step"] for r in history.read_records(path)] == [1, 2]


# --- the workdir lock -----------------------------------------------------------------------

HOLD = ("import sys, time; from genart_jax.workdir_lock import WorkdirLock; "
        "WorkdirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)")


def hold_lock(workdir):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_a_workdir_in_use_stops_at_once_naming_the_holder(trained, tmp_path,
                                                                          capsys):
    workdir = copy_of(trained, tmp_path)
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()
              and p.name != ".lock"}
    holder = hold_lock(workdir)
    try:
        t0 = time.perf_counter()
        code = train(workdir, 6)
        waited = time.perf_counter() - t0
        err = capsys.readouterr().err
        assert code == 2 and waited < 5
        assert error_lines(err) == [error_lines(err)[0]]
        assert f"pid {holder.pid} on " in err and "in use by another training run" in err
        after = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()
                 and p.name != ".lock"}
        assert after == before  # the running run's files are untouched
        # Read-only commands work beside the running trainer.
        assert main(["sample", "--workdir", str(workdir), "--out", str(tmp_path / "s.png"),
                     "--num", "4"]) == 0
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its lock is taken over.
    with WorkdirLock(workdir):
        info = json.loads((workdir / ".lock").read_text())
        assert info["pid"] == os.getpid()
        with pytest.raises(WorkdirBusy, match=f"pid {os.getpid()}"):
            WorkdirLock(workdir).acquire()  # another holder in this process is refused too
    assert WorkdirLock(workdir, enabled=False).acquire()._fd is None  # processes > 0


# --- storage faults -------------------------------------------------------------------------

@pytest.mark.slow
def test_a_full_disk_during_a_save_keeps_the_earlier_checkpoints_and_resumes(
        trained, tmp_path, tmpfs, capsys):
    mnt = tmpfs(8192)  # room for the run once the filler is gone
    workdir = copy_of(trained, mnt)
    want = state_of(trained, 4)
    free = shutil.disk_usage(mnt).free
    (mnt / "filler").write_bytes(b"\0" * max(0, free - 48 * 1024))
    code = train(workdir, 8)
    err = capsys.readouterr().err
    assert code == EXIT_STORAGE
    assert len(error_lines(err)) == 1, err  # no tracebacks, no event-loop noise
    line = error_lines(err)[0]
    assert "the disk is full" in line and "Intact: checkpoints 2, 4" in line and str(workdir) \
        in line
    assert checkpoint.intact_steps(workdir) == [2, 4]
    assert_same(state_of(workdir, 4), want)
    (mnt / "filler").unlink()  # space freed: the same command resumes
    assert train(workdir, 8) == 0
    assert checkpoint.intact_steps(workdir)[-1] == 8
    assert not [p for p in (workdir / "checkpoints").iterdir() if not p.name.isdigit()]
    assert [r["step"] for r in history.read_records(workdir / "metrics.jsonl")] == list(
        range(1, 9))


def test_a_read_only_workdir_is_one_line_and_exit_74(trained, tmp_path, tmpfs, capsys):
    mnt = tmpfs(4096)
    workdir = copy_of(trained, mnt)
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    code = train(workdir, 6)
    err = capsys.readouterr().err
    assert code == EXIT_STORAGE
    assert len(error_lines(err)) == 1 and "read-only" in err and str(workdir) in err
    assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before
    # ... reading still works there, and writing a grid into it is the same one line.
    assert main(["sample", "--workdir", str(workdir), "--out", str(tmp_path / "s.png"),
                 "--num", "4"]) == 0
    capsys.readouterr()
    assert main(["sample", "--workdir", str(workdir), "--out", str(workdir / "s.png"),
                 "--num", "4"]) == EXIT_STORAGE
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "the filesystem is read-only" in err


def test_storage_faults_are_found_anywhere_in_an_exceptions_chain():
    import errno

    from genart_jax.storage_errors import storage_error

    def chained(inner):
        try:
            try:
                raise inner
            except Exception as e:
                raise RuntimeError("while saving") from e
        except RuntimeError as e:
            return e

    denied = storage_error(chained(PermissionError(errno.EACCES, "Permission denied", "/x/y")),
                           writing="checkpoint 6", intact="checkpoints 2, 4")
    assert str(denied) == ("writing checkpoint 6 (/x/y) failed: permission denied. Intact: "
                           "checkpoints 2, 4. To go on: make the folder writable for this "
                           "user, or use another one.")
    tensorstore = ValueError('RESOURCE_EXHAUSTED: Error writing local file "/d/f": Failed '
                             "to write: No space left on device [os_error_code='28']")
    full = storage_error(ExceptionGroup("saves", [KeyError("k"), tensorstore]))
    assert full.errno == errno.ENOSPC and "(/d/f) failed: the disk is full" in str(full)
    assert storage_error(chained(ValueError("shapes differ"))) is None
    assert storage_error(OSError(errno.ENOENT, "No such file")) is None


# --- data and files a user gives ------------------------------------------------------------

def test_a_corrupt_export_is_one_line(trained, tmp_path, capsys):
    out = tmp_path / "g.msgpack"
    assert main(["export", "--workdir", str(trained), "--out", str(out)]) == 0
    os.truncate(out, out.stat().st_size // 2)
    capsys.readouterr()
    code = main(["sample", "--from-export", str(out), "--out", str(tmp_path / "s.png")])
    err = capsys.readouterr().err
    assert code == 2 and len(error_lines(err)) == 1
    assert "is not a readable msgpack export" in err
    assert out.with_suffix(".json").is_file()  # the sidecar is kept


@pytest.mark.slow
def test_a_truncated_array_record_shard_is_one_line(tfds_data_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tfds_data_dir / "digits", data / "digits")
    shard = next((data / "digits").rglob("digits-train.array_record*"))
    size = shard.stat().st_size
    os.truncate(shard, size * 2 // 3)
    code = train(tmp_path / "w", 2, f"--config.data.data_dir={data}")
    err = capsys.readouterr().err
    assert code == 2 and len(error_lines(err)) == 1
    assert "cannot read examples from" in err and "damaged or incomplete" in err
    assert shard.stat().st_size == size * 2 // 3  # nothing rewritten behind the user's back


def test_images_of_several_sizes_are_one_data_error():
    source = [{"image": np.zeros((8, 8, 1), np.uint8), "label": 0},
              {"image": np.zeros((9, 8, 1), np.uint8), "label": 1}]
    with pytest.raises(DataError, match="several sizes \\(\\(8, 8, 1\\), \\(9, 8, 1\\)\\)"):
        read_examples(source, np.array([0, 1]))
    images, labels = read_examples(source, np.array([0, 0]))  # one size: fine
    assert images.shape == (2, 8, 8, 1) and list(labels) == [0, 0]


def test_an_unreadable_image_in_a_folder_being_prepared(tmp_path, capsys):
    from PIL import Image

    art = tmp_path / "art"
    art.mkdir()
    for i in range(3):
        Image.new("RGB", (12, 12), (40 * i, 0, 0)).save(art / f"ok{i}.png")
    (art / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    args = ["prepare", "folder", str(art), "--name", "mine", "--size", "8",
            "--data_dir", str(tmp_path / "data")]
    assert main([*args, "--strict"]) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "broken.png" in err
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "3 images" in out and "1 skipped" in out and "skipped broken.png" in out
    assert sorted(p.name for p in art.iterdir()) == ["broken.png", "ok0.png", "ok1.png",
                                                     "ok2.png"]  # the user's files untouched


@pytest.mark.parametrize("args, says", [
    (["--config", "dcgan_digits", "--config.data.image_size=33"],
     "config key 'data.image_size': DCGAN needs a square image size of 4 * 2^k"),
])
def test_bad_training_input_is_one_line_and_exit_2(tmp_path, capsys, args, says):
    code = main(["train", "--no-progress", "--workdir", str(tmp_path / "w"), "--steps", "2",
                 *args])
    err = capsys.readouterr().err
    assert code == 2 and len(error_lines(err)) == 1 and says in err


def test_a_batch_larger_than_the_dataset_is_a_data_error():
    from genart_jax.data import make_input

    cfg = load_config("gan_mlp_digits")
    with pytest.raises(DataError, match="larger than the dataset \\(1497 examples\\); set "
                                        "train.batch_size to at most 1497"):
        make_input(cfg.data, global_batch=2048, seed=0)  # DataError: exit 2 in the CLI


def test_eval_num_zero_is_an_error_not_all_images(trained, capsys):
    code = main(["eval", "--workdir", str(trained), "--num", "0", "--metrics", "fid"])
    err = capsys.readouterr().err
    assert code == 2 and "--num must be positive, got 0" in err and len(error_lines(err)) == 1


def test_a_feedback_session_with_a_torn_history_line_resumes_with_its_rounds(tmp_path,
                                                                            capsys):
    from tests.test_feedback import toy_session

    s = toy_session(tmp_path, screen=1)
    for like in ([0], [1]):
        s.draw(8)
        s.rate(like=like, dislike=[])
    path = tmp_path / "feedback" / "feedback.jsonl"
    whole = path.read_text()
    with open(path, "a") as f:
        f.write('{"round": 3, "see')  # a kill during the third rating's append
    again = toy_session(tmp_path)
    assert again.round == 3 and [r["liked"] for r in again.history] == [[0], [1]]
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "torn last line 3" in err
    again.draw(8)
    again.rate(like=[2], dislike=[])
    assert path.read_text().startswith(whole)  # the rounds rated before are kept as they were
    assert [r["round"] for r in history.read_records(path)] == [1, 2, 3]


@pytest.mark.slow
def test_no_resume_with_two_processes_moves_the_old_run_aside_before_either_opens_it(
        trained, tmp_path):
    from tests.test_multihost import free_port

    workdir = copy_of(trained, tmp_path)
    port = free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", GENART_COORDINATOR=f"127.0.0.1:{port}",
               GENART_NUM_PROCESSES="2", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    procs = [subprocess.Popen([sys.executable, "-m", "genart_jax.cli", "train", "--no-progress",
                               "--no-resume", "--workdir", str(workdir), "--steps", "2", *TINY],
                              env={**env, "GENART_PROCESS_ID": str(i)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "from step 0 to 2" in out or p is procs[1]  # process 1 prints no summary
    assert "--no-resume: moved the previous run to" in outs[0][0]
    aside = [p for p in workdir.iterdir() if p.name.startswith("replaced-")]
    assert len(aside) == 1 and checkpoint.intact_steps(aside[0]) == [2, 4]  # kept whole
    assert checkpoint.intact_steps(workdir) == [2]  # the new run, from step 0
    assert [r["step"] for r in history.read_records(workdir / "metrics.jsonl")] == [1, 2]


def test_feedback_finetune_on_a_conditional_gan_is_one_line_before_anything_is_written(
        trained, tmp_path, capsys):
    workdir = copy_of(trained, tmp_path)
    code = main(["feedback", "--workdir", str(workdir), "--finetune", "2"])
    err = capsys.readouterr().err
    assert code == 2 and len(error_lines(err)) == 1
    assert "conditional (model.num_classes=10)" in err
    assert not (workdir / "feedback").exists()
    assert checkpoint.intact_steps(workdir) == [2, 4]


def test_first_use_of_the_embedded_digits_says_one_line(tmp_path, capfd):
    from genart_jax.data.sources import open_source

    assert len(open_source("digits", "train", str(tmp_path))) == 1497
    out, err = capfd.readouterr()
    assert error_lines(out) == [f"Preparing the embedded dataset 'digits' into {tmp_path} (once, "
                                f"from files already on this machine; nothing is downloaded) ..."]
    assert err.strip() == ""  # no TFDS progress bars, no absl warning, no "Unknown size"
