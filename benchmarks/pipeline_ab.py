"""Before/after of the streaming path, interleaved: the same timing snippet run in fresh
processes against two checkouts (e.g. main and this branch), each on its own prepared copy of
the same images, alternating rounds so that a shared machine's load hits both alike.

    python -m benchmarks.pipeline_ab --old /work/main --old_data old256:/tmp/olddata \
        --new . --new_data new256:/tmp/data --size 256 --rounds 3 --seconds 6
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SNIPPET = r"""
import json, sys, time
import jax
from genart_jax.config import load_config
from genart_jax.data import make_input
name, data_dir = sys.argv[1], sys.argv[2]
size, batch, seconds = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
over = {"data.name": name, "data.data_dir": data_dir, "data.image_size": str(size),
        "data.channels": "3", "data.cache": "false", "train.batch_size": str(batch)}
cfg = load_config("dcgan_digits", over)
if "workers" in cfg.data:
    from genart_jax.config import apply_overrides
    cfg = apply_overrides(cfg, {"data.workers": "0"})
it, _ = make_input(cfg.data, global_batch=batch, seed=0)
jax.block_until_ready(jax.device_put(next(it)[0]["image"]))
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    x = jax.device_put(next(it)[0]["image"])
    n += batch
jax.block_until_ready(x)
print(json.dumps({"images_per_s": n / (time.perf_counter() - t0), "dtype": str(x.dtype)}))
"""


def one(checkout: str, data: str, size: int, batch: int, seconds: float) -> dict:
    name, data_dir = data.split(":", 1)
    env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
    out = subprocess.run([sys.executable, "-c", SNIPPET, name, data_dir, str(size), str(batch),
                          str(seconds)], env=env, capture_output=True, text=True, check=True,
                         cwd="/tmp")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True)
    p.add_argument("--old_data", required=True, help="NAME:DATA_DIR")
    p.add_argument("--new", required=True)
    p.add_argument("--new_data", required=True, help="NAME:DATA_DIR")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=6.0)
    args = p.parse_args()
    rows = []
    for r in range(args.rounds):
        for label, checkout, data in (("old", args.old, args.old_data),
                                      ("new", args.new, args.new_data)):
            res = one(checkout, data, args.size, args.batch, args.seconds)
            load = " ".join(f"{v:.2f}" for v in os.getloadavg())
            rows.append({"round": r, "which": label, **res, "load": load})
            print(f"round {r} {label}: {res['images_per_s']:,.0f} images/s ({res['dtype']}), "
                  f"load {load}", flush=True)
    med = {w: sorted(x["images_per_s"] for x in rows if x["which"] == w)[args.rounds // 2]
           for w in ("old", "new")}
    print(json.dumps({"rows": rows, "median": med, "ratio": med["new"] / med["old"]}))


if __name__ == "__main__":
    main()
