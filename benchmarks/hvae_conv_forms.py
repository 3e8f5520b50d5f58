"""The HVAE's bottleneck convolutions (bench_hvae32: width 128, bottleneck 32 channels), forward
plus backward, in each form, on the CPU, against PyTorch eager: the 3x3 stride-1 SAME conv
32->32 at 32x32 and 16x16 (and 8x8, 4x4), the 1x1 convs 128->32 and 32->128 at 32x32.

Each case times jit(grad of sum(conv(x, w) * g) w.r.t. (x, w)) (a fixed random cotangent g, so
the backward is not of a constant), interleaved in rounds (`genart_jax.bench.interleave`):

- xla: `lax.conv_general_dilated` (what flax's nn.Conv runs);
- im2col (3x3): the 9 shifted slices of the zero-padded input concatenated on channels, one dot
  with the (9 Cin, Cout) kernel; JAX differentiates that;
- shifted (3x3): 9 dots (Cin -> Cout), one per tap, of the shifted slices, summed;
- dot (1x1): `jnp.einsum` over channels;
- torch / torch_cl: `torch.nn.functional.conv2d` with autograd, NCHW contiguous and channels_last.

Each JAX form is checked against XLA's (outputs and both gradients, float32, 1e-5 relative to
the largest value). XLA:CPU's convolutions run as the CLI runs them (`cpu_tuning.tune_for_cpu`:
Eigen's, freed host memory kept) unless --no-tune; torch gets 2 threads (--threads).

    python -m benchmarks.hvae_conv_forms [--steps 20 --rounds 4] [--frameworks jax|torch]
    python -m benchmarks.hvae_conv_forms --count bench_hvae32  # the convs in a config's HVAE

`--count` lists the convolutions of the config's HVAE training forward pass (its jaxpr) by
resolution, kernel and channels, with their forward+backward FLOPs (3x the forward's).
"""

from __future__ import annotations

import argparse
import statistics


def im2col_conv(x, w):
    """SAME stride-1 k x k conv, NHWC x HWIO, as one dot on the shifted slices."""
    import jax.numpy as jnp
    kh, kw, cin, cout = w.shape
    n, h, wd, _ = x.shape
    p = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    cols = jnp.concatenate([p[:, i:i + h, j:j + wd, :] for i in range(kh) for j in range(kw)],
                           axis=-1)
    return jnp.dot(cols, w.reshape(kh * kw * cin, cout))


def shifted_conv(x, w):
    """SAME stride-1 k x k conv as k*k dots (one per tap, Cin -> Cout) of shifted slices of the
    zero-padded input, summed: no (N, H, W, k*k*Cin) buffer."""
    import jax.numpy as jnp
    kh, kw, _, _ = w.shape
    n, h, wd, _ = x.shape
    p = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    return sum(jnp.dot(p[:, i:i + h, j:j + wd, :], w[i, j])
               for i in range(kh) for j in range(kw))


def xla_conv(x, w):
    from jax import lax
    return lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def dot_conv(x, w):
    import jax.numpy as jnp
    return jnp.einsum("nhwc,cd->nhwd", x, w[0, 0])


def count_convs(config: str) -> None:
    """Print the convolutions of `config`'s HVAE forward pass, by (size, k, cin, cout)."""
    import collections

    import jax
    import jax.numpy as jnp

    from genart_jax.config import load_config
    from genart_jax.models import hvae

    cfg = load_config(config)
    model = hvae.build(cfg.model.hvae, cfg)
    n, s = cfg.train.batch_size, cfg.data.image_size
    x = jnp.zeros((n, s, s, cfg.data.channels), jnp.uint8)
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), x, key=jax.random.key(1)))
    jaxpr = jax.make_jaxpr(lambda v: model.apply(v, x, key=jax.random.key(1)))(v)
    counts: collections.Counter = collections.Counter()

    def walk(j):
        for e in j.eqns:
            if e.primitive.name == "conv_general_dilated":
                lhs, rhs = e.invars[0].aval.shape, e.invars[1].aval.shape
                counts[(lhs[1], rhs[0], rhs[2], rhs[3])] += 1
            for sub in jax.extend.core.jaxprs_in_params(e.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    total = 0.0
    print(f"| res | kernel | cin->cout | count | fwd+bwd GFLOP (batch {n}) |")
    print("|---|---|---|---|---|")
    for (r, k, ci, co), c in sorted(counts.items(), key=lambda t: (-t[0][0], -t[0][1], t[0])):
        f = 3 * 2 * n * r * r * k * k * ci * co * c / 1e9
        total += f
        print(f"| {r} | {k}x{k} | {ci}->{co} | {c} | {f:.2f} |")
    print(f"total: {sum(counts.values())} convs, {total:.1f} GFLOP fwd+bwd")


# name: (batch, size, k, cin, cout)
CASES = {"3x3 32->32 @32": (32, 32, 3, 32, 32), "3x3 32->32 @16": (32, 16, 3, 32, 32),
         "3x3 32->32 @8": (32, 8, 3, 32, 32), "3x3 32->32 @4": (32, 4, 3, 32, 32),
         "1x1 128->32 @32": (32, 32, 1, 128, 32), "1x1 32->128 @32": (32, 32, 1, 32, 128)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed calls per form and case")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=2, help="torch's intra-op threads")
    p.add_argument("--no-tune", action="store_true", help="skip cpu_tuning (YNNPACK convs)")
    p.add_argument("--frameworks", default="jax,torch",
                   help="jax, torch or both (torch alone: no XLA threads in the process)")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--count", metavar="CONFIG", help="only list CONFIG's HVAE convolutions")
    args = p.parse_args(argv)
    if args.count:
        import jax.extend  # noqa: F401
        count_convs(args.count)
        return 0
    if not args.no_tune:
        from genart_jax import cpu_tuning
        print("cpu_tuning:", cpu_tuning.tune_for_cpu())
    import jax
    import jax.numpy as jnp
    import numpy as np

    from genart_jax.bench.interleave import Timed, time_interleaved

    torch = None
    frameworks = args.frameworks.split(",")
    if "torch" in frameworks:
        import torch
        torch.set_num_threads(args.threads)

    rows = []
    for case in args.cases.split(","):
        n, s, k, cin, cout = CASES[case]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, s, s, cin), np.float32)
        w = (rng.standard_normal((k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32)
        g = rng.standard_normal((n, s, s, cout), np.float32)
        xj, wj, gj = map(jnp.asarray, (x, w, g))
        forms = ({"xla": xla_conv, "im2col": im2col_conv, "shifted": shifted_conv} if k > 1
                 else {"xla": xla_conv, "dot": dot_conv}) if "jax" in frameworks else {}
        ref = None
        timed = []
        for name, f in forms.items():
            fb = jax.jit(jax.value_and_grad(lambda x, w, f=f, gj=gj: jnp.sum(f(x, w) * gj),
                                            argnums=(0, 1)))
            out = jax.block_until_ready((jax.jit(f)(xj, wj), fb(xj, wj)[1]))
            flat = [np.asarray(out[0]), *map(np.asarray, out[1])]
            if ref is None:
                ref = flat
            else:
                err = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
                          for a, b in zip(flat, ref, strict=True))
                print(f"{case} {name}: max rel err vs xla (out, dx, dw) {err:.2e}")
                assert err < 1e-5, err
            timed.append(Timed(name, lambda fb=fb, xj=xj, wj=wj: jax.block_until_ready(fb(xj, wj))))
        if torch is not None:
            import torch.nn.functional as F  # noqa: N812
            xt0 = torch.from_numpy(x).permute(0, 3, 1, 2)
            wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous().requires_grad_(True)
            gt0 = torch.from_numpy(g).permute(0, 3, 1, 2)
            for name, fmt in (("torch", torch.contiguous_format),
                              ("torch_cl", torch.channels_last)):
                xt = xt0.contiguous(memory_format=fmt).requires_grad_(True)
                gt = gt0.contiguous(memory_format=fmt)
                wt_f = wt.detach().contiguous(memory_format=fmt).requires_grad_(True)

                def call(xt=xt, gt=gt, wt_f=wt_f, k=k):
                    xt.grad = wt_f.grad = None
                    y = F.conv2d(xt, wt_f, padding=k // 2)
                    (y * gt).sum().backward()
                    return xt.grad, wt_f.grad
                dx, dw = call()
                if ref is not None:
                    err = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in
                              ((dx.permute(0, 2, 3, 1).numpy(), ref[1]),
                               (dw.permute(2, 3, 1, 0).numpy(), ref[2])))
                    print(f"{case} {name}: max rel err vs xla (dx, dw) {err:.2e}")
                timed.append(Timed(name, call))
        for t in timed:  # warm-up
            for _ in range(3):
                t.call()
        time_interleaved(timed, args.steps, args.rounds)
        med = {t.name: statistics.median(t.step_s) * 1e3 for t in timed}
        rounds = {t.name: [r * 1e3 for r in t.round_medians] for t in timed}
        flops = 3 * 2 * n * s * s * k * k * cin * cout
        for name in med:
            r = ", ".join(f"{v:.2f}" for v in rounds[name])
            vs = f"; xla / this {med['xla'] / med[name]:.2f}x" if "xla" in med else ""
            print(f"{case} {name}: {med[name]:.2f} ms ({flops / med[name] / 1e6:.1f} GFLOP/s"
                  f"{vs}) rounds [{r}]", flush=True)
        rows.append((case, med, {t.name: min(t.round_medians) * 1e3 for t in timed}))
    names = sorted({k for _, m, _ in rows for k in m}, key=lambda s: (s != "xla", s))
    print("\nms per fwd+bwd, median over all calls (fastest round's median)")
    print("| case (batch 32) | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for case, med, best in rows:
        print(f"| {case} | " + " | ".join(f"{med[k]:.2f} ({best[k]:.2f})" if k in med else ""
                                         for k in names) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
