#!/bin/sh
# The ranking table on a generated folder dataset: 4 modes (discs, squares, horizontal and
# vertical stripes in random colours; tests/test_selfsup.py:make_art_folder), 300 PNGs each at
# 32x32, prepared with labelled subfolders (the modes) and a 0.25 test split, then a SimCLR
# encoder of 300 steps, then benchmarks/feature_ranking.py. Run from the repo root.
set -e
export PYTHONPATH=$PWD TFDS_DATA_DIR=${TFDS_DATA_DIR:-/tmp/shapes_data}
rm -rf /tmp/shapes_art
python -c "from pathlib import Path; from tests.test_selfsup import make_art_folder; make_art_folder(Path('/tmp/shapes_art'), n_per_mode=300, size=32)"
python -m genart_jax.cli prepare folder /tmp/shapes_art --name shapes32 --size 32 --channels 3 \
  --labels-from-subfolders --test-fraction 0.25
python -m genart_jax.cli train-features --data shapes32 --image-size 32 --channels 3 \
  --steps 300 --batch-size 64 --no-progress
uptime
python benchmarks/feature_ranking.py --data shapes32 --image-size 32 --channels 3 --num 600 \
  --modes 3,2,1 --out benchmarks/results/feature_ranking_shapes
