"""The training loop through `genart train`, A/B: code trees (e.g. main's checkout "before" and
this one "after") and steps per call, each case a fresh CLI process, rounds interleaved so
that a shared machine's load hits every case alike.

    python -m benchmarks.train_loop --before /work/main --out benchmarks/results/cpu-2core-loop

Cases: the loop's floor (a tiny MLP GAN, hidden width 8, batch 8: microseconds per step from
metrics.jsonl's logged rates, compile excluded), the MLP GAN recipe, and the default run
(dcgan_digits, 2000 steps: wall time of the process). `--cases` picks some of them. The
floor runs each case at two step counts and reports CPU microseconds per step from the
difference (all threads; a shared machine inflates wall times, not CPU time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["--config", "gan_mlp_digits", "--config.model.mlp_gan.g_hidden=(8,)",
        "--config.model.mlp_gan.d_hidden=(8,)", "--config.train.batch_size=8",
        "--config.train.log_every=96", "--config.train.sample_every=0",
        "--config.checkpoint.every_steps=0", "--config.sample.num=4"]
# The floor runs twice per case, at these step counts: CPU seconds (all threads of the process,
# which waiting on a shared machine does not inflate) per step = the difference / 5000 steps.
FLOOR_STEPS = (1000, 6000)
MLP = ["--config", "gan_mlp_digits", "--config.train.steps=500",
       "--config.train.sample_every=0", "--config.checkpoint.every_steps=0"]
DEFAULT = []  # `genart train` as the README's default run: dcgan_digits, 2000 steps
SETS = {"floor": (TINY, 8), "mlp": (MLP, 64), "default": (DEFAULT, 64)}
STEPS = {"floor": FLOOR_STEPS}


def run_case(tree: Path, args: list[str], k: int | None, images_per_step: int) -> dict:
    """One `genart train` process of `tree`'s code; its wall time and per-step rates."""
    workdir = Path(tempfile.mkdtemp(prefix="train_loop-"))
    cmd = [sys.executable, "-m", "genart_jax.cli", "train", "--workdir", str(workdir),
           "--no-progress", *args]
    if k is not None:
        cmd.append(f"--config.train.steps_per_call={k}")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    records = [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_sec"] for r in records[1:-1]]  # the first log interval compiles
    us = [1e6 * images_per_step / r for r in rates]
    done = [ln for ln in out.stdout.splitlines() if ln.startswith("Done:")]
    return {"wall_s": wall, "cpu_s": cpu,
            "us_per_step_median": statistics.median(us) if us else None,
            "us_per_step_min": min(us) if us else None, "final": done[-1] if done else "",
            "load_avg": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", type=Path, required=True, help="the 'before' code tree")
    p.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1])
    p.add_argument("--cases", default="floor,mlp,default")
    p.add_argument("--ks", default="1,8,16", help="steps per call of the 'after' tree")
    p.add_argument("--default-ks", default="1,4", help="steps per call of the default run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    ks = [int(k) for k in a.ks.split(",")]
    results = []
    for name in a.cases.split(","):
        args, images = SETS[name]
        set_ks = [int(k) for k in a.default_ks.split(",")] if name == "default" else ks
        cases = [("before", a.before, None)] + [(f"after k={k}", a.after, k) for k in set_ks]
        for rnd in range(a.rounds if name != "default" else 1):
            for label, tree, k in cases:
                runs = [run_case(tree, [*args, f"--config.train.steps={n}"], k, images)
                        for n in STEPS[name]] if name in STEPS else [run_case(tree, args, k,
                                                                              images)]
                r = runs[-1]
                if len(runs) == 2:
                    n0, n1 = STEPS[name]
                    r["cpu_us_per_step"] = 1e6 * (runs[1]["cpu_s"] - runs[0]["cpu_s"]) / (n1 - n0)
                results.append({"set": name, "case": label, "round": rnd, **r})
                print(json.dumps(results[-1]), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    cmd = "python -m benchmarks.train_loop " + " ".join(argv if argv is not None else sys.argv[1:])
    (a.out / "results.json").write_text(json.dumps({"command": cmd, "results": results},
                                                   indent=2))
    lines = [f"`{cmd}` (load averages per row: the machine was shared)", "",
             "| set | case | round | wall s | CPU s | CPU us/step | us/step median | us/step min "
             "| load 1/5/15 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        us = r["us_per_step_median"]
        cpu_us = r.get("cpu_us_per_step")
        lines.append(f"| {r['set']} | {r['case']} | {r['round']} | {r['wall_s']:.1f} | "
                     f"{r['cpu_s']:.1f} | {cpu_us and f'{cpu_us:.0f}'} | "
                     f"{us and f'{us:.0f}'} | {r['us_per_step_min'] and int(r['us_per_step_min'])}"
                     f" | {' / '.join(f'{x:.1f}' for x in r['load_avg'])} |")
    (a.out / "results.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
