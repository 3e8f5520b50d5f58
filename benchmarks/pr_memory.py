"""Peak host memory and time of k-NN precision/recall: the row-blocked `metrics.precision_recall`
at N = 50,000 128-d features per set, and beside it at N = 5,000 the whole-matrix form it
replaced (which needs N^2 * 8 bytes: 20 GB at 50,000, more than the machine).

    PYTHONPATH=$PWD python benchmarks/pr_memory.py [--n 50000] [--small 5000]

Peak memory is the largest NumPy allocation total seen by tracemalloc (NumPy reports its
buffers to it), so it excludes the interpreter and libraries."""

from __future__ import annotations

import argparse
import json
import os
import time
import tracemalloc

import numpy as np

from genart_jax import metrics


def whole_matrix_precision_recall(real, fake, k=3):
    """The pre-chunking form: the whole N x N distance matrix for each radius set."""
    def radii(x):
        return np.partition(metrics._sq_distances(x, x), k, axis=1)[:, k]
    x, y = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    return (metrics._coverage(x, radii(x), y, 1024), metrics._coverage(y, radii(y), x, 1024))


def measure(fn, *args):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak / 2**20


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--small", type=int, default=5_000)
    p.add_argument("--dim", type=int, default=128)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    small_r = rng.normal(size=(args.small, args.dim))
    small_f = rng.normal(size=(args.small, args.dim)) * 1.1
    for name, fn in (("whole matrix (before)", whole_matrix_precision_recall),
                     ("row blocks (now)", metrics.precision_recall)):
        out, s, mib = measure(fn, small_r, small_f)
        rows.append({"form": name, "n": args.small, "dim": args.dim, "precision": out[0],
                     "recall": out[1], "seconds": round(s, 2), "peak_numpy_mib": round(mib)})
    real = rng.normal(size=(args.n, args.dim))
    fake = rng.normal(size=(args.n, args.dim)) * 1.1
    out, s, mib = measure(metrics.precision_recall, real, fake)
    rows.append({"form": "row blocks (now)", "n": args.n, "dim": args.dim, "precision": out[0],
                 "recall": out[1], "seconds": round(s, 1), "peak_numpy_mib": round(mib),
                 "inputs_mib": round((real.nbytes + fake.nbytes) / 2**20)})
    print(json.dumps({"load_average": os.getloadavg(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
