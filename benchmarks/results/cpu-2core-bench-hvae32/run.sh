#!/usr/bin/env bash
# genart bench, bench_hvae32 against its PyTorch eager peer in the same run (README.md).
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=benchmarks/results/cpu-2core-bench-hvae32
echo "load before: $(cat /proc/loadavg)"
PYTHONPATH=$PWD python -m genart_jax.cli bench --configs bench_hvae32 --devices 1 \
    --drivers shard_map --dtypes float32 --steps-per-call 1 --steps 4 --rounds 2 --warmup 3 \
    --no-xla-flops --out "$out"
echo "load after: $(cat /proc/loadavg)"
