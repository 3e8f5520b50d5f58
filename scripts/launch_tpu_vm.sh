#!/usr/bin/env bash
# Training on all workers of a Cloud TPU VM slice (v4-32, v5e-16, ...).
#
# Usage:
#   scripts/launch_tpu_vm.sh TPU_NAME ZONE --config dcgan64_celeba --workdir /mnt/shared/run \
#       [--config.KEY=VALUE ...]
#   GENART_SRC=https://github.com/YOU/genart_jax.git scripts/launch_tpu_vm.sh TPU_NAME ZONE ...
#
# Copies nothing itself: every worker needs this repository (GENART_SRC is cloned into
# ~/genart_jax when given) and installs it with the TPU extra. The same `genart train` runs on
# all workers at once; JAX detects the slice (TPU_WORKER_HOSTNAMES) and joins the hosts, the
# mesh spans every chip, and only worker 0 writes metrics and grids. The workdir must be
# a folder all workers share (NFS / Filestore mounted at the same path). Re-running resumes from the latest
# checkpoint.
set -euo pipefail
if [ "$#" -lt 3 ]; then
  sed -n '2,14p' "$0"
  exit 2
fi
TPU_NAME="$1"; ZONE="$2"; shift 2
ARGS=$(printf ' %q' "$@")
SETUP='cd ~ && { [ -d genart_jax ] || git clone "'"${GENART_SRC:-}"'" genart_jax; } && cd genart_jax && pip install -q -e ".[tpu]"'
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all \
  --command "$SETUP && genart train --no-progress$ARGS"
