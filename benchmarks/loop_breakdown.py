"""Where the loop's floor goes: the pieces of one call of the floor case (tiny MLP GAN, hidden
width 8, batch 8) timed alone in one process, rounds interleaved, beside the whole loop
(`train_and_evaluate`, microseconds per step from its logged rates).

    python -m benchmarks.loop_breakdown --ks 1,16 --out benchmarks/results/cpu-2core-loop-floor-2

Pieces, per call of k steps, each in microseconds per step:
- `step`: the compiled call with its batch already placed, blocked on (dispatch + compute);
- `dispatch`: the same call without waiting for it (what the host spends to launch it);
- `input`: k batches from the input pipeline's iterator (in-memory digits, as the loop has);
- `stack+put`: those k batches stacked and placed on the device (`feed.stack`, `put_batch`);
- `queue hop`: one item through a `prefetch` thread and back, times (k + 1) (the loop's
  input prefetch hands over k batches per call, its feeder one call);
- `loop`: the whole `train_and_evaluate` run, median of its logged intervals.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import jax

from genart_jax.config import load_config
from genart_jax.data import make_input, prefetch
from genart_jax.train.feed import stack
from genart_jax.train.loop import build_training, train_and_evaluate

FLOOR = {"model.mlp_gan.g_hidden": "(8,)", "model.mlp_gan.d_hidden": "(8,)",
         "train.batch_size": "8", "train.log_every": "96", "train.sample_every": "0",
         "checkpoint.every_steps": "0", "sample.num": "4"}


def _per_step(fn, calls: int, k: int) -> float:
    """Median over 5 repeats of `calls` calls of `fn`, in microseconds per step."""
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls / k * 1e6)
    return statistics.median(times)


def pieces(k: int, calls: int) -> dict[str, float]:
    """The timed pieces of one call of k steps (see the module docstring)."""
    cfg = load_config("gan_mlp_digits", FLOOR)
    driver, init_fn = build_training(cfg, jax.devices()[:1], k)
    holder = {"state": driver.init_state(init_fn, jax.random.PRNGKey(0))}
    it, _ = make_input(cfg.data, global_batch=8, seed=0)
    batches = [next(it)[0] for _ in range(k)]
    placed = driver.put_batch(stack(batches))

    def step():
        holder["state"], m = driver.step(holder["state"], placed)
        jax.block_until_ready(m)

    def dispatch():
        holder["state"], _ = driver.step(holder["state"], placed)

    step()  # compile
    out = {"step": _per_step(step, calls, k)}
    out["dispatch"] = _per_step(dispatch, calls, k)
    jax.block_until_ready(holder["state"])
    out["input"] = _per_step(lambda: [next(it) for _ in range(k)], calls, k)
    out["stack+put"] = _per_step(
        lambda: jax.block_until_ready(driver.put_batch(stack(batches))), calls, k)
    hops = prefetch(iter(lambda: 0, 1), 2)  # an endless source through one prefetch thread
    out["queue hop"] = _per_step(lambda: [next(hops) for _ in range(k + 1)], calls, k)
    hops.close()
    return out


def loop(k: int, steps: int) -> float:
    """The whole loop's median microseconds per step (logged intervals, compile excluded)."""
    cfg = load_config("gan_mlp_digits", {**FLOOR, "train.steps": str(steps),
                                         "train.steps_per_call": str(k)})
    workdir = Path(tempfile.mkdtemp(prefix="loop_breakdown-"))
    train_and_evaluate(cfg, workdir, progress=False, resume=False)
    records = [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(1e6 * 8 / r["images_per_sec"] for r in records[1:-1])


def main(argv: list[str] | None = None) -> int:
    from genart_jax.cpu_tuning import tune_for_cpu

    tune_for_cpu()  # as the CLI does
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ks", default="1,16")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    ks = [int(k) for k in a.ks.split(",")]
    rows = []
    for r in range(a.rounds):
        for k in ks if r % 2 == 0 else ks[::-1]:
            load = os.getloadavg()
            row = {"k": k, "round": r, **pieces(k, max(1, a.calls // k * 4)),
                   "loop": loop(k, a.steps), "load": load}
            rows.append(row)
            print(json.dumps(row), flush=True)
    names = ["step", "dispatch", "input", "stack+put", "queue hop", "loop"]
    lines = [f"`python -m benchmarks.loop_breakdown --ks {a.ks} --rounds {a.rounds} --steps "
             f"{a.steps}` ({time.strftime('%Y-%m-%d %H:%M')}, shared 2-core machine; load "
             f"averages per row). Microseconds per step, median over rounds.", "",
             "| k | " + " | ".join(names) + " | loop - (step + input + stack+put + queue hop) "
             "| loads |", "|---|" + "---|" * (len(names) + 2)]
    for k in ks:
        mine = [x for x in rows if x["k"] == k]
        med = {n: statistics.median(x[n] for x in mine) for n in names}
        rest = med["loop"] - med["step"] - med["input"] - med["stack+put"] - med["queue hop"]
        loads = "; ".join("/".join(f"{v:.1f}" for v in x["load"]) for x in mine)
        lines.append(f"| {k} | " + " | ".join(f"{med[n]:.0f}" for n in names)
                     + f" | {rest:.0f} | {loads} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "breakdown.json").write_text(json.dumps(rows, indent=2))
        (a.out / "breakdown.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
