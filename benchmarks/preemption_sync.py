"""The per-call cost of agreeing on a signal in a multi-process run, two ways: the check alone
(`parallel.preemption_sync` called in a loop by two local processes, no notice: microseconds
per call), and two local `genart train` processes (2 CPU devices each, gloo) on the tests' tiny
DCGAN (batch 16, one step per call) with JAX's preemption sync point checked at every call
("sync") and without it (`JAX_ENABLE_PREEMPTION_SERVICE=false`: signals agreed at logged steps
only, as before), rounds interleaved so that a shared machine's load hits both alike. (Pairs
of processes used to hang over gloo when many calls were queued between logged steps, sync or
not; the loop now bounds the queue: benchmarks/results/cpu-2core-calls-ahead.)

    python -m benchmarks.preemption_sync --rounds 3 \
        --out benchmarks/results/cpu-2core-preemption-sync

Microseconds per step from process 0's logged rates (the first interval, which compiles,
left out): the median over a run's intervals, then the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config.model.dcgan.g_width=8", "--config.model.dcgan.d_width=8",
        "--config.model.latent_dim=16", "--config.data.image_size=16",
        "--config.train.batch_size=16", "--config.train.sample_every=0",
        "--config.checkpoint.every_steps=0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_pair(sync: bool, steps: int, timeout: float = 240) -> dict:
    """Two processes of the tiny DCGAN; process 0's median microseconds per step, or
    `hung` with both processes' stacks when they did not finish within `timeout` s."""
    workdir = Path(tempfile.mkdtemp(prefix="preemption_sync-"))
    port = _free_port()
    args = [*TINY, "--config.train.log_every=20", "--config.train.steps_per_call=1",
            f"--config.train.steps={steps}"]
    procs = []
    for i in range(2):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
               "GENART_COORDINATOR": f"127.0.0.1:{port}", "GENART_NUM_PROCESSES": "2",
               "GENART_PROCESS_ID": str(i), "PYTHONFAULTHANDLER": "1",
               "JAX_ENABLE_PREEMPTION_SERVICE": "true" if sync else "false"}
        # Output to files, not pipes: a pipe read only after the other process ends fills
        # up, blocks its writer and with it the other process's collectives.
        log = open(workdir / f"process{i}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "genart_jax.cli", "train", "--workdir", str(workdir),
             "--no-progress", "--no-resume", *args], env=env, cwd=ROOT,
            stdout=log, stderr=subprocess.STDOUT), log))
    try:
        for p, _ in procs:
            p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # a hang: every thread's stack (PYTHONFAULTHANDLER)
        for p, _ in procs:
            p.send_signal(signal.SIGABRT)
            p.wait(timeout=60)
        return {"sync": sync, "hung": True, "us_per_step_median": None,
                "stacks": [(workdir / f"process{i}.log").read_text()[-6000:] for i in (0, 1)]}
    finally:
        for _, log in procs:
            log.close()
    for i, (p, _) in enumerate(procs):
        if p.returncode:
            raise RuntimeError(f"a process failed ({p.returncode}):\n"
                               f"{(workdir / f'process{i}.log').read_text()[-3000:]}")
    records = [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]
    us = [1e6 * 16 / r["images_per_sec"] for r in records[1:-1]]
    return {"sync": sync, "hung": False, "us_per_step_median": statistics.median(us),
            "intervals": us}


def check_worker(process_id: int, port: int, calls: int) -> None:
    """One of two processes timing `preemption_sync` alone: prints microseconds per call."""
    import jax

    from genart_jax import parallel

    jax.distributed.initialize(f"127.0.0.1:{port}", 2, process_id)
    assert parallel.preemption_sync_available()
    t0 = time.perf_counter()
    for i in range(1, calls + 1):
        if parallel.preemption_sync(i):
            raise RuntimeError("a sync point without a notice")
    print(f"us_per_call {1e6 * (time.perf_counter() - t0) / calls:.3f}", flush=True)


def check_cost(calls: int) -> list[float]:
    """Both processes' microseconds per `preemption_sync` call."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.preemption_sync", "--worker",
                               str(i), "--port", str(port), "--calls", str(calls)], env=env,
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    return [float(o.split("us_per_call ")[1]) for o in outs]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    if a.worker is not None:
        check_worker(a.worker, a.port, a.calls)
        return 0
    check = check_cost(a.calls)
    print(f"preemption_sync alone: {check} us per call (two processes)", flush=True)
    runs = []
    for r in range(a.rounds):
        order = (True, False) if r % 2 == 0 else (False, True)  # alternate who goes first
        for sync in order:
            load = os.getloadavg()[0]
            row = {**run_pair(sync, a.steps), "round": r, "load_before": load}
            runs.append(row)
            print(f"round {r} sync={sync}: {row['us_per_step_median']} us/step, hung "
                  f"{row['hung']} (load {load:.1f})", flush=True)
    summary = {s: statistics.median([x["us_per_step_median"] for x in runs
                                     if x["sync"] == s and not x["hung"]] or [float("nan")])
               for s in (True, False)}
    hangs = {s: sum(x["hung"] for x in runs if x["sync"] == s) for s in (True, False)}
    text = (f"The check alone: {check[0]:.2f} and {check[1]:.2f} us per call (processes 0 and "
            f"1, {a.calls} calls, no notice, load {os.getloadavg()[0]:.1f}). "
            f"Two processes, tiny DCGAN, k=1, {a.steps} steps, {a.rounds} rounds interleaved: "
            f"sync point every call {summary[True]:.0f} us/step, logged steps only "
            f"{summary[False]:.0f} us/step (ratio {summary[True] / summary[False]:.3f}); "
            f"runs that hung (no progress in 240 s): sync {hangs[True]}, logged steps only "
            f"{hangs[False]}; "
            f"loads {[round(x['load_before'], 1) for x in runs]}; "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "results.json").write_text(json.dumps({"check_us_per_call": check,
                                                        "runs": runs, "summary_us": {
            "sync": summary[True], "no_sync": summary[False]}}, indent=2))
        (a.out / "results.md").write_text(
            f"# Per-call signal agreement, cost\n\nCommand: `python -m benchmarks.preemption_sync"
            f" --rounds {a.rounds} --steps {a.steps} --calls {a.calls} --out {a.out}` (shared "
            f"2-core machine)\n\n"
            f"{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
