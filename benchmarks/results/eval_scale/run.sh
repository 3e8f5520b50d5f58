#!/bin/sh
# genart eval of the default DCGAN on digits at 10,000 and 50,000 generated samples, in the
# self-supervised features (FID, KID, precision/recall against the 300 test images); wall time
# and peak RSS from GNU time. Run from the repo root after training runs/dcgan_digits and
# runs/features_digits_32 (see README).
set -e
for n in 10000 50000; do
  uptime
  /usr/bin/time -v env PYTHONPATH=$PWD python -m genart_jax.cli eval --workdir runs/dcgan_digits \
    --extractor selfsup --num $n 2>&1 | grep -E "FID|KID|precision|recall|Elapsed|Maximum resident|images\)"
done
