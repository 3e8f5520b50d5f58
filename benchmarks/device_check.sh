#!/usr/bin/env bash
# The accelerator check (benchmarks/device_check.py): on an NVIDIA H100/H200 with jax, flax,
# optax and orbax, no network, under 8 minutes; exits non-zero on anything unexpected.
#   bash benchmarks/device_check.sh [OUT]        # default OUT: benchmarks/results/gpu-<device>
#   bash benchmarks/device_check.sh --dry OUT    # the plumbing on CPU, tiny sizes
#   bash benchmarks/device_check.sh OUT --parts bench-hvae32,bench-hvae-cifar32
#                                                # the hierarchical VAE's parts alone (last
#                                                # in a full run; its 480 s may not reach them)
# The lent machines' image lacks tensorflow-datasets, array_record, grain, ml_collections and
# what they need. Once, here: `bash scripts/fetch_device_wheels.sh` (into the git-ignored
# .device_wheels/, about 11 MiB); name .device_wheels in the device call's carry. This script
# then installs those the machine lacks (scripts/device_wheels.py install) into
# $GENART_DEVICE_SITE (default /tmp/genart_device_site), puts that first on PYTHONPATH, and
# stops with one line if a module the check needs still does not import.
# PYTHON (default python3) picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
wheels=${GENART_DEVICE_WHEELS:-.device_wheels}
site=${GENART_DEVICE_SITE:-/tmp/genart_device_site}
if compgen -G "$wheels/*.whl" >/dev/null; then
  "$py" scripts/device_wheels.py install "$wheels" --target "$site"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$py" scripts/device_wheels.py check
if [[ "${1:-}" != "--dry" ]] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
fi
if [[ "${1:-}" == "--dry" ]]; then exec "$py" -m benchmarks.device_check "$@"; fi
exec timeout 480 "$py" -m benchmarks.device_check "$@"
