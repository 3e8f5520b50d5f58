"""Per-pass timing of the k4/s2 convolution pair (`genart_jax.models.resample_conv`): every
implementation of the strided convolution, its transpose and the kernel gradient, at the layer
shapes of a DCGAN config, against PyTorch's (oneDNN) passes when PyTorch is installed. The
choices in `resample_conv` come from this table; rerun it on another machine to check them.

    python -m benchmarks.conv_passes --config bench_dcgan32 --step \
        --out benchmarks/results/cpu-2core-passes

With `--step` it also counts how often one train step runs each pass (in its lowered
program), times the whole step against the PyTorch eager peer's, and estimates the step
genart_jax would take with every pass at PyTorch's time: where the rest of the gap lies.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

import jax

from genart_jax import cpu_convolutions, cpu_tuning
from genart_jax.bench.harness import Case, lower_step, prepare_case, prepare_peers
from genart_jax.bench.interleave import Timed, time_interleaved
from genart_jax.config import DTYPES, load_config
from genart_jax.models import resample_conv as rc
from genart_jax.models.dcgan import num_stages


def dcgan_pairs(cfg) -> list[tuple[int, int, int]]:
    """(big map side, big channels, small channels) of every k4/s2 layer of a DCGAN config:
    the generator's upsampling layers and the discriminator's downsampling layers."""
    stages = num_stages(cfg.data.image_size)
    pairs = []
    for width in (cfg.model.dcgan.g_width, cfg.model.dcgan.d_width):  # both mirror widths x 2^i
        side, big = cfg.data.image_size, cfg.data.channels
        for i in range(stages):
            small = width * 2**i
            pairs.append((side, big, small))
            side, big = side // 2, small
    return sorted(set(pairs), reverse=True)


IMPLEMENTATIONS = {"down": rc.DOWN_FORMS, "up": rc.UP_FORMS, "kernel_grad": rc.KERNEL_GRAD_FORMS}


def _pair_of(name: str, a, b) -> tuple[int, int, int]:
    """(big map side, big channels, small channels) of one call of rc.down(b, w), rc.up(s, w)
    or rc.kernel_grad(b, s)."""
    if name == "up":
        return 2 * a.shape[1], b.shape[2], b.shape[3]
    return a.shape[1], a.shape[3], b.shape[3]  # down and kernel_grad: a is the big map


def pass_counts(cfg) -> collections.Counter:
    """How many times one train step of `cfg` (one device, the config's batch and dtype) runs
    each pass: {(pass, big side, big channels, small channels): count}. Each call of
    `resample_conv.down`, `up` and `kernel_grad` while the step is traced gets a named scope of
    its own; a call counts if any of its operations is left in the lowered step, after JAX has
    dropped unused computations. (Tracing alone overcounts: the discriminator's backward pass
    in the generator update also traces kernel gradients, which nothing uses. The compiled
    program undercounts: XLA's rewrites drop the scope from some convolutions.)"""
    originals = {name: getattr(rc, name) for name in IMPLEMENTATIONS}
    calls = itertools.count()

    def scoped(name):
        def run(a, b, *forms):
            pair = "_".join(map(str, _pair_of(name, a, b)))
            with jax.named_scope(f"k4s2_{name}_{pair}_{next(calls)}"):
                return originals[name](a, b, *forms)
        return run

    try:
        for name in IMPLEMENTATIONS:
            setattr(rc, name, scoped(name))
        hlo = lower_step(cfg, jax.devices()[0]).as_text(debug_info=True)
    finally:
        for name, f in originals.items():
            setattr(rc, name, f)
    found = set(re.findall(r"k4s2_(down|up|kernel_grad)_(\d+)_(\d+)_(\d+)_(\d+)", hlo))
    return collections.Counter((name, int(side), int(cb), int(cs))
                               for name, side, cb, cs, _ in found)


def step_ceiling(rows: list[dict], counts: collections.Counter, jax_step_ms: float,
                 torch_step_ms: float | None) -> dict[str, Any]:
    """Per train step: the time in the k4/s2 passes at `rows`' timings (the picked forms, and
    PyTorch's passes), and the step genart_jax would take if its passes ran at PyTorch's speed:
    the measured step minus the picked passes plus PyTorch's. Pass timings are of each pass
    alone, so this is an estimate."""
    jax_passes = torch_passes = 0.0
    for row in rows:
        pair = (row["big"][0], row["big"][2], row["small"][2])
        for name, t in row["jax_ms"].items():
            n = counts.get((name, *pair), 0)
            jax_passes += n * t[t["picked"]]
            torch_passes += n * row["torch_ms"][name] if row["torch_ms"] else float("nan")
    ceiling = jax_step_ms - jax_passes + torch_passes
    return {"jax_step_ms": jax_step_ms, "torch_eager_step_ms": torch_step_ms,
            "jax_passes_ms": jax_passes, "torch_passes_ms": torch_passes,
            "jax_rest_ms": jax_step_ms - jax_passes,
            "torch_rest_ms": None if torch_step_ms is None else torch_step_ms - torch_passes,
            "ceiling_step_ms": ceiling,
            "ceiling_ratio": None if torch_step_ms is None else torch_step_ms / ceiling,
            "ratio": None if torch_step_ms is None else torch_step_ms / jax_step_ms}


def time_steps(config: str, batch: int, dtype: str, steps: int) -> tuple[float, float | None]:
    """Median ms per train step of genart_jax (one device, jit+shard_map, one step per call)
    and of the PyTorch eager peer (None without PyTorch), timed interleaved."""
    t, _ = prepare_case(Case(config, 1, "shard_map", dtype, 1, batch), 2)
    timed = [t] + [p for p, _ in prepare_peers(config, [batch], 2, [dtype], compiled=(False,))]
    time_interleaved(timed, steps, rounds=2)
    ms = [1e3 * x.summary()["step_s_median"] for x in timed]  # already per step
    return ms[0], (ms[1] if len(ms) > 1 else None)


def _median_ms(fn, reps: int) -> float:
    """Median ms of `reps` calls of `fn` after one warm-up call."""
    fn()
    timed = Timed("pass", fn)
    time_interleaved([timed], steps=reps, rounds=1, pause_s=0)
    return 1e3 * timed.summary()["step_s_median"]


def _implementations(t: dict[str, Any]) -> str:
    return ", ".join(f"{impl} {ms:.1f}" for impl, ms in t.items() if impl != "picked")


def time_jax(batch: int, side: int, cb: int, cs: int, reps: int, dtype: str = "float32"
             ) -> dict[str, dict[str, float]]:
    """ms per call of each implementation of each pass in `dtype`, and which one
    `resample_conv` picks."""
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    b = jax.random.normal(k[0], (batch, side, side, cb), dtype)
    s = jax.random.normal(k[1], (batch, side // 2, side // 2, cs), dtype)
    w = (0.02 * jax.random.normal(k[2], (4, 4, cb, cs))).astype(dtype)
    args = {"down": (b, w), "up": (s, w), "kernel_grad": (b, s)}
    out = {}
    for name, impls in IMPLEMENTATIONS.items():
        out[name] = {}
        for impl, fn in impls.items():
            f = jax.jit(fn)
            out[name][impl] = _median_ms(lambda f=f, a=args[name]: jax.block_until_ready(f(*a)),
                                         reps)
        out[name]["picked"] = {"down": rc.down_form(s.shape, cb, dtype),
                               "up": rc.up_form(s.shape, cb, dtype),
                               "kernel_grad": rc.kernel_grad_form(s.shape, cb, dtype)}[name]
    return out


def time_torch(batch: int, side: int, cb: int, cs: int, reps: int, dtype: str = "float32"
               ) -> dict[str, float] | None:
    """ms per call of PyTorch's three passes of Conv2d(cb, cs, 4, 2, 1) in `dtype`: forward
    (down), input gradient (up), weight gradient; None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    dt = getattr(torch, dtype)
    conv = torch.nn.Conv2d(cb, cs, 4, 2, 1, bias=False).to(dt)
    x = torch.randn(batch, cb, side, side, dtype=dt, requires_grad=True)
    g = torch.randn(batch, cs, side // 2, side // 2, dtype=dt)
    with torch.no_grad():
        fwd = _median_ms(lambda: conv(x), reps)
    y = conv(x)
    return {"down": fwd,
            "up": _median_ms(lambda: torch.autograd.grad(y, x, g, retain_graph=True), reps),
            "kernel_grad": _median_ms(
                lambda: torch.autograd.grad(y, conv.weight, g, retain_graph=True), reps)}


def _step_summary(step: dict[str, Any], batch: int) -> str:
    def img_s(ms):
        return f"{batch / ms * 1e3:.0f} img/s"
    text = (f"Whole step (median, interleaved): genart_jax {step['jax_step_ms']:.1f} ms "
            f"({img_s(step['jax_step_ms'])}), of which {step['jax_passes_ms']:.1f} ms in the "
            f"k4/s2 passes at the timings above.")
    if step["torch_eager_step_ms"] is None:
        return text
    return text + (
        f" PyTorch eager {step['torch_eager_step_ms']:.1f} ms "
        f"({img_s(step['torch_eager_step_ms'])}), of which {step['torch_passes_ms']:.1f} ms in "
        f"its passes: genart_jax {step['ratio']:.2f}x. With every pass at PyTorch's time, "
        f"genart_jax's step would take about {step['ceiling_step_ms']:.1f} ms "
        f"({img_s(step['ceiling_step_ms'])}, {step['ceiling_ratio']:.2f}x PyTorch eager).")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="bench_dcgan32", help="a DCGAN config: its layer shapes")
    p.add_argument("--batch", type=int, default=None, help="default: the config's")
    p.add_argument("--reps", type=int, default=12)
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    p.add_argument("--out", default=None, help="folder for passes.json and passes.md")
    p.add_argument("--step", action="store_true",
                   help="also count the passes of one train step, time the whole step and "
                        "the PyTorch eager peer's, and estimate the step with PyTorch-speed "
                        "passes")
    p.add_argument("--steps", type=int, default=20, help="timed steps each, with --step")
    args = p.parse_args(argv)
    cpu_tuning.tune_for_cpu()  # as the CLI does, before JAX starts
    cfg = load_config(args.config)
    args.batch = args.batch or cfg.train.batch_size
    rows = []
    for side, cb, cs in dcgan_pairs(cfg):
        row = {"big": [side, side, cb], "small": [side // 2, side // 2, cs],
               "jax_ms": time_jax(args.batch, side, cb, cs, args.reps, args.dtype),
               "torch_ms": time_torch(args.batch, side, cb, cs, args.reps, args.dtype)}
        rows.append(row)
        for name, t in row["jax_ms"].items():
            ref = f"; torch {row['torch_ms'][name]:.1f}" if row["torch_ms"] else ""
            print(f"{side}x{side}x{cb} <-> {side // 2}x{side // 2}x{cs} {name}: "
                  f"{_implementations(t)} ms "
                  f"(picked: {t['picked']}){ref}", flush=True)
    step = None
    if args.step:
        step_cfg = load_config(args.config, {"model.dtype": args.dtype,
                                             "train.batch_size": str(args.batch)})
        counts = pass_counts(step_cfg)
        step = step_ceiling(rows, counts, *time_steps(args.config, args.batch, args.dtype,
                                                       args.steps))
        step["counts"] = [{"pass": k[0], "big": [k[1], k[1], k[2]],
                           "small": [k[1] // 2, k[1] // 2, k[3]], "count": n}
                          for k, n in sorted(counts.items())]
        print(_step_summary(step, args.batch))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        eigen = cpu_convolutions.in_effect()
        report = {"config": args.config, "backend": jax.default_backend(), "dtype": args.dtype,
                  "batch": args.batch, "reps": args.reps, "eigen_convolutions": eigen,
                  "date": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows, "step": step}
        (out / "passes.json").write_text(json.dumps(report, indent=2))
        lines = [f"{args.config}, batch {args.batch}, {args.dtype}, {jax.default_backend()}, "
                 f"median ms of {args.reps} calls"
                 + (f"; XLA:CPU convolutions: {'Eigen' if eigen else 'YNNPACK'}."
                    if report["backend"] == "cpu" else "."),
                 "", "| big <-> small | pass | implementations (ms) | picked | PyTorch ms |",
                 "|---|---|---|---|---|"]
        for row in rows:
            shapes = "x".join(map(str, row["big"])) + " <-> " + "x".join(map(str, row["small"]))
            for name, t in row["jax_ms"].items():
                torch_ms = f"{row['torch_ms'][name]:.1f}" if row["torch_ms"] else "-"
                lines.append(f"| {shapes} | {name} | {_implementations(t)} | {t['picked']} | "
                             f"{torch_ms} |")
        if step:
            lines += ["", "Passes per train step: " + ", ".join(
                f"{c['pass']} {'x'.join(map(str, c['big']))} x{c['count']}"
                for c in step["counts"]) + ".", "", _step_summary(step, args.batch)]
        (out / "passes.md").write_text("\n".join(lines) + "\n")
        print(f"wrote {out}/passes.json and passes.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
