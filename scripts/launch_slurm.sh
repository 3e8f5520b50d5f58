#!/usr/bin/env bash
# Multi-node / multi-GPU training with SLURM: one genart process per GPU (or per node).
#
# Usage:
#   sbatch --nodes=2 --ntasks-per-node=4 --gpus-per-node=4 scripts/launch_slurm.sh \
#       --config dcgan64_celeba --workdir /shared/runs/celeba64 [--config.KEY=VALUE ...]
#   # one process per node, owning all its GPUs:
#   sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=4 scripts/launch_slurm.sh ...
#
# Every task runs the same command; jax.distributed.initialize() reads the SLURM environment
# (coordinator = first node, process id = SLURM_PROCID), the mesh spans all GPUs of all nodes,
# each process reads only its block of every global batch, and only process 0 writes metrics
# and sample grids. The workdir must be on a filesystem all nodes share (checkpoints are
# written collectively). Re-submitting the same command resumes from the latest checkpoint;
# with --requeue, a preempted job (SIGTERM) checkpoints, exits with 143 and continues on requeue.
# Install once on the shared filesystem: pip install -e ".[cuda]"
#SBATCH --job-name=genart
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --output=genart-%j.out
set -euo pipefail
if [ "$#" -eq 0 ]; then
  sed -n '2,19p' "$0"
  exit 2
fi
# A peer that dies ends the others within this many seconds instead of hanging.
export GENART_HEARTBEAT_TIMEOUT="${GENART_HEARTBEAT_TIMEOUT:-120}"
srun --kill-on-bad-exit=1 genart train --no-progress "$@"
