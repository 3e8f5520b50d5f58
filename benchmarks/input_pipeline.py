"""Input pipeline throughput: streaming a prepared folder dataset onto the devices, the per-image
cost breakdown, the PyTorch DataLoader + PIL peer over the same image files, and the train step's
consumption for the same config, in one run.

One case (its last line is the images/s delivered onto the device(s)):

    python -m benchmarks.input_pipeline --data gen256 --size 256 --workers 2 [--batch 64]
        [--seconds 10] [--out DIR] [--data_dir DIR]

Make the test data (3,000 generated 256 px JPEG files, prepared at 64, 128 and 256 px):

    python -m benchmarks.input_pipeline --generate /tmp/genimg --images 3000 --data_dir D

Everything (sizes x worker counts, the peer, the breakdown, the step) into results.json/md:

    python -m benchmarks.input_pipeline --sweep --source /tmp/genimg --data_dir D \
        --out benchmarks/results/cpu-2core-input
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

PREFIX = "gen"


def generate_images(folder: Path, count: int, size: int = 256, seed: int = 0) -> None:
    """`count` random RGB JPEG files of `size` px: a smooth field (a 12x12 random image,
    bicubic upsampled) plus fine noise, so files have a photograph's detail and decode cost,
    not flat colour's."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = folder / f"img_{i:05d}.jpg"
        if path.exists():
            continue
        field = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
        img = np.asarray(field.resize((size, size), Image.Resampling.BICUBIC), np.int16)
        img = img + rng.integers(-12, 13, (size, size, 1), dtype=np.int16)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)


def _cfg(name: str, data_dir: str, size: int, workers: int, batch: int, cache: bool = False):
    from genart_jax.config import load_config

    return load_config("dcgan_digits", {
        "data.name": name, "data.data_dir": data_dir, "data.image_size": str(size),
        "data.channels": "3", "data.cache": str(cache).lower(), "data.workers": str(workers),
        "train.batch_size": str(batch), "model.dcgan.g_width": "16", "model.dcgan.d_width": "16"})


def _batch_sharding():
    import jax

    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    return jax.NamedSharding(mesh, jax.P(None, "data"))


def stream_rate(name: str, data_dir: str, size: int, workers: int, batch: int,
                seconds: float) -> dict[str, float]:
    """Images/s that `make_input` (cache off) delivers onto the devices (uint8 device arrays,
    waited for), after the first two batches (worker start-up, reported apart)."""
    import jax

    from genart_jax.data import make_input, prefetch

    cfg = _cfg(name, data_dir, size, workers, batch)
    sharding = _batch_sharding()
    t0 = time.perf_counter()
    it, _ = make_input(cfg.data, global_batch=batch, seed=0)
    stream = prefetch(it, cfg.data.prefetch)
    for _ in range(2):
        jax.block_until_ready(jax.device_put(next(stream)[0]["image"], sharding))
    start_s = time.perf_counter() - t0
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x = jax.device_put(next(stream)[0]["image"], sharding)
        n += batch
    jax.block_until_ready(x)
    rate = n / (time.perf_counter() - t0)
    stream.close()
    return {"images_per_s": rate, "start_s": start_s}


def torch_rate(files: list[Path], size: int, workers: int, batch: int,
               seconds: float) -> float:
    """The peer: PyTorch DataLoader over the same JPEG files, PIL decode (+ bicubic resize to
    `size`), uint8 tensors (the same contract as ours), shuffled, `workers` processes."""
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(_TorchImages(files, size), batch_size=batch, shuffle=True,
                        num_workers=workers, drop_last=True, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    for _ in range(2):
        next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            continue
        n += batch
    return n / (time.perf_counter() - t0)


class _TorchImages:
    """A map-style torch dataset: file -> uint8 (C, S, S) tensor with PIL."""

    def __init__(self, files: list[Path], size: int):
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image

        with Image.open(self.files[i]) as img:
            img = img.convert("RGB")
            if img.size != (self.size, self.size):
                img = img.resize((self.size, self.size), Image.Resampling.BICUBIC)
            return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1), 0


def breakdown(name: str, data_dir: str, size: int, files: list[Path], batch: int,
              reps: int = 5) -> dict[str, float]:
    """Microseconds per image, single process: read (raw records, one copy), decode (none:
    done once at prepare; the peer's JPEG decode for comparison), convert (uint8 -> [-1, 1] in
    the compiled step), host-to-device (device_put of the uint8 batch), and the old host
    conversion to float32 that the step now does instead."""
    import jax
    from PIL import Image

    from genart_jax.data.convert import to_model_range
    from genart_jax.data.sources import open_source

    source = open_source(name, "train", data_dir)
    rng = np.random.default_rng(0)
    idx = [rng.choice(len(source), batch, replace=False) for _ in range(reps)]

    def per_image(fn) -> float:
        fn(0)
        t0 = time.perf_counter()
        for r in range(reps):
            fn(r)
        return 1e6 * (time.perf_counter() - t0) / (reps * batch)

    images, _ = source.read(idx[0])
    sharding = _batch_sharding()
    conv = jax.jit(to_model_range)
    on_dev = jax.device_put(images[None], sharding)

    def decode(r):
        for f in files[r * batch % len(files):][:batch]:
            with Image.open(f) as img:
                img = img.convert("RGB")
                if img.size != (size, size):
                    img.resize((size, size), Image.Resampling.BICUBIC)

    def old_convert(r):  # the host float32 conversion of the previous pipeline
        np.clip(images.astype(np.float32) / 127.5 - 1.0, -1.0, 1.0).astype(np.float32)

    return {
        "read_us": per_image(lambda r: source.read(idx[r])),
        "decode_us": 0.0,
        "peer_jpeg_decode_us": per_image(decode) if len(files) >= batch else float("nan"),
        "convert_on_device_us": per_image(lambda r: jax.block_until_ready(conv(on_dev))),
        "host_to_device_us": per_image(
            lambda r: jax.block_until_ready(jax.device_put(images[None], sharding))),
        "old_host_float32_convert_us": per_image(old_convert),
    }


def step_rate(size: int, batch: int, steps: int = 3) -> float:
    """Images/s the DCGAN train step (config dcgan_digits widths 16 at `size`, 3 channels)
    consumes, from a uint8 batch already on the devices."""
    import jax

    from genart_jax.train.loop import build_training

    cfg = _cfg("unused", "", size, 0, batch, cache=True)
    driver, init_fn = build_training(cfg)
    state = driver.init_state(init_fn, jax.random.PRNGKey(0))
    x = np.random.default_rng(0).integers(0, 256, (1, batch, size, size, 3), dtype=np.uint8)
    b = driver.put_batch({"image": x, "label": np.zeros((1, batch), np.int32)})
    state, m = driver.step(state, b)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = driver.step(state, b)
    jax.block_until_ready(m)
    return steps * batch / (time.perf_counter() - t0)


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def prepare_sizes(source: Path, data_dir: str, sizes: list[int]) -> None:
    from genart_jax.data.folder import prepare_folder

    for s in sizes:
        prepare_folder(source, f"{PREFIX}{s}", data_dir=data_dir, size=s)


def sweep(args) -> dict[str, Any]:
    """Every size x worker count, ours and the peer interleaved case by case, the breakdown
    and the step; load averages beside each."""
    files = sorted(Path(args.source).glob("*.jpg"))
    rows = []
    for size in args.sizes:
        name = f"{PREFIX}{size}"
        row: dict[str, Any] = {"size": size, "batch": args.batch,
                               "breakdown": breakdown(name, args.data_dir, size, files,
                                                      args.batch),
                               "step_images_per_s": step_rate(size, args.step_batch),
                               "step_batch": args.step_batch, "cases": []}
        for w in args.worker_counts:
            ours = stream_rate(name, args.data_dir, size, w, args.batch, args.seconds)
            peer = torch_rate(files, size, w, args.batch, args.seconds)
            row["cases"].append({"workers": w, **ours, "torch_images_per_s": peer,
                                 "load": _load()})
            print(f"{size}px workers={w}: ours {ours['images_per_s']:,.0f} img/s, torch "
                  f"{peer:,.0f} (load {_load()})", flush=True)
        rows.append(row)
    return {"rows": rows, "images": len(files), "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": args.command_line}


def write_markdown(result: dict[str, Any], path: Path) -> None:
    lines = [f"# Input pipeline, {result['images']} generated 256 px JPEG files, "
             f"{result['cpus']} CPUs (shared machine: see load)", "",
             f"`{result['command']}`", "",
             "| size | workers | ours img/s | torch img/s | ours/torch | step img/s | "
             "pipeline/step | load (1, 5, 15 min) |", "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        for c in row["cases"]:
            lines.append(f"| {row['size']} | {c['workers']} | {c['images_per_s']:,.0f} | "
                         f"{c['torch_images_per_s']:,.0f} | "
                         f"{c['images_per_s'] / c['torch_images_per_s']:.1f}x | "
                         f"{row['step_images_per_s']:,.0f} | "
                         f"{c['images_per_s'] / row['step_images_per_s']:.0f}x | {c['load']} |")
    lines += ["", "Per image, microseconds, single process:", "",
              "| size | read | decode | convert (on device) | host-to-device | "
              "peer JPEG decode | old host float32 convert |", "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        b = row["breakdown"]
        lines.append(f"| {row['size']} | {b['read_us']:.1f} | {b['decode_us']:.0f} | "
                     f"{b['convert_on_device_us']:.1f} | {b['host_to_device_us']:.1f} | "
                     f"{b['peer_jpeg_decode_us']:.0f} | {b['old_host_float32_convert_us']:.1f} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    import sys

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="a prepared dataset name (one case)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--out", default=None, help="folder for results.json (and .md with --sweep)")
    p.add_argument("--data_dir", default="")
    p.add_argument("--generate", default=None, help="make generated JPEG files here, prepare")
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--source", default=None, help="--sweep: the JPEG folder (peer input)")
    p.add_argument("--sizes", default="64,128,256")
    p.add_argument("--worker_counts", default="0,1,2")
    p.add_argument("--step_batch", type=int, default=32)
    args = p.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.worker_counts = [int(s) for s in args.worker_counts.split(",")]
    args.command_line = "python -m benchmarks.input_pipeline " + " ".join(sys.argv[1:])
    if args.generate:
        generate_images(Path(args.generate), args.images)
        prepare_sizes(Path(args.generate), args.data_dir, args.sizes)
        print(f"generated {args.images} images in {args.generate}; prepared "
              f"{[f'{PREFIX}{s}' for s in args.sizes]} in {args.data_dir or '$TFDS_DATA_DIR'}")
        return
    if args.sweep:
        result = sweep(args)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.json").write_text(json.dumps(result, indent=2))
            write_markdown(result, out / "results.md")
        return
    if not args.data:
        p.error("give --data NAME (a prepared dataset), --generate DIR or --sweep")
    import jax

    r = stream_rate(args.data, args.data_dir, args.size, args.workers, args.batch,
                    args.seconds)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps(
            {**r, "data": args.data, "size": args.size, "workers": args.workers,
             "batch": args.batch, "devices": jax.device_count(),
             "backend": jax.default_backend(), "load": _load(),
             "command": args.command_line}, indent=2))
    print(f"{args.data} {args.size}px workers={args.workers} batch={args.batch}: "
          f"{r['images_per_s']:,.0f} images/s onto {jax.device_count()} "
          f"{jax.default_backend()} device(s)")


if __name__ == "__main__":
    main()
