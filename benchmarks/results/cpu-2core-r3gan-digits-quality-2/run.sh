#!/bin/bash
# Item 4: DCGAN default vs r3gan_digits on the embedded digits, side by side, 20 min each.
cd /work/wt/j18
export PYTHONPATH=/work/wt/j18
Q=/tmp/j18/q
date -u +%Y-%m-%dT%H:%M:%SZ > $Q/start.txt
uptime > $Q/uptime_start.txt
for name in dcgan_digits r3gan_digits; do
  timeout 1200 python -m genart_jax.cli train --config $name --workdir $Q/$name \
    --no-progress --no-resume --steps 100000 --config.checkpoint.every_minutes=3 \
    --config.checkpoint.every_steps=0 --config.checkpoint.keep=20 \
    --config.train.sample_every=0 --config.train.log_every=25 > $Q/$name.log 2>&1 &
  PIDS="$PIDS $!"
done
( while sleep 60; do uptime >> $Q/uptime_during.txt; done ) &
UPID=$!
wait $PIDS
kill $UPID
uptime > $Q/uptime_end.txt
date -u +%Y-%m-%dT%H:%M:%SZ > $Q/end.txt
