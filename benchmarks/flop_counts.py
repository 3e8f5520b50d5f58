"""FLOPs of each config's train step, counted three ways: from the jaxpr as an accelerator
lowers it (`genart_jax.flops`, the model's FLOPs that `genart bench` reports MFU in), from the
jaxpr as the CPU lowers it (the CPU forms' extra work included), and by XLA's cost analysis of
the CPU program (lowered, and compiled with XLA's own forms of `resample_conv`, the count
`genart bench` used before).

    python -m benchmarks.flop_counts --configs gan_mlp_digits,dcgan_digits \\
        --out benchmarks/results/flop-counts
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

from genart_jax.bench import harness as bench
from genart_jax.config import load_config
from genart_jax.flops import count_jaxpr, without_dead_code
from genart_jax.train.programs import step_and_arguments

CONFIGS = ("gan_mlp_digits", "dcgan_digits", "bench_dcgan32", "vae_digits", "bench_convvae32",
           "r3gan_digits")


def counts(name: str, dtype: str) -> dict:
    """One config's row: every count in GFLOP per step, and how long each took."""
    cfg = load_config(name, {"model.dtype": dtype})
    t0 = time.perf_counter()
    step, args = step_and_arguments(cfg, jax.devices("cpu")[0])
    traced = step.trace(*args)
    jaxpr = without_dead_code(traced.jaxpr)
    model, cpu = count_jaxpr(jaxpr, "cuda"), count_jaxpr(jaxpr, "cpu")
    t1 = time.perf_counter()
    lowered = traced.lower().cost_analysis()["flops"]
    t2 = time.perf_counter()
    compiled = bench.step_flops(cfg)
    t3 = time.perf_counter()
    g = 1e9
    return {"config": name, "dtype": dtype, "batch": cfg.train.batch_size,
            "model_matmul": model.matmul / g, "model_elementwise": model.elementwise / g,
            "cpu_matmul": cpu.matmul / g, "cpu_total": cpu.total / g,
            "xla_cpu_lowered": lowered / g, "xla_cpu_compiled_xla_forms": compiled / g,
            "count_s": t1 - t0, "xla_compile_s": t3 - t2}


def markdown(rows: list[dict]) -> str:
    lines = ["| config | dtype | batch | model GFLOP (jaxpr, cuda: MFU's) | + elementwise | "
             "CPU program, jaxpr: matmul / total | XLA:CPU lowered | XLA:CPU compiled, XLA's "
             "resample forms (old bench) | old / model | trace+count s | XLA compile s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['dtype']} | {r['batch']} | {r['model_matmul']:.3f} | "
            f"{r['model_elementwise']:.3f} | {r['cpu_matmul']:.3f} / {r['cpu_total']:.3f} | "
            f"{r['xla_cpu_lowered']:.3f} | {r['xla_cpu_compiled_xla_forms']:.3f} | "
            f"{r['xla_cpu_compiled_xla_forms'] / r['model_matmul']:.2f} | {r['count_s']:.1f} | "
            f"{r['xla_compile_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--dtypes", default="float32")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    rows = [counts(c, d) for c in a.configs.split(",") for d in a.dtypes.split(",")]
    md = markdown(rows)
    print(md)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "results.json").write_text(json.dumps(rows, indent=2))
        (a.out / "results.md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
