"""Per-pass timing of the k4/s2 convolution pair (`genart_jax.models.resample_conv`): every
implementation of the strided convolution, its transpose and the kernel gradient, at the layer
shapes of a DCGAN config, against PyTorch's (oneDNN) passes when PyTorch is installed. The
choices in `resample_conv` come from this table; rerun it on another machine to check them.

    python -m benchmarks.conv_passes --config bench_dcgan32 \
        --out benchmarks/results/cpu-2core-passes
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import jax

from benchmarks.interleave import Timed, time_interleaved
from genart_jax import host_memory
from genart_jax.config import DTYPES, load_config
from genart_jax.models import resample_conv as rc
from genart_jax.models.dcgan import num_stages


def dcgan_pairs(cfg) -> list[tuple[int, int, int]]:
    """(big map side, big channels, small channels) of every k4/s2 layer of a DCGAN config:
    the generator's upsampling layers and the discriminator's downsampling layers."""
    stages = num_stages(cfg.data.image_size)
    pairs = []
    for width in (cfg.model.g_width, cfg.model.d_width):  # both mirror widths x 2^i
        side, big = cfg.data.image_size, cfg.data.channels
        for i in range(stages):
            small = width * 2**i
            pairs.append((side, big, small))
            side, big = side // 2, small
    return sorted(set(pairs), reverse=True)


IMPLEMENTATIONS = {"down": rc.DOWN_FORMS, "up": rc.UP_FORMS, "kernel_grad": rc.KERNEL_GRAD_FORMS}


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="bench_dcgan32", help="a DCGAN config: its layer shapes")
    p.add_argument("--batch", type=int, default=None, help="default: the config's")
    p.add_argument("--reps", type=int, default=12)
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    p.add_argument("--out", default=None, help="folder for passes.json and passes.md")
    args = p.parse_args(argv)
    host_memory.keep_freed_memory_unless_opted_out()  # as the CLI does, before JAX's threads
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
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        report = {"config": args.config, "backend": jax.default_backend(), "dtype": args.dtype,
                  "batch": args.batch, "reps": args.reps,
                  "date": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}
        (out / "passes.json").write_text(json.dumps(report, indent=2))
        lines = [f"{args.config}, batch {args.batch}, {args.dtype}, {jax.default_backend()}, "
                 f"median ms of {args.reps} calls.",
                 "", "| big <-> small | pass | implementations (ms) | picked | PyTorch ms |",
                 "|---|---|---|---|---|"]
        for row in rows:
            shapes = "x".join(map(str, row["big"])) + " <-> " + "x".join(map(str, row["small"]))
            for name, t in row["jax_ms"].items():
                torch_ms = f"{row['torch_ms'][name]:.1f}" if row["torch_ms"] else "-"
                lines.append(f"| {shapes} | {name} | {_implementations(t)} | {t['picked']} | "
                             f"{torch_ms} |")
        (out / "passes.md").write_text("\n".join(lines) + "\n")
        print(f"wrote {out}/passes.json and passes.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
