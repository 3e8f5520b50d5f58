"""The per-call cost of agreeing on a signal in a multi-process run: two local `genart train`
processes (2 CPU devices each, gloo) on the loop's floor case (tiny MLP GAN, batch 8, one step
per call), with JAX's preemption sync point checked at every call ("sync") and without it
(`JAX_ENABLE_PREEMPTION_SERVICE=false`: signals agreed at logged steps only, as before),
rounds interleaved so that a shared machine's load hits both alike.

    python -m benchmarks.preemption_sync --rounds 3 \
        --out benchmarks/results/cpu-2core-preemption-sync

Microseconds per step from process 0's logged rates (the first interval, which compiles,
left out): the median over a run's intervals, then the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.train_loop import TINY

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_pair(sync: bool, steps: int) -> dict:
    """Two processes of the floor case; process 0's median microseconds per step."""
    workdir = Path(tempfile.mkdtemp(prefix="preemption_sync-"))
    port = _free_port()
    args = [*TINY, "--config.train.log_every=500", "--config.train.steps_per_call=1",
            f"--config.train.steps={steps}"]
    procs = []
    for i in range(2):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
               "GENART_COORDINATOR": f"127.0.0.1:{port}", "GENART_NUM_PROCESSES": "2",
               "GENART_PROCESS_ID": str(i),
               "JAX_ENABLE_PREEMPTION_SERVICE": "true" if sync else "false"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "genart_jax.cli", "train", "--workdir", str(workdir),
             "--no-progress", "--no-resume", *args], env=env, cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode:
            raise RuntimeError(f"a process failed ({p.returncode}):\n{err[-3000:]}")
    records = [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]
    us = [1e6 * 8 / r["images_per_sec"] for r in records[1:-1]]
    return {"sync": sync, "us_per_step_median": statistics.median(us), "intervals": us}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    runs = []
    for r in range(a.rounds):
        order = (True, False) if r % 2 == 0 else (False, True)  # alternate who goes first
        for sync in order:
            load = os.getloadavg()[0]
            row = {**run_pair(sync, a.steps), "round": r, "load_before": load}
            runs.append(row)
            print(f"round {r} sync={sync}: {row['us_per_step_median']:.0f} us/step "
                  f"(load {load:.1f})", flush=True)
    summary = {s: statistics.median(x["us_per_step_median"] for x in runs if x["sync"] == s)
               for s in (True, False)}
    text = (f"two processes, floor case, k=1, {a.steps} steps, {a.rounds} rounds interleaved: "
            f"sync point every call {summary[True]:.0f} us/step, logged steps only "
            f"{summary[False]:.0f} us/step (ratio {summary[True] / summary[False]:.3f}); "
            f"loads {[round(x['load_before'], 1) for x in runs]}; "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "results.json").write_text(json.dumps({"runs": runs, "summary_us": {
            "sync": summary[True], "no_sync": summary[False]}}, indent=2))
        (a.out / "results.md").write_text(
            f"# Per-call signal agreement, cost\n\nCommand: `python -m benchmarks.preemption_sync"
            f" --rounds {a.rounds} --steps {a.steps} --out {a.out}` (shared 2-core machine)\n\n"
            f"{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
