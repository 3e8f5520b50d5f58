#!/bin/bash
# After the 30-minute runs: bits/dim and FID/KID/PR (self-supervised art32 features) of both.
. /work/main/.venv/bin/activate
set -x
F="--extractor selfsup --extractor-params /tmp/cmp/features --metrics fid,kid,pr"
genart eval --reference train --data art32 --data_dir /tmp/art32/tfds $F
genart eval --workdir /tmp/cmp/convvae $F
for t in 1.0 0.8 0.6; do genart eval --workdir /tmp/cmp/hvae $F --temperature $t; genart eval --workdir /tmp/cmp/hvae $F --temperature $t --no-ema; done
genart sample --workdir /tmp/cmp/convvae --out /tmp/cmp/grids/convvae.png --num 64
for t in 1.0 0.8 0.6; do genart sample --workdir /tmp/cmp/hvae --out /tmp/cmp/grids/hvae_t$t.png --num 64 --temperature $t; done
