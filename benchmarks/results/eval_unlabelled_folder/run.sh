#!/bin/sh
# genart eval on an unlabelled folder, end to end with the default features: the generated
# shapes (tests/test_selfsup.py:make_art_folder, 4 x 300 PNGs at 32x32) prepared WITHOUT
# labels (a plain folder), a short DCGAN (dcgan_digits' settings, 300 steps), the default
# SimCLR encoder, then `genart eval --metrics fid,kid,pr` with no --extractor. Run from the
# repo root; output.txt is this script's output.
set -e
export PYTHONPATH=$PWD TFDS_DATA_DIR=${TFDS_DATA_DIR:-/tmp/unlabelled_data}
rm -rf /tmp/unlabelled_art /tmp/unlabelled_flat runs/dcgan_art32 runs/features_art32_32
python -c "from pathlib import Path; from tests.test_selfsup import make_art_folder; make_art_folder(Path('/tmp/unlabelled_art'), n_per_mode=300, size=32)"
mkdir -p /tmp/unlabelled_flat && for d in /tmp/unlabelled_art/*; do for f in $d/*.png; do cp $f /tmp/unlabelled_flat/$(basename $d)_$(basename $f); done; done
uptime
python -m genart_jax.cli prepare folder /tmp/unlabelled_flat --name art32 --size 32 --channels 3
python -m genart_jax.cli train --config dcgan_digits --workdir runs/dcgan_art32 --no-progress \
  --steps 300 --config.data.name=art32 --config.data.channels=3
python -m genart_jax.cli train-features --data art32 --image-size 32 --channels 3 --no-progress
/usr/bin/time -f "eval: %e s wall, %M KiB peak RSS" python -m genart_jax.cli eval \
  --workdir runs/dcgan_art32 --metrics fid,kid,pr
tail -n 1 runs/dcgan_art32/eval.json
uptime
