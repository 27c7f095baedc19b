#!/usr/bin/env bash
# Download, on a machine with PyPI, the wheels that `launch/gpu_report.sh` installs on a
# GPU machine that has JAX, flax, optax, orbax-checkpoint, chex and numpy but no registry:
# grain, ml-collections and tensorboardX, and those of their needs that such images lack.
#
#   launch/gpu_wheels.sh [DIR]      (default .whl; CPython 3.12, x86-64 Linux)
set -euo pipefail
DIR=${1:-.whl}
PYTHON=${PYTHON:-python3}
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
mkdir -p "$DIR"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d "$DIR" \
  grain==0.2.18 array-record==0.8.6 portpicker==1.6.0 ml-collections==1.1.0 tensorboardX==2.6.5
ls "$DIR"
