"""Where a reader worker's time goes, and streaming with 0, 1, 2 workers against the old grain
workers and PyTorch's DataLoader, interleaved round by round on one machine.

    python -m benchmarks.worker_breakdown --data_dir D --source JPEGS [--sizes 64,256]
        [--batch 128] [--seconds 5] [--rounds 3] [--out DIR]

D holds gen64/gen256 (and JPEGS the files they came from) as made by
`python -m benchmarks.input_pipeline --generate JPEGS --data_dir D --sizes 64,256`.

Breakdown, per batch (ms), single process unless said: reading the records into a new array
(the in-process path and the old grain worker) and into a reused slot (the shared-memory
worker); pickling and unpickling the batch; the whole handoff of a batch that costs nothing to
read from one worker process to the parent, through grain's `mp_prefetch` (the old path: the
batch pickled through a pipe) and through `SharedMemoryPool` (the new path: a slot number through
a queue, then one copy out of the slot); and that copy alone.

Rates: images/s delivered onto the device(s) as `benchmarks.input_pipeline.stream_rate`
measures them (make_input -> prefetch thread -> device_put), for each size: ours with 0, 1, 2
workers, the old grain workers (1, 2), and the DataLoader + PIL peer (0, 1, 2 workers), one
case after another within a round, rounds repeated; the table gives each case's median and the
load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.input_pipeline import PREFIX, _batch_sharding, _cfg, _load, torch_rate


class FreeRead:
    """A worker's read that costs nothing: element k is the same batch, filled once."""

    def __init__(self, batch: int, size: int):
        self.group, self.batch, self.size = 1, batch, size
        self._x = None

    def _batch(self):
        if self._x is None:
            self._x = {"image": np.full((1, self.batch, self.size, self.size, 3), 7, np.uint8),
                       "label": np.zeros((1, self.batch), np.int32)}
        return self._x

    def __call__(self, k: int):  # grain: return the batch, grain pickles it
        return self._batch()

    def into(self, k: int, images: np.ndarray, labels: np.ndarray) -> None:  # ours: in place
        pass


class GrainBatchIterator:
    """The previous streaming iterator with workers (grain `mp_prefetch`), kept here for A/B:
    same element -> batch mapping (`ReadBatches.__call__`), batches pickled through a pipe."""

    def __init__(self, read: Any, *, workers: int, buffer: int):
        import grain
        from absl import flags

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        ds = grain.MapDataset.range(0, 2**40).map(read).to_iter_dataset()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=workers, per_worker_buffer_size=max(1, buffer)))
        self._it = iter(ds)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it), None


def _per_batch_ms(fn, reps: int) -> float:
    fn(0)
    t0 = time.perf_counter()
    for r in range(reps):
        fn(r + 1)
    return 1e3 * (time.perf_counter() - t0) / reps


def _handoff_ms(it, reps: int) -> float:
    """ms per batch taken from a worker iterator, after 3 warm-up batches (start-up apart)."""
    for _ in range(3):
        next(it)
    t0 = time.perf_counter()
    for _ in range(reps):
        next(it)
    return 1e3 * (time.perf_counter() - t0) / reps


def breakdown(name: str, data_dir: str, size: int, batch: int, reps: int) -> dict[str, float]:
    from genart_jax.data.pipeline import ReadBatches
    from genart_jax.data.sources import open_source
    from genart_jax.data.workers import SharedMemoryPool

    n = len(open_source(name, "train", data_dir))
    read = ReadBatches(name, "train", data_dir, n, global_batch=batch, seed=0, group=1,
                       process_index=0, process_count=1, start=0)
    images = np.empty((1, batch, size, size, 3), np.uint8)
    labels = np.empty((1, batch), np.int32)
    b = read(0)
    blob = pickle.dumps(b, protocol=pickle.HIGHEST_PROTOCOL)
    out = {
        "batch_mb": b["image"].nbytes / 2**20,
        "read_new_array_ms": _per_batch_ms(read, reps),
        "read_into_slot_ms": _per_batch_ms(lambda k: read.into(k, images, labels), reps),
        "pickle_ms": _per_batch_ms(lambda k: pickle.dumps(b, protocol=pickle.HIGHEST_PROTOCOL),
                                   reps),
        "unpickle_ms": _per_batch_ms(lambda k: pickle.loads(blob), reps),
        "copy_out_ms": _per_batch_ms(lambda k: images.copy(), reps),
    }
    old = GrainBatchIterator(FreeRead(batch, size), workers=1, buffer=2)
    out["grain_handoff_ms"] = _handoff_ms(old, reps)
    del old
    pool = SharedMemoryPool(FreeRead(batch, size), workers=1, slots=2, shape=(size, size, 3),
                            local=batch)
    out["shm_handoff_ms"] = _handoff_ms(pool, reps)
    pool.close()
    return out


def rate(make_iter, batch: int, seconds: float, prefetch_size: int = 2) -> float:
    """Images/s onto the devices, as `benchmarks.input_pipeline.stream_rate` measures them."""
    import jax

    from genart_jax.data import prefetch

    sharding = _batch_sharding()
    stream = prefetch(make_iter(), prefetch_size)
    for _ in range(2):
        jax.block_until_ready(jax.device_put(next(stream)[0]["image"], sharding))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x = jax.device_put(next(stream)[0]["image"], sharding)
        n += batch
    jax.block_until_ready(x)
    r = n / (time.perf_counter() - t0)
    stream.close()
    return r


def cases(name: str, data_dir: str, size: int, batch: int, workers: list[int],
          files: list[Path], old: list[int]) -> dict[str, Any]:
    from genart_jax.data import make_input
    from genart_jax.data.pipeline import ReadBatches
    from genart_jax.data.sources import open_source

    def ours(w):
        return lambda: make_input(_cfg(name, data_dir, size, w, batch).data,
                                  global_batch=batch, seed=0)[0]

    def grain_old(w):
        n = len(open_source(name, "train", data_dir))
        read = ReadBatches(name, "train", data_dir, n, global_batch=batch, seed=0, group=1,
                           process_index=0, process_count=1, start=0)
        return lambda: GrainBatchIterator(read, workers=w, buffer=2)

    out: dict[str, Any] = {f"ours_{w}": ours(w) for w in workers}
    out.update({f"grain_{w}": grain_old(w) for w in old})
    if files:
        out.update({f"torch_{w}": ("torch", w) for w in workers})
    return out


def run_rounds(args) -> dict[str, Any]:
    files = sorted(Path(args.source).glob("*.jpg")) if args.source else []
    result: dict[str, Any] = {"breakdown": {}, "rates": {}, "loads": []}
    for size in args.sizes:
        name = f"{PREFIX}{size}"
        result["breakdown"][size] = breakdown(name, args.data_dir, size, args.batch, args.reps)
        print(size, json.dumps({k: round(v, 2) for k, v in result["breakdown"][size].items()}),
              flush=True)
    for r in range(args.rounds):
        result["loads"].append(_load())
        for size in args.sizes:
            name = f"{PREFIX}{size}"
            todo = cases(name, args.data_dir, size, args.batch, args.workers, files, args.old)
            for key, case in todo.items():
                if isinstance(case, tuple):
                    v = torch_rate(files, size, case[1], args.batch, args.seconds)
                else:
                    v = rate(case, args.batch, args.seconds)
                result["rates"].setdefault(str(size), {}).setdefault(key, []).append(v)
                print(f"round {r} {size}px {key}: {v:,.0f} img/s (load {_load()})", flush=True)
    result["loads"].append(_load())
    return result


def write_markdown(result: dict[str, Any], path: Path) -> None:
    lines = [f"# Reader workers, {result['cpus']} CPUs (shared machine: see load)", "",
             f"`{result['command']}`", "", f"{result['date']}; load averages (1, 5, 15 min) "
             f"at each round's start and at the end: {'; '.join(result['loads'])}", "",
             "Per batch (ms), batch " + str(result["batch"]) + ":", "",
             "| size | batch MB | read, new array | read into slot | pickle | unpickle | "
             "grain handoff (free read) | shared-memory handoff (free read) | copy out |",
             "|---|---|---|---|---|---|---|---|---|"]
    for size, b in result["breakdown"].items():
        lines.append(f"| {size} | {b['batch_mb']:.1f} | {b['read_new_array_ms']:.2f} | "
                     f"{b['read_into_slot_ms']:.2f} | {b['pickle_ms']:.2f} | "
                     f"{b['unpickle_ms']:.2f} | {b['grain_handoff_ms']:.2f} | "
                     f"{b['shm_handoff_ms']:.2f} | {b['copy_out_ms']:.2f} |")
    lines += ["", f"Images/s onto the device, median of {result['rounds']} interleaved rounds "
              "(min-max):", "", "| size | case | img/s | min-max |", "|---|---|---|---|"]
    for size, rates in result["rates"].items():
        for key, v in rates.items():
            lines.append(f"| {size} | {key} | {statistics.median(v):,.0f} | "
                         f"{min(v):,.0f}-{max(v):,.0f} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--source", default="", help="the JPEG folder (the DataLoader peer's input)")
    p.add_argument("--sizes", default="64,256")
    p.add_argument("--workers", default="0,1,2", help="worker counts, ours and the peer's")
    p.add_argument("--old", default="1,2", help="worker counts of the old grain path")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=10, help="batches per breakdown timing")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.workers = [int(s) for s in args.workers.split(",")]
    args.old = [int(s) for s in args.old.split(",") if s]
    result = run_rounds(args)
    result.update(command="python -m benchmarks.worker_breakdown " + " ".join(sys.argv[1:]),
                  date=time.strftime("%Y-%m-%d %H:%M:%S"), cpus=os.cpu_count(),
                  batch=args.batch, rounds=args.rounds)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=2))
        write_markdown(result, out / "results.md")


if __name__ == "__main__":
    main()
