"""The accelerator check: one command for an NVIDIA H100/H200 machine (jax, flax, optax, orbax,
no network), under 8 minutes, failing loudly. Run by `benchmarks/device_check.sh`:

    bash benchmarks/device_check.sh [OUT]      # default OUT: benchmarks/results/gpu-<device>
    bash benchmarks/device_check.sh --dry OUT  # the same plumbing on CPU, tiny sizes

Parts, each a fresh process with its own time limit: the programs (the GPU backend is there),
a 200-step training smoke run at the default steps per call and at 1, the loop's floor (the
tiny MLP GAN, fused and not), `genart bench` for DCGAN-64 bfloat16 at batch 512, the conv
VAE, the hierarchical VAE's bench recipe (bench_hvae32, both dtypes, its PyTorch peer) and VDVAE's
CIFAR-10 network (hvae_cifar32, bfloat16, at the largest of batch 128, 64, 32 that fits)
(images/s/device, MFU of the model's FLOPs counted from the step's jaxpr, `genart_jax.flops`,
against the bf16 matmul peak measured in the same run, the PyTorch peers where torch is
installed, k = 1 vs 8), and the input pipeline's feed rate. A bench row whose MFU is missing,
not from that count, or outside (0, 1] fails its part. It writes
results.json and results.md into OUT and exits 1 if any part failed or was skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_START = time.perf_counter()
NEEDED = ("jax", "flax", "optax", "orbax.checkpoint", "ml_collections", "tqdm", "numpy")
FOR_DATA = ("tensorflow_datasets", "array_record", "sklearn")  # the embedded digits
FOR_PIPELINE = ("tensorflow_datasets", "array_record", "grain", "PIL")  # generated JPEGs


def _missing(modules: tuple[str, ...]) -> list[str]:
    import importlib.util

    out = []
    for m in modules:
        try:
            if importlib.util.find_spec(m) is None:
                out.append(m)
        except ModuleNotFoundError:
            out.append(m)
    return out


BUDGET_S = 450  # all parts together; the shell script stops everything at 480
SLOWER = 1  # the parts' time limits are multiplied by this (--dry: CPU compiles are slow)


ONLY: set[str] | None = None  # --parts


def _run(name: str, cmd: list[str], timeout: float, log: Path) -> dict:
    """One part as a subprocess: its return code, wall time and output (kept in `log`), within
    `timeout` and what is left of BUDGET_S."""
    if ONLY is not None and name not in ONLY:
        return {"part": name, "rc": None, "skipped": "not in --parts"}
    t0 = time.perf_counter()
    timeout = max(1.0, min(timeout * SLOWER, BUDGET_S - (t0 - _START)))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=timeout)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        text = [x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                for x in (e.stdout, e.stderr)]
        rc, out = 124, f"{text[0]}{text[1]}\nTIMED OUT after {timeout:.0f} s"
    log.write_text(out)
    wall = time.perf_counter() - t0
    print(f"[{name}] rc {rc} in {wall:.1f} s; log {log}", flush=True)
    if rc:
        print(out[-2000:], flush=True)
    return {"part": name, "rc": rc, "wall_s": wall, "command": " ".join(cmd), "log": log.name}


def _train(workdir: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "genart_jax.cli", "train", "--workdir", str(workdir),
            "--no-progress", "--no-resume", *args]


def _metrics(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    return [json.loads(r) for r in path.read_text().splitlines()] if path.is_file() else []


def _bench_rows(out: Path) -> list[dict]:
    path = out / "results.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    keep = ("config", "dtype", "batch", "steps_per_call", "images_per_sec_per_device", "mfu",
            "flops_per_step", "flops_counted_by", "compile_s", "peer", "kind")
    return [{k: r[k] for k in keep if k in r} for r in data.get("results", [])]


def mfu_problems(rows: list[dict]) -> list[str]:
    """What is wrong with bench rows' MFU: none, not from the model's FLOP count of the jaxpr
    (`genart_jax.flops`; XLA's GPU count is -1 or low), or outside (0, 1]."""
    if not rows:
        return ["no bench rows"]
    bad = []
    for r in rows:
        mfu = r.get("mfu")
        if r.get("flops_counted_by") != "jaxpr":
            bad.append(f"{r.get('config')} k={r.get('steps_per_call')}: FLOPs not from the jaxpr")
        elif not (isinstance(mfu, float) and 0 < mfu <= 1):
            bad.append(f"{r.get('config')} {r.get('dtype')} k={r.get('steps_per_call')}: "
                       f"MFU {mfu}")
    return bad


# The hierarchical VAE's parts: bench_hvae32 (1.3M parameters) in both dtypes with its PyTorch
# peers (eager; torch.compile on the GPU), and VDVAE's CIFAR-10 network (hvae_cifar32, 39M
# parameters, bfloat16, no peers) at the largest batch of HVAE_CIFAR_BATCHES that fits: tried
# largest first, the next after an out-of-memory failure. One step per call (fusing unrolls the
# 76 blocks k times). On --dry, batch 2 and 1 step of each.
HVAE_CIFAR_BATCHES = (128, 64, 32)
_OOM = re.compile(r"RESOURCE_EXHAUSTED|out of memory|Out of memory|OOM", re.I)


def out_of_memory(log_text: str) -> bool:
    """Whether a failed part's log says the device ran out of memory."""
    return bool(_OOM.search(log_text))


def hvae_parts(out: Path, logs: Path, parts: list[dict], dry: bool) -> None:
    steps = ["--devices", "1", "--drivers", "shard_map", "--steps-per-call", "1",
             "--steps", "1" if dry else "20", "--rounds", "1" if dry else "2",
             "--warmup", "1" if dry else "2", "--no-xla-flops"]

    def bench(name: str, config: str, dtypes: str, batch: int, extra: list[str],
              timeout: float) -> dict:
        cmd = [sys.executable, "-m", "genart_jax.cli", "bench", "--configs", config,
               "--dtypes", dtypes, "--batches", str(batch), *steps, *extra,
               "--out", str(out / name)]
        part = _run(name, cmd, timeout, logs / f"{name}.log")
        part["batch"] = batch
        part["rows"] = _bench_rows(out / name)
        problems = mfu_problems(part["rows"])
        if part["rc"] == 0 and problems:
            part["rc"] = f"MFU: {'; '.join(problems)}"
        return part

    parts.append(bench("bench-hvae32", "bench_hvae32", "float32,bfloat16", 2 if dry else 32,
                       [], 240))
    tried = []
    for batch in (2,) if dry else HVAE_CIFAR_BATCHES:
        part = bench("bench-hvae-cifar32", "hvae_cifar32", "bfloat16", batch, ["--no-peers"],
                     300)  # the 76 unrolled blocks: a long compile
        tried.append(batch)
        log = logs / "bench-hvae-cifar32.log"
        if part.get("skipped") or part["rc"] == 0 or not (
                log.is_file() and out_of_memory(log.read_text())):
            break
        shutil.copy(log, logs / f"bench-hvae-cifar32-oom-{batch}.log")
    part["batches_tried"] = tried
    parts.append(part)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", type=Path, default=None)
    p.add_argument("--dry", action="store_true", help="run the plumbing on CPU, tiny sizes")
    p.add_argument("--parts", default=None, help="only these parts (comma-separated names)")
    a = p.parse_args(argv)
    missing = _missing(NEEDED)
    if missing:
        print(f"device_check: FAILED: missing Python packages {missing}", file=sys.stderr)
        return 1
    import jax

    backend, kind = jax.default_backend(), jax.devices()[0].device_kind
    global BUDGET_S, SLOWER, ONLY
    ONLY = set(a.parts.split(",")) if a.parts else None
    if a.dry:  # the dry run checks the plumbing on a CPU, not the time
        BUDGET_S, SLOWER = 7200, 8
    if not a.dry and backend != "gpu":
        print(f"device_check: FAILED: JAX's backend is {backend!r} ({kind}), not a GPU "
              f"(check the CUDA jaxlib plugin: pip list | grep jax); --dry runs on CPU",
              file=sys.stderr)
        return 1
    slug = re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")
    out = a.out or ROOT / "benchmarks" / "results" / f"{'dry' if a.dry else 'gpu'}-{slug}"
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    dry = a.dry
    smoke_steps = 20 if dry else 200
    dcgan_batch, vae_batch = ("8", "8") if dry else ("512", "256")
    bench_common = ["--devices", "1", "--drivers", "shard_map", "--steps", "2" if dry else "30",
                    "--rounds", "1" if dry else "3", "--warmup", "1" if dry else "3",
                    "--steps-per-call", "1,2" if dry else "1,8",
                    "--no-xla-flops"]  # MFU from the model's count: no CPU compile needed
    parts, summary = [], {"backend": backend, "device_kind": kind, "dry": dry,
                          "jax": jax.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    data_missing = _missing(FOR_DATA)
    run_dir = out / "runs"

    def train_part(name, args, timeout):
        if data_missing:
            parts.append({"part": name, "rc": None, "skipped": f"missing {data_missing}"})
            return
        workdir = run_dir / name
        parts.append(_run(name, _train(workdir, args), timeout, logs / f"{name}.log"))
        if parts[-1].get("skipped"):
            return
        records = _metrics(workdir)
        steps_per_s = [r["images_per_sec"] for r in records[1:-1]]
        parts[-1]["last_step"] = records[-1]["step"] if records else None
        parts[-1]["median_images_per_sec"] = sorted(steps_per_s)[len(steps_per_s) // 2] \
            if steps_per_s else None
        parts[-1]["final_losses"] = {k: records[-1].get(k) for k in ("d_loss", "g_loss")} \
            if records else {}
        steps = int(next(x for x in args if x.startswith("--config.train.steps=")).split("=")[1])
        if parts[-1]["rc"] == 0 and (parts[-1]["last_step"] != steps or None in
                                     parts[-1]["final_losses"].values()):
            parts[-1]["rc"] = f"ended at step {parts[-1]['last_step']} of {steps} or non-finite"
        shutil.rmtree(workdir, ignore_errors=True)  # checkpoints: not results

    smoke = ["--config", "dcgan_digits", f"--config.train.steps={smoke_steps}",
             "--config.train.sample_every=0", "--config.checkpoint.every_steps=0"]
    train_part("smoke-default-k", smoke, 150)
    for name, config, dtypes, batch in (("bench-dcgan64", "dcgan64_celeba", "bfloat16",
                                         dcgan_batch),
                                        ("bench-convvae64", "convvae64_celeba",
                                         "bfloat16,float32", vae_batch)):
        cmd = [sys.executable, "-m", "genart_jax.cli", "bench", "--configs", config,
               "--dtypes", dtypes, "--batches", batch, *bench_common, "--out", str(out / name)]
        parts.append(_run(name, cmd, 120, logs / f"{name}.log"))
        parts[-1]["rows"] = _bench_rows(out / name)
        problems = mfu_problems(parts[-1]["rows"])
        if parts[-1]["rc"] == 0 and problems:
            parts[-1]["rc"] = f"MFU: {'; '.join(problems)}"
    floor = ["--config", "gan_mlp_digits", "--config.model.mlp_gan.g_hidden=(8,)",
             "--config.model.mlp_gan.d_hidden=(8,)", "--config.train.batch_size=8",
             f"--config.train.steps={300 if dry else 4000}", "--config.train.sample_every=0",
             "--config.checkpoint.every_steps=0", "--config.sample.num=4"]
    train_part("floor-default-k", floor, 90)
    train_part("floor-k1", [*floor, "--config.train.steps_per_call=1"], 90)
    train_part("smoke-k1", [*smoke, "--config.train.steps_per_call=1"], 150)
    pipeline_missing = _missing(FOR_PIPELINE)
    if pipeline_missing:
        parts.append({"part": "input-pipeline", "rc": None,
                      "skipped": f"missing {pipeline_missing}"})
    else:  # generated JPEG files prepared at 64 px, then streamed onto the GPU by 2 workers
        images, data_dir = out / "input-images", out / "input-data"
        make = [sys.executable, "-m", "benchmarks.input_pipeline", "--generate", str(images),
                "--images", "96" if dry else "600", "--sizes", "64", "--data_dir",
                str(data_dir)]
        parts.append(_run("input-data", make, 90, logs / "input-data.log"))
        cmd = [sys.executable, "-m", "benchmarks.input_pipeline", "--data", "gen64", "--size",
               "64", "--workers", "2", "--seconds", "3" if dry else "10", "--batch",
               "16" if dry else "64", "--data_dir", str(data_dir)]
        if parts[-1]["rc"] == 0:
            parts.append(_run("input-pipeline", cmd, 90, logs / "input-pipeline.log"))
            if not parts[-1].get("skipped"):
                parts[-1]["output"] = (logs / "input-pipeline.log").read_text()[-1500:]
        shutil.rmtree(images, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
    # last: the other parts keep their times; a GPU session with little time left runs these
    # alone with --parts bench-hvae32,bench-hvae-cifar32
    hvae_parts(out, logs, parts, dry)
    failed = [q["part"] for q in parts if q.get("rc") != 0]
    summary.update(parts=parts, failed=failed)
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "results.md").write_text(_markdown(summary))
    print(f"device_check: results in {out}", flush=True)
    if failed:
        print(f"device_check: FAILED parts: {failed} (see {logs})", file=sys.stderr)
        return 1
    return 0


def _markdown(s: dict) -> str:
    lines = [f"# Device check: {s['device_kind']} ({s['backend']}, jax {s['jax']}, {s['date']}"
             f"{', DRY RUN' if s['dry'] else ''})", "",
             "| part | rc | wall s | result |", "|---|---|---|---|"]
    for q in s["parts"]:
        if q.get("skipped"):
            lines.append(f"| {q['part']} | skipped | | {q['skipped']} |")
            continue
        what = ""
        if "last_step" in q:
            what = (f"step {q['last_step']}, median {q['median_images_per_sec']} img/s, "
                    f"{q['final_losses']}")
        if "batches_tried" in q:
            what = f"batch {q['batch']} (tried {', '.join(map(str, q['batches_tried']))})"
        if "output" in q:  # the input pipeline's rate line
            what = next((ln for ln in reversed(q["output"].splitlines()) if "images/s" in ln),
                        "")
        lines.append(f"| {q['part']} | {q['rc']} | {q['wall_s']:.1f} | {what} |")
    rows = [(q["part"], r) for q in s["parts"] for r in q.get("rows", [])]
    if rows:
        lines += ["", "| part | config | dtype | batch | steps/call | img/s/device | GFLOP/step "
                  "(model, from the jaxpr) | MFU | compile s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for part, r in rows:
            lines.append(f"| {part} | {r.get('config')} | {r.get('dtype')} | {r.get('batch')} | "
                         f"{r.get('steps_per_call')} | {r.get('images_per_sec_per_device', 0):.0f} "
                         f"| {r.get('flops_per_step', 0) / 1e9:.1f} | {r.get('mfu', 0):.1%} | "
                         f"{r.get('compile_s', 0):.1f} |")
    lines += ["", f"Failed: {s['failed'] or 'none'}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
