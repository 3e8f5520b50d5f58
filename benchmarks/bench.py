"""`genart bench`: train-step throughput per device, compile time, FLOPs, achieved FLOP/s and
MFU against a matmul peak measured in the same run, for device counts, both drivers, float32 and
bfloat16, and 1 vs k steps fused per call; PyTorch peers in the same invocation; results.json,
results.md and PNG plots in an output folder.

    genart bench --configs bench_dcgan32 --out benchmarks/results/cpu
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genart_jax.config import apply_overrides, load_config
from genart_jax.train.loop import build_training


@dataclasses.dataclass(frozen=True)
class Case:
    config: str
    devices: int
    driver: str
    dtype: str
    steps_per_call: int
    batch: int


def matmul_peak(dtype: str, n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of an n^3 matmul on device 0 in `dtype` (median of `reps`): the practical peak."""
    dt = jnp.float32 if dtype == "float32" else jnp.bfloat16
    a = jax.device_put(jnp.ones((n, n), dt), jax.devices()[0])
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def step_flops(cfg) -> float:
    """FLOPs of one train step on the whole global batch: XLA's cost analysis of the step
    compiled for a single CPU-or-default device (SPMD counts are per device; GPU counts are
    unreliable, see DESIGN.md)."""
    try:
        device = jax.devices("cpu")[0]
    except RuntimeError:
        device = jax.devices()[0]
    driver, init_fn = build_training(apply_overrides(cfg, {"train.driver": "shard_map"}),
                                     [device])
    state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=driver.replicated),
        jax.eval_shape(init_fn, jax.random.PRNGKey(0)))
    batch = _sds(driver, _batch(cfg, 1, abstract=True))
    cost = driver._step.lower(state, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost.get("flops", float("nan")))


def _sds(driver, batch):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                       sharding=driver.batch_sharding), batch)


def _batch(cfg, k: int, abstract: bool = False):
    s, c, b = cfg.data.image_size, cfg.data.channels, cfg.train.batch_size
    lead = (k,) if k > 1 else ()
    shape = (*lead, cfg.train.d_steps, b, s, s, c)
    if abstract:
        return {"image": np.zeros(shape, np.float32),
                "label": np.zeros(shape[:-3], np.int32)}
    rng = np.random.default_rng(0)
    return {"image": rng.uniform(-1, 1, shape).astype(np.float32),
            "label": rng.integers(0, 10, shape[:-3]).astype(np.int32)}


def time_case(case: Case, steps: int, warmup: int) -> dict[str, Any]:
    cfg = load_config(case.config, {"train.driver": case.driver, "model.dtype": case.dtype,
                                    "train.batch_size": str(case.batch)})
    k = case.steps_per_call
    driver, init_fn = build_training(cfg, jax.devices()[:case.devices], steps_per_call=k)
    state = driver.init_state(init_fn, jax.random.PRNGKey(0))
    batch = driver.put_batch(_batch(cfg, k))
    t0 = time.perf_counter()
    state, m = driver.step(state, batch)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        state, m = driver.step(state, batch)
    jax.block_until_ready(m)
    calls = max(1, -(-steps // k))
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        state, m = driver.step(state, batch)
        jax.block_until_ready(m)
        times.append((time.perf_counter() - t0) / k)
    times.sort()
    med, p90 = statistics.median(times), times[int(0.9 * (len(times) - 1))]
    stats = jax.devices()[0].memory_stats() or {}
    images = case.batch * cfg.train.d_steps
    return {**dataclasses.asdict(case), "steps_timed": calls * k, "compile_s": compile_s,
            "step_s_median": med, "step_s_p90": p90, "images_per_sec": images / med,
            "images_per_sec_per_device": images / med / case.devices,
            "images_per_sec_p90": images / p90,
            "peak_bytes": stats.get("peak_bytes_in_use")}


def machine_info() -> dict[str, Any]:
    versions = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "torch"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    d = jax.devices()[0]
    return {"platform": platform.platform(), "processor": platform.processor(),
            "python": platform.python_version(), "backend": jax.default_backend(),
            "device_kind": d.device_kind, "device_count": jax.device_count(),
            "simulated_cpu_devices": jax.default_backend() == "cpu" and jax.device_count() > 1,
            "versions": versions, "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def run(configs: list[str], device_counts: list[int], drivers: list[str], dtypes: list[str],
        ks: list[int], batches: list[int] | None, steps: int, warmup: int, peers: bool,
        out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    print(f"{info['backend']} x{info['device_count']} ({info['device_kind']}), jax "
          f"{info['versions'].get('jax')}")
    if info["simulated_cpu_devices"]:
        print("NOTE: these are simulated CPU devices sharing the same cores: the device-count "
              "rows are not a scaling measurement.")
    peaks = {dt: matmul_peak(dt) for dt in dtypes}
    for dt, p in peaks.items():
        print(f"matmul peak {dt}: {p / 1e9:.1f} GFLOP/s")
    results = []
    for name in configs:
        base = load_config(name)
        for dt in dtypes:
            flops = step_flops(load_config(name, {"model.dtype": dt}))
            for b in batches or [base.train.batch_size]:
                for n in device_counts:
                    for drv in drivers:
                        for k in ks:
                            case = Case(name, n, drv, dt, k, b)
                            r = time_case(case, steps, warmup)
                            r["flops_per_step"] = flops * b / base.train.batch_size
                            achieved = r["flops_per_step"] / r["step_s_median"] / n
                            r["achieved_flops_per_device"] = achieved
                            r["mfu"] = achieved / peaks[dt]
                            results.append(r)
                            print(f"{name} {dt} batch {b} devices {n} {drv} k={k}: "
                                  f"{r['images_per_sec']:.0f} img/s "
                                  f"({r['images_per_sec_per_device']:.0f}/device), "
                                  f"compile {r['compile_s']:.1f} s, "
                                  f"{achieved / 1e9:.1f} GFLOP/s/device, MFU {r['mfu']:.1%}")
    peer_rows = []
    if peers:
        peer_rows = run_peers(configs, batches, steps, warmup)
    report = {"machine": info, "matmul_peak_flops": peaks, "results": results,
              "peers": peer_rows}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text(markdown(report))
    plot(report, out)
    print(f"wrote {out}/results.json, results.md and plots")
    return report


def peer_for(cfg) -> tuple[str, dict] | None:
    """(peer module name, keyword arguments of its time_steps) for a config with a PyTorch
    peer: DCGAN -> torch_dcgan, conv VAE -> torch_vae; None for the others."""
    if cfg.model.family == "gan" and cfg.model.arch == "dcgan":
        return "torch_dcgan", {"size": cfg.data.image_size, "nz": cfg.model.latent_dim}
    if cfg.model.family == "vae" and cfg.model.arch == "conv":
        o = cfg.optimizer
        if (o.name != "adam" or cfg.model.num_classes or cfg.vae.likelihood != "gaussian"
                or cfg.vae.scale != "learned" or not cfg.vae.discretized):
            return None  # the peer implements unconditional, discretised learned-scale only
        return "torch_vae", {"size": cfg.data.image_size, "channels": cfg.data.channels,
                             "latent": cfg.model.latent_dim, "width": cfg.model.vae_width,
                             "lr": o.learning_rate, "betas": (o.b1, o.b2), "eps": o.eps}
    return None


def run_peers(configs: list[str], batches: list[int] | None, steps: int,
              warmup: int = 3) -> list[dict]:
    try:
        import importlib

        import torch  # noqa: F401
    except ImportError:
        print("PyTorch not installed (pip install -e '.[bench]'): no peer rows")
        return []
    rows = []
    for name in configs:
        cfg = load_config(name)
        peer = peer_for(cfg)
        if peer is None:
            print(f"no PyTorch peer for {name} ({cfg.model.family}/{cfg.model.arch})")
            continue
        module = importlib.import_module(f"benchmarks.peers.{peer[0]}")
        for b in batches or [cfg.train.batch_size]:
            for compiled in (False, True):
                try:
                    r = module.time_steps(batch=b, steps=steps, warmup=warmup,
                                          compile_model=compiled, **peer[1])
                except Exception as e:  # torch.compile needs a working toolchain
                    print(f"peer {'torch.compile' if compiled else 'eager'} {name} failed: {e}")
                    continue
                r["config"] = name
                rows.append(r)
                print(f"peer {r['peer']} {name} batch {b}: {r['images_per_sec']:.0f} img/s")
    return rows


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"Machine: {m['backend']} x{m['device_count']} ({m['device_kind']}), "
             f"{m['processor'] or m['platform']}; jax {m['versions'].get('jax')}, "
             f"{m['date']}.", ""]
    if m["simulated_cpu_devices"]:
        lines += ["Simulated CPU devices share the same cores: rows with more devices are not a "
                  "scaling measurement.", ""]
    lines += ["| config | dtype | batch | devices | driver | steps/call | img/s | img/s/device "
              "| p90 img/s | compile s | GFLOP/step | GFLOP/s/device | MFU |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(
            f"| {r['config']} | {r['dtype']} | {r['batch']} | {r['devices']} | {r['driver']} | "
            f"{r['steps_per_call']} | {r['images_per_sec']:.0f} | "
            f"{r['images_per_sec_per_device']:.0f} | {r['images_per_sec_p90']:.0f} | "
            f"{r['compile_s']:.1f} | {r['flops_per_step'] / 1e9:.1f} | "
            f"{r['achieved_flops_per_device'] / 1e9:.1f} | {r['mfu']:.1%} |")
    if report["peers"]:
        # Each peer row is paired with its own config's rows at the same batch on one device,
        # in float32 (the peers run float32): the best of drivers and steps per call.
        lines += ["", "| peer | config | batch | img/s | ratio genart_jax best float32 / peer |",
                  "|---|---|---|---|---|"]
        for p in report["peers"]:
            ours = max((r["images_per_sec"] for r in report["results"]
                        if r["config"] == p["config"] and r["batch"] == p["batch"]
                        and r["devices"] == 1 and r["dtype"] == "float32"),
                       default=float("nan"))
            lines.append(f"| {p['peer']} ({p['threads']} threads) | {p['config']} | "
                         f"{p['batch']} | {p['images_per_sec']:.0f} | "
                         f"{ours / p['images_per_sec']:.2f}x |")
    peaks = ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in
                      report["matmul_peak_flops"].items())
    lines += ["", f"MFU is against the matmul peak measured in the same run: {peaks}.", ""]
    return "\n".join(lines)


def plot(report: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no plots")
        return
    rows = report["results"]
    for axis, fname in (("devices", "throughput_vs_devices.png"),
                        ("batch", "throughput_vs_batch.png")):
        if len({r[axis] for r in rows}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        keys = sorted({(r["config"], r["driver"], r["dtype"], r["steps_per_call"])
                       for r in rows})
        for key in keys:
            pts = sorted((r[axis], r["images_per_sec"]) for r in rows
                         if (r["config"], r["driver"], r["dtype"], r["steps_per_call"]) == key)
            ax.plot(*zip(*pts, strict=True), marker="o", label=" ".join(map(str, key)))
        ax.set_xlabel(axis)
        ax.set_ylabel("images/s")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)
