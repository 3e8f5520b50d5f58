#!/bin/bash
# Equal wall-clock comparison: both runs at once, each pinned to one of the 2 cores, 30 min each.
. /work/main/.venv/bin/activate
D="--config.data.name=art32 --config.data.data_dir=/tmp/art32/tfds"
timeout -s TERM 1800 taskset -c 0 genart train --config hvae_folder32 --workdir /tmp/cmp/hvae $D \
  --config.train.steps=100000 --config.train.sample_every=1000 > /tmp/cmp/hvae.log 2>&1 &
timeout -s TERM 1800 taskset -c 1 genart train --config convvae64_celeba --workdir /tmp/cmp/convvae $D \
  --config.data.image_size=32 --config.vae.eval_split=test --config.train.steps=1000000 \
  --config.train.sample_every=2000 > /tmp/cmp/convvae.log 2>&1 &
wait
