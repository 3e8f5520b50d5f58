#!/bin/bash
cd /work/wt/j18
export PYTHONPATH=/work/wt/j18
Q=/tmp/j18/q
uptime > $Q/uptime_classifier.txt
nice -n 10 python -m genart_jax.cli train-classifier --data digits --image-size 32 --channels 1 --out $Q/classifier > $Q/classifier.log 2>&1
nice -n 10 python -m benchmarks.quality_vs_time --runs $Q/dcgan_digits $Q/r3gan_digits \
  --start $(cat $Q/start.txt) --classifier $Q/classifier --num 500 \
  --out benchmarks/results/cpu-2core-r3gan-digits-quality-2 > $Q/quality.log 2>&1
echo done >> $Q/quality.log
