#!/bin/sh
# FID and KID rankings on the folder dataset of tests/test_selfsup.py (make_art_folder: 4 shapes
# in random colours, 16x16x3, test fraction 0.25) for train-features seeds 0, 1, 2 at that
# test's flags (120 steps, batch 32, width 8, 32-d feature layer), at the test's old size (150
# per shape: 448 train, 152 test) and its new one (300 per shape: 900 train, 300 test); and the
# digits at 16 px, seed 0, with the same flags. Writes t{PER_SHAPE}_{SEED}/ and digits_0/ here.
# Run from the repo root; about 5 minutes on a shared 2-core machine.
set -e
export PYTHONPATH=$PWD
R=benchmarks/results/feature_ranking_shapes16_seeds
W=${WORK:-/tmp/feature_ranking_seeds}
FLAGS="--image-size 16 --steps 120 --batch-size 32 --width 8 --feature-dim 32 --no-progress"
rm -rf "$W"
for N in 150 300; do
  python -c "from pathlib import Path; from tests.test_selfsup import make_art_folder; make_art_folder(Path('$W/art$N'), n_per_mode=$N)"
  python -m genart_jax.cli prepare folder "$W/art$N" --name shapes --size 16 \
    --labels-from-subfolders --test-fraction 0.25 --data_dir "$W/data$N"
  for S in 0 1 2; do
    python -m genart_jax.cli train-features --data shapes --channels 3 --data_dir "$W/data$N" \
      $FLAGS --seed $S --out "$W/enc${N}_$S"
    python benchmarks/feature_ranking.py --data shapes --image-size 16 --channels 3 \
      --data_dir "$W/data$N" --num 10000 --modes 3,2,1 --encoder "$W/enc${N}_$S" --out "$R/t${N}_$S"
  done
done
python -m genart_jax.cli train-features --data digits $FLAGS --seed 0 --out "$W/enc_digits_0"
python benchmarks/feature_ranking.py --data digits --image-size 16 --channels 1 --num 10000 \
  --modes 7,4,1 --encoder "$W/enc_digits_0" --out "$R/digits_0"
