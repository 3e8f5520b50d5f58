#!/bin/bash
cd /work/wt/j18
export PYTHONPATH=/work/wt/j18
B=/tmp/j18/bench
uptime > $B/uptime_start.txt
( while sleep 30; do uptime >> $B/uptime_during.txt; done ) &
UPID=$!
python -m genart_jax.cli bench --configs bench_r3gan64 --devices 1 --drivers shard_map \
  --dtypes float32 --steps-per-call 1 --out benchmarks/results/cpu-2core-bench-r3gan64 > $B/bench.log 2>&1
echo "exit $?" >> $B/bench.log
kill $UPID
uptime > $B/uptime_end.txt
