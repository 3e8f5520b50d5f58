#!/usr/bin/env bash
# The accelerator check (benchmarks/device_check.py): on an NVIDIA H100/H200 with jax, flax,
# optax and orbax, no network, under 8 minutes; exits non-zero on anything unexpected.
#   bash benchmarks/device_check.sh [OUT]        # default OUT: benchmarks/results/gpu-<device>
#   bash benchmarks/device_check.sh --dry OUT    # the plumbing on CPU, tiny sizes
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" != "--dry" ]] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
fi
if [[ "${1:-}" == "--dry" ]]; then exec python -m benchmarks.device_check "$@"; fi
exec timeout 480 python -m benchmarks.device_check "$@"
