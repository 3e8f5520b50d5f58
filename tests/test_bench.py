"""`genart bench` end to end on a tiny case, and its interleaved timing."""

import json
from pathlib import Path

import pytest

from genart_jax import cli, host_memory
from genart_jax.bench.interleave import Timed, time_interleaved
from genart_jax.config import load_config


def test_interleaving_rotates_the_order_and_times_every_item_each_round():
    log = []
    items = [Timed(name, (lambda n=name: log.append(n)), steps_per_call=k)
             for name, k in (("a", 1), ("b", 2), ("c", 1))]
    time_interleaved(items, steps=6, rounds=3, pause_s=0)
    # Each round: a and c run 2 calls (6 steps / 3 rounds), b one call of 2 steps.
    assert log == ["a", "a", "b", "c", "c",   # round 1: a b c
                   "b", "c", "c", "a", "a",   # round 2: b c a
                   "c", "c", "a", "a", "b"]   # round 3: c a b
    for item, steps in zip(items, (6, 6, 6), strict=True):
        s = item.summary()
        assert s["steps_timed"] == steps and len(s["round_step_s_medians"]) == 3
        assert s["step_s_median"] <= s["step_s_p90"]


def test_matmul_peak_times_the_float32_accumulating_bfloat16_product_too():
    import jax.numpy as jnp
    import numpy as np

    from genart_jax.bench.harness import matmul_forms

    x = np.arange(16, dtype=np.float32).reshape(4, 4) / 8
    assert len(matmul_forms("float32")) == 1
    forms = matmul_forms("bfloat16")
    outs = [f(jnp.asarray(x, jnp.bfloat16)) for f in forms]
    # The bfloat16 product and the float32-accumulated one (the fast form on AVX512-BF16).
    assert [o.dtype for o in outs] == [jnp.bfloat16, jnp.float32]
    for o in outs:  # x is exact in bfloat16; both compute x @ x
        np.testing.assert_allclose(np.asarray(o, np.float32), x @ x, rtol=1e-2)


def test_interleaving_counts_page_faults_and_kernel_time_per_step():
    import mmap

    pytest.importorskip("resource")
    size = 16 << 20

    def touch_fresh_pages():  # a fresh anonymous map: every page faults once when written
        with mmap.mmap(-1, size) as m:
            for offset in range(0, size, mmap.PAGESIZE):
                m[offset] = 1

    fresh = Timed("fresh", touch_fresh_pages, steps_per_call=2)
    idle = Timed("idle", lambda: None)
    time_interleaved([fresh, idle], steps=4, rounds=2, pause_s=0)
    pages_per_step = size // mmap.PAGESIZE // 2
    assert fresh.summary()["minor_faults_per_step"] >= 0.9 * pages_per_step
    assert idle.summary()["minor_faults_per_step"] < 0.05 * pages_per_step
    assert fresh.summary()["kernel_s_per_step"] >= 0


def test_interleaving_rejects_no_steps():
    with pytest.raises(ValueError, match="steps >= 1"):
        time_interleaved([Timed("a", lambda: None)], steps=0, rounds=1)


@pytest.mark.slow
def test_bench_cli_writes_results_for_each_case(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = cli.main(["bench", "--configs", "gan_mlp_digits", "--devices", "1", "--drivers",
                   "shard_map", "--dtypes", "float32", "--steps-per-call", "1,2", "--batches",
                   "8", "--steps", "4", "--rounds", "2", "--warmup", "1", "--no-peers",
                   "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "results.json").read_text())
    rows = report["results"]
    assert [r["steps_per_call"] for r in rows] == [1, 2]
    for r in rows:
        assert r["batch"] == 8 and r["steps_timed"] >= 4 and r["images_per_sec"] > 0
        assert len(r["round_step_s_medians"]) == 2 and r["flops_per_step"] > 0
        # MFU's numerator is the model's count from the jaxpr, XLA:CPU's beside it
        assert r["flops_counted_by"] == "jaxpr" and r["xla_cpu_flops_per_step"] > 0
    from genart_jax.train.programs import step_flops
    model = step_flops(load_config("gan_mlp_digits", {"train.batch_size": "8"})).matmul
    assert rows[0]["flops_per_step"] == model
    assert rows[0]["mfu"] == pytest.approx(rows[0]["achieved_flops_per_device"]
                                           / report["matmul_peak_flops"]["float32"])
    assert report["timing"] == {"steps": 4, "rounds": 2, "warmup": 1}
    # the CLI keeps freed host memory (genart_jax.host_memory) and the report says so
    assert report["machine"]["host_memory_kept"] == (host_memory._glibc() is not None)
    md = (out / "results.md").read_text()
    assert "Host malloc" in md
    assert all(r["minor_faults_per_step"] >= 0 and r["kernel_s_per_step"] >= 0 for r in rows)
    assert "| gan_mlp_digits | float32 | 8 | 1 | shard_map | 2 |" in md


def test_bench_cli_rejects_zero_rounds(capsys):
    assert cli.main(["bench", "--rounds", "0", "--devices", "1", "--no-peers"]) != 0
    assert "--rounds 0" in capsys.readouterr().err


def test_bench_cli_rejects_an_unknown_dtype(capsys):
    assert cli.main(["bench", "--dtypes", "float32,float16", "--devices", "1", "--no-peers"]) != 0
    assert "float16 is not float32 or bfloat16" in capsys.readouterr().err


def test_conv_passes_times_every_implementation_and_names_the_pick(tmp_path):
    from benchmarks import conv_passes

    assert conv_passes.main(["--batch", "2", "--reps", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "passes.json").read_text())
    assert [r["big"] for r in report["rows"]] == [[32, 32, 3], [16, 16, 64], [8, 8, 128]]
    for row in report["rows"]:
        t = row["jax_ms"]
        assert set(t["up"]) == {"xla", "four_phase", "space_to_depth", "matmul", "picked"}
        assert set(t["down"]) == {"xla", "space_to_depth", "matmul", "im2col", "picked"}
        assert all(v > 0 for v in t["kernel_grad"].values() if not isinstance(v, str))
        # At batch 2 every pass is far below CPU_FORMS_MIN_FLOPS: XLA's own forms.
        assert t["down"]["picked"] == t["up"]["picked"] == t["kernel_grad"]["picked"] == "xla"
    md = (tmp_path / "passes.md").read_text()
    assert "| 8x8x128 <-> 4x4x256 | up |" in md
    # This process started JAX before the switch could be set: YNNPACK, and the report says so.
    assert report["eigen_convolutions"] is False and "XLA:CPU convolutions: YNNPACK." in md


def test_pass_counts_count_every_pass_of_a_gan_step():
    from benchmarks import conv_passes
    from genart_jax.models import resample_conv

    before = (resample_conv.down, resample_conv.up, resample_conv.kernel_grad)
    counts = conv_passes.pass_counts(load_config("bench_dcgan32", {"train.batch_size": "4"}))
    # D runs 3 forwards (real and fake in its update, fake again in G's), 2 kernel gradients
    # and an input gradient in both updates except at the image in its own; G one of each.
    expected = {}
    for pair in [(32, 3, 64), (16, 64, 128), (8, 128, 256)]:
        expected.update({("down", *pair): 4, ("up", *pair): 2 if pair[1] == 3 else 4,
                         ("kernel_grad", *pair): 3})
    assert dict(counts) == expected
    assert (resample_conv.down, resample_conv.up, resample_conv.kernel_grad) == before


def test_step_ceiling_swaps_the_picked_passes_for_pytorchs():
    from benchmarks import conv_passes

    rows = [{"big": [8, 8, 4], "small": [4, 4, 8],
             "jax_ms": {"down": {"xla": 2.0, "picked": "xla"},
                        "up": {"xla": 3.0, "four_phase": 1.0, "picked": "four_phase"},
                        "kernel_grad": {"xla": 5.0, "picked": "xla"}},
             "torch_ms": {"down": 1.0, "up": 1.0, "kernel_grad": 1.0}}]
    counts = {("down", 8, 4, 8): 2, ("up", 8, 4, 8): 1, ("kernel_grad", 8, 4, 8): 3,
              ("down", 16, 4, 8): 7}  # a pair without a row counts nothing
    c = conv_passes.step_ceiling(rows, counts, jax_step_ms=30.0, torch_step_ms=25.0)
    assert c["jax_passes_ms"] == 2 * 2.0 + 1.0 + 3 * 5.0
    assert c["torch_passes_ms"] == 6.0 and c["jax_rest_ms"] == 10.0 and c["torch_rest_ms"] == 19.0
    assert c["ceiling_step_ms"] == 16.0
    assert c["ratio"] == pytest.approx(25 / 30) and c["ceiling_ratio"] == pytest.approx(25 / 16)
    assert conv_passes.step_ceiling(rows, counts, 30.0, None)["ceiling_ratio"] is None


@pytest.mark.slow
def test_conv_passes_step_writes_the_counts_and_the_estimate(tmp_path):
    from benchmarks import conv_passes

    assert conv_passes.main(["--batch", "2", "--reps", "1", "--step", "--steps", "2",
                             "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "passes.json").read_text())
    step = report["step"]
    assert sum(c["count"] for c in step["counts"]) == 31  # 4 + 4 + 3 per pair, 2 ups at the image
    assert step["jax_step_ms"] > 0 and step["jax_passes_ms"] > 0
    md = (tmp_path / "passes.md").read_text()
    assert "Passes per train step: " in md and "Whole step (median, interleaved)" in md


@pytest.mark.slow
def test_conv_forms_times_every_choice_and_restores_the_threshold(capsys):
    from benchmarks import conv_forms
    from genart_jax.models import resample_conv

    assert conv_forms.main(["--config", "dcgan_digits", "--steps", "1", "--rounds", "1",
                            "--warmup", "1", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    for choice in ("picked", "xla", "cpu_forms"):
        assert f"dcgan_digits bfloat16 {choice}: " in out
    assert resample_conv.CPU_FORMS_MIN_FLOPS == 1e9
    assert resample_conv.CPU_MATMUL_FORMS_MIN_FLOPS == 0


def test_device_check_fails_bench_rows_without_the_models_mfu():
    from benchmarks.device_check import mfu_problems

    good = {"config": "c", "dtype": "bfloat16", "steps_per_call": 1, "mfu": 0.4,
            "flops_counted_by": "jaxpr"}
    assert mfu_problems([good]) == []
    assert mfu_problems([]) == ["no bench rows"]
    assert mfu_problems([{**good, "flops_counted_by": None}]) == [
        "c k=1: FLOPs not from the jaxpr"]
    assert mfu_problems([{**good, "mfu": -1.0}, {**good, "mfu": 1.3}]) == [
        "c bfloat16 k=1: MFU -1.0", "c bfloat16 k=1: MFU 1.3"]


def test_bench_times_the_hvae_and_its_peer_in_one_run_with_the_models_mfu(tmp_path,
                                                                          monkeypatch):
    """The hierarchical VAE's step, built by its family's hooks, times on the harness's
    synthetic uint8 batches beside its PyTorch eager peer; both rows have the MFU of the
    model's FLOPs counted from the jaxpr."""
    from genart_jax.bench import harness
    from tests.test_bench_peers import TINY_HVAE

    pytest.importorskip("torch")
    assert harness._batch(load_config("bench_hvae32", TINY_HVAE), 1)["image"].dtype == "uint8"
    monkeypatch.setattr(harness, "load_config",
                        lambda name, overrides=None: load_config(name, {**TINY_HVAE,
                                                                        **(overrides or {})}))
    monkeypatch.setattr(harness, "matmul_peak", lambda dtype: 1e12)
    report = harness.run(["bench_hvae32"], [1], ["shard_map"], ["float32"], [1], None,
                         steps=1, warmup=1, peers=True, out=tmp_path, rounds=1,
                         xla_flops=False)
    (row,), (peer,) = report["results"], report["peers"]
    flops = harness.model_flops(load_config("bench_hvae32", TINY_HVAE))
    # at least the encoder's and decoder's convolutions, forward and backward
    assert flops > 3 * 2 * 4 * 8 * 8 * 3 * 3 * 3 * 8
    assert row["batch"] == peer["batch"] == 4 and row["flops_per_step"] == flops
    assert peer["peer"] == "pytorch eager" and peer["flops_per_step"] == flops
    for r in (row, peer):
        assert r["images_per_sec"] > 0 and 0 < r["mfu"] < 1
    md = (tmp_path / "results.md").read_text()
    assert "| bench_hvae32 | float32 | 4 | 1 | shard_map | 1 |" in md
    assert "| pytorch eager (cpu, " in md and md.count("%") >= 2


def test_device_check_runs_the_hvae_cifar_bench_at_the_largest_batch_that_fits(
        tmp_path, monkeypatch):
    from benchmarks import device_check

    calls = []

    def fake_run(name, cmd, timeout, log):
        batch = int(cmd[cmd.index("--batches") + 1])
        config = cmd[cmd.index("--configs") + 1]
        calls.append((name, config, batch, "--no-peers" in cmd))
        fits = config != "hvae_cifar32" or batch <= 64
        log.write_text("ok" if fits else "RESOURCE_EXHAUSTED: Out of memory allocating")
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        row = {"config": config, "dtype": "bfloat16", "batch": batch, "steps_per_call": 1,
               "mfu": 0.3, "flops_counted_by": "jaxpr"}
        (out / "results.json").write_text(json.dumps({"results": [row] if fits else []}))
        return {"part": name, "rc": 0 if fits else 1}

    monkeypatch.setattr(device_check, "_run", fake_run)
    logs = tmp_path / "logs"
    logs.mkdir()
    parts = []
    device_check.hvae_parts(tmp_path, logs, parts, dry=False)
    assert calls == [("bench-hvae32", "bench_hvae32", 32, False),
                     ("bench-hvae-cifar32", "hvae_cifar32", 128, True),
                     ("bench-hvae-cifar32", "hvae_cifar32", 64, True)]
    assert [(p["part"], p["rc"], p["batch"]) for p in parts] == [
        ("bench-hvae32", 0, 32), ("bench-hvae-cifar32", 0, 64)]
    assert parts[1]["batches_tried"] == [128, 64]
    assert (logs / "bench-hvae-cifar32-oom-128.log").is_file()
    assert "batch 64 (tried 128, 64)" in device_check._markdown(
        {"device_kind": "x", "backend": "gpu", "jax": "0", "date": "d", "dry": False,
         "parts": [{**p, "wall_s": 1.0} for p in parts], "failed": []})
    # another failure than memory stops the search
    calls.clear()
    monkeypatch.setattr(device_check, "out_of_memory", lambda text: False)
    parts = []
    device_check.hvae_parts(tmp_path, logs, parts, dry=True)
    assert [c[2] for c in calls] == [2, 2] and parts[1]["batches_tried"] == [2]
