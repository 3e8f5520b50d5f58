#!/bin/bash
# DCGAN at the iterations R3GAN reached (per-iteration comparison; not timed).
cd /work/wt/j18
export PYTHONPATH=/work/wt/j18
Q=/tmp/j18/q
nice -n 10 python -m genart_jax.cli train --config dcgan_digits --workdir $Q/dcgan_digits_250 \
  --no-progress --no-resume --steps 250 --config.checkpoint.every_minutes=0 \
  --config.checkpoint.every_steps=25 --config.checkpoint.keep=20 \
  --config.train.sample_every=0 --config.train.log_every=25 > $Q/dcgan_digits_250.log 2>&1
for s in 50 125 175 200 250; do
  nice -n 10 python -m genart_jax.cli eval --workdir $Q/dcgan_digits_250 --step $s --metrics fid,kid,pr \
    --classifier $Q/classifier --num 500 >> $Q/periter.log 2>&1
done
echo done >> $Q/periter.log
