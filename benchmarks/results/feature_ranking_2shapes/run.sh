#!/bin/sh
# The ranking table on a generated folder dataset: 4 modes (discs, squares, horizontal and
# vertical stripes in random colours; tests/test_selfsup.py:make_art_folder), 300 PNGs each at
# 32x32, prepared with labelled subfolders (the modes; they give the classifier column) and a
# 0.25 test split; a DCGAN (dcgan_digits' settings on this data) at 1000 steps and its step-500
# checkpoint as the models, the default SimCLR encoder and a classifier, then
# benchmarks/feature_ranking.py. Run from the repo root.
set -e
export PYTHONPATH=$PWD TFDS_DATA_DIR=${TFDS_DATA_DIR:-/tmp/shapes_data}
rm -rf /tmp/shapes_art
python -c "from pathlib import Path; from tests.test_selfsup import make_art_folder; make_art_folder(Path('/tmp/shapes_art'), n_per_mode=300, size=32)"
python -m genart_jax.cli prepare folder /tmp/shapes_art --name shapes32 --size 32 --channels 3 \
  --labels-from-subfolders --test-fraction 0.25 --overwrite
python -m genart_jax.cli train --config dcgan_digits --workdir runs/dcgan_shapes32 --no-progress \
  --no-resume --steps 1000 --config.data.name=shapes32 --config.data.channels=3 \
  --config.checkpoint.every_steps=500
python -m genart_jax.cli train-classifier --data shapes32 --image-size 32 --channels 3 --no-progress
python -m genart_jax.cli train-features --data shapes32 --image-size 32 --channels 3 --no-progress
uptime
python benchmarks/feature_ranking.py --data shapes32 --image-size 32 --channels 3 --num 600 \
  --models runs/dcgan_shapes32,runs/dcgan_shapes32@500 \
  --modes 3,2,1 --out benchmarks/results/feature_ranking_2shapes
uptime
