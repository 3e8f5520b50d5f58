#!/usr/bin/env bash
# Run here, where PyPI can be reached: downloads the wheels that a lent H100/H200 lacks (Python
# 3.12, no network; list and versions in scripts/device_wheels.txt) into the git-ignored folder
# .device_wheels/ (or DEST), about 11 MiB. Name that folder in the device call's `carry` and
# benchmarks/device_check.sh installs, there, the ones the machine lacks.
#   bash scripts/fetch_device_wheels.sh [DEST]        # PYTHON=... picks the python with pip
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.device_wheels}
py=${PYTHON:-python3}
list=scripts/device_wheels.txt
mkdir -p "$dest"
rm -f "$dest"/*.whl  # one version of each: two would stop the install there
# NAME==VERSION lines; those marked "sdist only" have no wheel on PyPI: pip builds them here.
mapfile -t binary < <(grep -v -e '^\s*#' -e 'sdist only' "$list" | sed 's/#.*//; s/\s//g' | grep .)
mapfile -t sdist < <(grep -v '^\s*#' "$list" | grep 'sdist only' | sed 's/#.*//; s/\s//g')
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" "${binary[@]}"
if ((${#sdist[@]})); then
  "$py" -m pip wheel -q --no-deps -w "$dest" "${sdist[@]}"
fi
"$py" scripts/device_wheels.py verify "$dest"
