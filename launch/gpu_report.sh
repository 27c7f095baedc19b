#!/usr/bin/env bash
# The GPU report of `python -m esnet_jax.benchmark --suite gpu` from this checkout, on a
# machine whose Python already has JAX with its CUDA plugin: the wheels that
# `launch/gpu_wheels.sh` downloaded go into a private folder (nothing installed is
# upgraded), then the report runs and its JSON and text land in OUT.
#
#   launch/gpu_report.sh OUT [WHEELS] [-- extra benchmark flags, e.g. --smoke]
#
# OUT/gpu.json is the report; OUT/gpu.log is everything it printed.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 OUT [WHEELS] [-- benchmark flags]" >&2
  exit 2
fi
OUT=$1; shift
WHEELS=.whl
if [ $# -gt 0 ] && [ "$1" != -- ]; then WHEELS=$1; shift; fi
[ "${1:-}" = -- ] && shift
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
  echo "$0: no wheels in $WHEELS (run launch/gpu_wheels.sh where PyPI can be reached)" >&2
  exit 2
fi
SITE=$(mktemp -d)
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
  "$WHEELS"/*.whl
export PYTHONPATH=".:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi 2>&1 | tee "$OUT/gpu.log" || true
"$PYTHON" -m esnet_jax.benchmark --suite gpu --json "$OUT/gpu.json" "$@" 2>&1 | tee -a "$OUT/gpu.log"
