"""`genart bench`: train-step throughput per device, compile time, FLOPs, achieved FLOP/s and
MFU against a matmul peak measured in the same run, for device counts, both drivers, float32 and
bfloat16, and 1 vs k steps fused per call; PyTorch peers in the same invocation; results.json,
results.md and PNG plots in an output folder.

FLOPs are the model's, counted from the traced step (`genart_jax.flops`: the dots and
convolutions of XLA's own forms, 2 per multiply-add), the same on every backend and in both
dtypes; XLA:CPU's cost analysis of the same step is shown beside them where it differs.

    genart bench --configs bench_dcgan32 --out benchmarks/results/cpu
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import itertools
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genart_jax import cpu_convolutions, host_memory
from genart_jax.bench.interleave import Timed, time_interleaved
from genart_jax.config import apply_overrides, load_config
from genart_jax.train import programs
from genart_jax.train.loop import build_training


@dataclasses.dataclass(frozen=True)
class Case:
    config: str
    devices: int
    driver: str
    dtype: str
    steps_per_call: int
    batch: int


def matmul_forms(dtype: str) -> list[Callable[[jnp.ndarray], jnp.ndarray]]:
    """The forms of x @ x `matmul_peak` times in `dtype`: the product in that dtype and, for
    bfloat16, one accumulated and returned in float32. On XLA:CPU only the second uses the
    bfloat16 dot-product instructions of CPUs that have them (AVX512-BF16 on this project's
    machine: 384 against 186 GFLOP/s at 2048^3), so timing the first alone understated the
    bfloat16 peak, and overstated bfloat16 MFU, by about 2x."""
    forms = [jax.jit(lambda x: x @ x)]
    if dtype != "float32":
        forms.append(jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32)))
    return forms


def matmul_peak(dtype: str, n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of an n^3 matmul on device 0 in `dtype`: the fastest of `reps` calls of each of
    `matmul_forms`, the practical peak (a median let the MLP GAN at batch 1024 reach 104% MFU on
    a slow spell)."""
    dt = jnp.float32 if dtype == "float32" else jnp.bfloat16
    a = jax.device_put(jnp.ones((n, n), dt), jax.devices()[0])
    best = float("inf")
    for f in matmul_forms(dtype):
        f(a).block_until_ready()
        for _ in range(reps):
            t0 = time.perf_counter()
            f(a).block_until_ready()
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def model_flops(cfg) -> float:
    """The model's FLOPs in one train step on the whole global batch, the numerator of MFU on
    every backend: the dots and convolutions of the step as lowered for an accelerator, counted
    from its jaxpr (`programs.step_flops`; XLA's own convolution forms, no CPU form's extra
    work), the same count in float32 and bfloat16."""
    return programs.step_flops(cfg).matmul


def step_flops(cfg) -> float:
    """XLA's FLOPs in one train step on the whole global batch (matmuls and elementwise
    ops), for comparison with `model_flops`: XLA's cost analysis of the step compiled for a
    single CPU-or-default device (SPMD counts are per device; GPU counts are unreliable, see
    DESIGN.md), traced with XLA's own forms of `resample_conv` (`model.conv_forms=xla`).
    R3GAN's grouped convolutions keep their CPU form there (one dense block-diagonal
    convolution): r3gan_digits counts 210 GFLOP here against the model's 57, so MFU from this
    count overstated R3GAN's 3.7x."""
    try:
        device = jax.devices("cpu")[0]
    except RuntimeError:
        device = jax.devices()[0]
    xla_forms = apply_overrides(cfg, {"model.conv_forms": "xla"})
    cost = lower_step(xla_forms, device).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost.get("flops", float("nan")))


def lower_step(cfg, device) -> jax.stages.Lowered:
    """The config's train step (one step per call, jit+shard_map) traced and lowered for one
    device on abstract arguments: the whole global batch, nothing computed."""
    driver, init_fn = build_training(apply_overrides(cfg, {"train.driver": "shard_map"}),
                                     [device])
    state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=driver.replicated),
        jax.eval_shape(init_fn, jax.random.PRNGKey(0)))
    return driver._step.lower(state, _sds(driver, _batch(cfg, 1, abstract=True)))


def _sds(driver, batch):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                       sharding=driver.batch_sharding), batch)


def _batch(cfg, k: int, abstract: bool = False):
    s, c, b = cfg.data.image_size, cfg.data.channels, cfg.train.batch_size
    lead = (k,) if k > 1 else ()
    shape = (*lead, cfg.train.d_steps, b, s, s, c)
    if abstract:  # uint8 pixels, as the input pipeline delivers them (scaled inside the step)
        return {"image": np.zeros(shape, np.uint8),
                "label": np.zeros(shape[:-3], np.int32)}
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, shape, dtype=np.uint8),
            "label": rng.integers(0, 10, shape[:-3]).astype(np.int32)}


def prepare_case(case: Case, warmup: int, overrides: dict[str, str] | None = None
                 ) -> tuple[Timed, dict[str, Any]]:
    """Build, compile and warm up one case; its `Timed` runs one call (k steps) per call.
    `overrides`: further config overrides (benchmarks/conv_forms.py: `model.conv_forms`)."""
    cfg = load_config(case.config, {"train.driver": case.driver, "model.dtype": case.dtype,
                                    "train.batch_size": str(case.batch), **(overrides or {})})
    k = case.steps_per_call
    driver, init_fn = build_training(cfg, jax.devices()[:case.devices], steps_per_call=k)
    holder = {"state": driver.init_state(init_fn, jax.random.PRNGKey(0))}
    batch = driver.put_batch(_batch(cfg, k))

    def call():
        holder["state"], metrics = driver.step(holder["state"], batch)
        jax.block_until_ready(metrics)

    t0 = time.perf_counter()
    call()
    compile_s = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        call()
    label = f"{case.config} {case.dtype} batch {case.batch} devices {case.devices} " \
            f"{case.driver} k={k}"
    return Timed(label, call, k), {**dataclasses.asdict(case), "compile_s": compile_s,
                                   "images_per_step": case.batch * cfg.train.d_steps}


def case_row(meta: dict[str, Any], timed: Timed, flops_per_step: float, peak: float,
             xla_flops_per_step: float | None = None) -> dict[str, Any]:
    """The results row of a timed case: throughput (median, p90), FLOP/s and MFU of the
    model's FLOPs (`model_flops`), and XLA:CPU's count where it was taken."""
    t = timed.summary()
    images, n = meta["images_per_step"], meta["devices"]
    achieved = flops_per_step / t["step_s_median"] / n
    stats = jax.devices()[0].memory_stats() or {}
    case = {k: v for k, v in meta.items() if k != "images_per_step"}
    return {**case, **t, "images_per_sec": images / t["step_s_median"],
            "images_per_sec_per_device": images / t["step_s_median"] / n,
            "images_per_sec_p90": images / t["step_s_p90"],
            "peak_bytes": stats.get("peak_bytes_in_use"), "flops_per_step": flops_per_step,
            "achieved_flops_per_device": achieved, "mfu": achieved / peak,
            "flops_counted_by": "jaxpr", "xla_cpu_flops_per_step": xla_flops_per_step}


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
            "host_memory_kept": host_memory.is_kept(),
            "eigen_convolutions": cpu_convolutions.in_effect(), "versions": versions,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def run(configs: list[str], device_counts: list[int], drivers: list[str], dtypes: list[str],
        ks: list[int], batches: list[int] | None, steps: int, warmup: int, peers: bool,
        out: Path, rounds: int = 4, xla_flops: bool = True) -> dict[str, Any]:
    """Every case of each config, and its PyTorch peers, timed interleaved in `rounds` rounds
    (`genart_jax.bench.interleave`); writes results.json, results.md and plots into `out`.
    `xla_flops`: also take XLA:CPU's count of each step (one more compile per config and
    dtype)."""
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
    results, peer_rows = [], []
    for name in configs:
        base = load_config(name)
        cases = []  # (Timed, meta, model flops per step, peak, XLA:CPU flops per step)
        flops_at = {}  # (dtype, batch) -> the model's FLOPs per step, the peers' MFU too
        for dt in dtypes:
            xla = (step_flops(load_config(name, {"model.dtype": dt})) / base.train.batch_size
                   if xla_flops else None)
            for b in batches or [base.train.batch_size]:
                flops = model_flops(load_config(name, {"model.dtype": dt,
                                                       "train.batch_size": str(b)}))
                flops_at[dt, b] = flops
                for n in device_counts:
                    for drv in drivers:
                        for k in ks:
                            timed, meta = prepare_case(Case(name, n, drv, dt, k, b), warmup)
                            print(f"compiled {timed.name} in {meta['compile_s']:.1f} s")
                            cases.append((timed, meta, flops, peaks[dt],
                                          None if xla is None else xla * b))
        peer_cases = prepare_peers(name, batches, warmup, dtypes) if peers else []
        time_interleaved([c[0] for c in cases] + [p[0] for p in peer_cases], steps, rounds,
                         progress=lambda msg, name=name: print(f"{name}: {msg}", flush=True))
        for timed, meta, flops, peak, xla in cases:
            r = case_row(meta, timed, flops, peak, xla)
            results.append(r)
            print(f"{timed.name}: {r['images_per_sec']:.0f} img/s "
                  f"({r['images_per_sec_per_device']:.0f}/device), compile "
                  f"{r['compile_s']:.1f} s, {r['achieved_flops_per_device'] / 1e9:.1f} "
                  f"GFLOP/s/device, MFU {r['mfu']:.1%}")
        for timed, meta in peer_cases:
            t = timed.summary()
            row = {**meta, **t, "images_per_sec": meta["batch"] / t["step_s_median"]}
            # the peer's step does the model's work: MFU of the same FLOP count and peak
            flops = flops_at.get((row["dtype"], row["batch"]))
            if flops is not None and row["dtype"] in peaks:
                row["flops_per_step"] = flops
                row["mfu"] = flops / t["step_s_median"] / peaks[row["dtype"]]
            peer_rows.append(row)
            mfu = f", MFU {row['mfu']:.1%}" if "mfu" in row else ""
            print(f"peer {row['peer']} {row['dtype']} {name} batch {row['batch']}: "
                  f"{row['images_per_sec']:.0f} img/s{mfu}")
    report = {"machine": info, "matmul_peak_flops": peaks, "results": results,
              "peers": peer_rows, "timing": {"steps": steps, "rounds": rounds,
                                             "warmup": warmup}}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text(markdown(report))
    plot(report, out)
    print(f"wrote {out}/results.json, results.md and plots")
    return report


def peer_modules() -> dict[str, Any]:
    """The PyTorch peers (the modules of `genart_jax/bench/peers/` that name the architecture
    they are written after, `MIRRORS`: torch_dcgan, torch_vae, torch_r3gan, hvae) by module
    name; each maps a config to its `make_step`'s arguments (`peer_kwargs`). A peer may list
    the devices its torch.compile variant is timed on (`COMPILE_ON`; default every device)."""
    import pkgutil

    from genart_jax.bench import peers

    modules = {m.name: importlib.import_module(f"{peers.__name__}.{m.name}")
               for m in pkgutil.iter_modules(peers.__path__) if m.name != "timing"}
    return {name: m for name, m in modules.items() if hasattr(m, "MIRRORS")}


def peer_for(cfg) -> tuple[str, dict] | None:
    """(peer module name, keyword arguments of its make_step) for a config with a PyTorch
    peer: the peer that mirrors its architecture, where it implements the config's options;
    None for the others."""
    for name, module in peer_modules().items():
        if tuple(module.MIRRORS) == (cfg.model.family, cfg.model.arch):
            kwargs = module.peer_kwargs(cfg)
            return None if kwargs is None else (name, kwargs)
    return None


def prepare_peers(name: str, batches: list[int] | None, warmup: int,
                  dtypes: list[str] = ("float32",), compiled: tuple[bool, ...] = (False, True)
                  ) -> list[tuple[Timed, dict[str, Any]]]:
    """The PyTorch peers of config `name` (eager and torch.compile, or those of `compiled`, in
    each of `dtypes`: float32, and bfloat16 under `torch.autocast`), on the GPU when genart_jax
    runs on one and PyTorch can use it, else on the CPU; built and warmed up."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print("PyTorch not installed (pip install -e '.[bench]'): no peer rows")
        return []
    cfg = load_config(name)
    peer = peer_for(cfg)
    if peer is None:
        print(f"no PyTorch peer for {name} ({cfg.model.family}/{cfg.model.arch})")
        return []
    from genart_jax.bench.peers.timing import peer_device, peer_info

    module = peer_modules()[peer[0]]
    device = peer_device(jax.default_backend())
    prepared = []
    for dt, b, compile_model in itertools.product(dtypes, batches or [cfg.train.batch_size],
                                                  compiled):
        meta = {**peer_info(compile_model, dt, device), "config": name, "batch": b}
        if compile_model and device not in getattr(module, "COMPILE_ON", (device,)):
            print(f"peer {meta['peer']} {dt} {name}: not timed on {device} (the peer's "
                  f"COMPILE_ON: {', '.join(module.COMPILE_ON)})")
            continue
        try:
            step = module.make_step(batch=b, compile_model=compile_model, dtype=dt, device=device,
                                    **peer[1])
            t0 = time.perf_counter()
            for _ in range(max(1, warmup)):
                step()
        except Exception as e:  # torch.compile needs a working toolchain
            print(f"peer {meta['peer']} {dt} {name} failed: {e}")
            continue
        meta["warmup_s"] = time.perf_counter() - t0
        prepared.append((Timed(f"peer {meta['peer']} {dt} {name} batch {b}", step), meta))
    return prepared


def _usage_cells(row: dict) -> str:
    """The page-fault and kernel-time cells of a row ("-" where they were not measured)."""
    faults, kernel = row.get("minor_faults_per_step"), row.get("kernel_s_per_step")
    return (f"{faults:.0f} | {1e3 * kernel:.0f}" if faults is not None and kernel is not None
            else "- | -")


def _flops_cell(row: dict) -> str:
    """GFLOP per step: the model's count, and XLA:CPU's in parentheses where it differs by
    more than 2% (elementwise work; the CPU forms' extra work in older reports)."""
    cell = f"{row['flops_per_step'] / 1e9:.1f}"
    xla = row.get("xla_cpu_flops_per_step")
    if xla and abs(xla / row["flops_per_step"] - 1) > 0.02:
        cell += f" (XLA:CPU {xla / 1e9:.1f})"
    return cell


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"Machine: {m['backend']} x{m['device_count']} ({m['device_kind']}), "
             f"{m['processor'] or m['platform']}; jax {m['versions'].get('jax')}, "
             f"{m['date']}. Host malloc (the same for genart_jax and the PyTorch peers): "
             f"{'freed memory kept' if m.get('host_memory_kept') else 'default'}."]
    if m["backend"] == "cpu":
        lines[0] += (" XLA:CPU convolutions: "
                     f"{'Eigen' if m.get('eigen_convolutions') else 'YNNPACK (the default)'}.")
    lines.append("")
    if m["simulated_cpu_devices"]:
        lines += ["Simulated CPU devices share the same cores: rows with more devices are not a "
                  "scaling measurement.", ""]
    lines += ["| config | dtype | batch | devices | driver | steps/call | img/s | img/s/device "
              "| p90 img/s | compile s | GFLOP/step | GFLOP/s/device | MFU | page faults/step "
              "| kernel ms/step |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(
            f"| {r['config']} | {r['dtype']} | {r['batch']} | {r['devices']} | {r['driver']} | "
            f"{r['steps_per_call']} | {r['images_per_sec']:.0f} | "
            f"{r['images_per_sec_per_device']:.0f} | {r['images_per_sec_p90']:.0f} | "
            f"{r['compile_s']:.1f} | {_flops_cell(r)} | "
            f"{r['achieved_flops_per_device'] / 1e9:.1f} | {r['mfu']:.1%} | "
            f"{_usage_cells(r)} |")
    if report["peers"]:
        # Each peer row is paired with its own config's rows at the same batch on one device,
        # in the peer's dtype: the best of drivers and steps per call.
        lines += ["", "| peer | dtype | config | batch | img/s | ratio genart_jax best same "
                  "dtype / peer | page faults/step | kernel ms/step | MFU |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for p in report["peers"]:
            dtype = p.get("dtype", "float32")  # reports before bfloat16 peers: float32
            ours = max((r["images_per_sec"] for r in report["results"]
                        if r["config"] == p["config"] and r["batch"] == p["batch"]
                        and r["devices"] == 1 and r["dtype"] == dtype),
                       default=float("nan"))
            where = ("cuda" if p.get("device") == "cuda"  # older reports: CPU peers
                     else f"cpu, {p['threads']} threads")
            lines.append(f"| {p['peer']} ({where}) | {dtype} | {p['config']} | "
                         f"{p['batch']} | {p['images_per_sec']:.0f} | "
                         f"{ours / p['images_per_sec']:.2f}x | {_usage_cells(p)} | "
                         f"{format(p['mfu'], '.1%') if p.get('mfu') is not None else '-'} |")
    peaks = ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in
                      report["matmul_peak_flops"].items())
    lines += ["", f"MFU is against the matmul peak measured in the same run: {peaks}; a "
              "peer's MFU is of the same model FLOPs per step as its config's rows."]
    if any(r.get("flops_counted_by") == "jaxpr" for r in report["results"]):
        lines.append("GFLOP/step is the model's: the step's dots and convolutions with XLA's "
                     "own forms, counted from its jaxpr (genart_jax.flops), the same on every "
                     "backend and dtype; XLA:CPU's cost analysis in parentheses where it "
                     "differs by more than 2%.")
    t = report.get("timing")
    if t:
        lines.append(f"Every case and peer of a config: at least {t['steps']} timed steps after "
                     f"{t['warmup']} warm-up calls, in {t['rounds']} rounds that interleave them "
                     f"(rotating order); img/s is from the median step.")
    lines.append("")
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
