#!/bin/bash
# A/B of the single-process loop: old (/tmp/old_main) vs new (/work/main), rounds interleaved
for r in 1 2 3 4 5; do for t in old new; do
  root=$PWD; [ $t = old ] && root=${OLD:?a worktree of the parent commit}
  for k in 1 16; do
  d=${OUT:-/tmp/calls-ahead}/ab_${t}_${k}_$r; rm -rf $d
  PYTHONPATH=$root JAX_PLATFORMS=cpu python -m genart_jax.cli train --no-progress --config gan_mlp_digits \
   "--config.model.mlp_gan.g_hidden=(8,)" "--config.model.mlp_gan.d_hidden=(8,)" --config.train.batch_size=8 \
   --config.train.sample_every=0 --config.checkpoint.every_steps=0 --config.sample.num=4 \
   --config.train.log_every=240 --config.train.steps_per_call=$k --steps 2400 --workdir $d > $d.log 2>&1
  python - $d $t $k <<'PY'
import json, sys, statistics
recs = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")][1:]
ips = statistics.median(r["images_per_sec"] for r in recs)
print(f"{sys.argv[2]} k={sys.argv[3]}: {8e6/ips:.0f} us/step")
PY
  done
done; done
