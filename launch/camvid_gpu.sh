#!/usr/bin/env bash
# CamVid by the field's protocol on one GPU, in one call of a machine with JAX but no
# registry: the recipe of configs/camvid_trainval.py trained twice at once, on train+val
# (the weights to ship) and on train alone (its val figure), for as many epochs, up to
# 1000, as fit in BUDGET_S seconds from the start of this script.
#
#   launch/camvid_gpu.sh OUT [PACK] [WHEELS]     (defaults .camvid, made by
#                                                 launch/camvid_pack.py, and .whl, by
#                                                 launch/gpu_wheels.sh)
#
# A probe (PROBE_STEPS steps of both runs at once, half of them at half scale) measures
# the step times and the fixed costs (start, compilations, evaluation, checkpoint); the
# plan sizes both schedules to the time left, and `timeout` stops a run that would still
# overrun (SIGTERM: it saves a resumable checkpoint). OUT gets log.txt, plan.json and per
# run NAME.npz (final weights, original layout) and NAME.tar (config, metrics, evaluation,
# log).
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 OUT [PACK] [WHEELS]" >&2
  exit 2
fi
start=$(date +%s)
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
cd "$(dirname "$0")/.."
PACK=$(cd "${2:-.camvid}" && pwd)
WHEELS=${3:-.whl}
BUDGET_S=${BUDGET_S:-540}
PROBE_STEPS=${PROBE_STEPS:-96}
PROBE_LIMIT_S=${PROBE_LIMIT_S:-360}  # start, two compilations (one at the phase switch), eval
WORKERS=${WORKERS:-6}
EXTRA=${EXTRA:-}  # more --config. overrides for every run (tests on a CPU)
WORK=${WORK:-/tmp/camvid_gpu}
PYTHON=${PYTHON:-python3}
exec > >(tee -a "$OUT/log.txt") 2>&1
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=$(mktemp -d)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
    "$WHEELS"/*.whl
  export PYTHONPATH=".:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
# Two trainings share the GPU: neither may take JAX's default 75% of its memory.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}
# The probe's compilations of the eval step (and of anything else unchanged) serve the runs.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/camvid_gpu_jax_cache}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
lscpu | grep 'Model name' || true
rm -rf "$WORK"; mkdir -p "$WORK"

train() {  # NAME SPLIT STEPS HALF_SCALE_STEPS LIMIT_S [overrides...]
  local name=$1 split=$2 steps=$3 half=$4 limit=$5
  shift 5
  timeout --signal=TERM --kill-after=30 "$limit" \
    "$PYTHON" -m esnet_jax.main --config configs/camvid_trainval.py --workdir "$WORK/$name" \
      --config.dataset.root="$PACK" --config.dataset.train_split="$split" \
      --config.num_train_steps="$steps" --config.eval_every_steps="$steps" \
      --config.dataset.phases="(($half,0.5,176,240),)" \
      --config.dataset.num_workers="$WORKERS" "$@" > "$WORK/$name.log" 2>&1
}

echo "== probe: $PROBE_STEPS steps of each run at once ($(date -u +%T))"
half=$((PROBE_STEPS / 2))
log=$((PROBE_STEPS / 8))
probe() {
  rm -rf "$WORK"/probe_*
  probe_start=$(date +%s)
  train probe_trainval train+val "$PROBE_STEPS" "$half" "$PROBE_LIMIT_S" \
    --config.log_every_steps=$log $EXTRA &
  local p1=$!
  train probe_train train "$PROBE_STEPS" "$half" "$PROBE_LIMIT_S" \
    --config.log_every_steps=$log $EXTRA &
  local p2=$! s1=0 s2=0
  wait $p1 || s1=$?
  wait $p2 || s2=$?
  probe_s=$(($(date +%s) - probe_start))
  if [ $s1 = 124 ] || [ $s2 = 124 ]; then
    tail -n 30 "$WORK"/probe_*.log
    echo "== the probe outran PROBE_LIMIT_S=$PROBE_LIMIT_S s: raise it or lower PROBE_STEPS"
    exit 1
  fi
  return $((s1 || s2))
}
if ! probe; then
  tail -n 30 "$WORK"/probe_*.log
  echo "== the probe failed with $WORKERS loader processes a run: again with none"
  WORKERS=0
  probe || { tail -n 30 "$WORK"/probe_*.log; exit 1; }
fi

"$PYTHON" launch/camvid_gpu_plan.py --work "$WORK" --pack "$PACK" --probe-steps "$PROBE_STEPS" \
  --probe-seconds "$probe_s" --seconds-left $((BUDGET_S - ($(date +%s) - start))) \
  > "$OUT/plan.json"
cat "$OUT/plan.json"
read -r epochs tv_steps tv_half t_steps t_half limit < <("$PYTHON" -c \
  "import json; p = json.load(open('$OUT/plan.json')); print(*(p[k] for k in
  ('epochs', 'trainval_steps', 'trainval_half', 'train_steps', 'train_half', 'limit_s')))")

echo "== $epochs epochs each: train+val $tv_steps steps, train $t_steps ($(date -u +%T))"
status=0
train trainval train+val "$tv_steps" "$tv_half" "$limit" $EXTRA &
p1=$!
train train train "$t_steps" "$t_half" "$limit" $EXTRA &
p2=$!
wait $p1 || status=$?
wait $p2 || status=$?
for name in trainval train; do
  tail -n 4 "$WORK/$name.log"
  "$PYTHON" -m esnet_jax.convert --checkpoint "$WORK/$name" --which latest \
    --out-torch "$OUT/$name.npz" || status=1
  tar -C "$WORK" -cf "$OUT/$name.tar" --exclude=checkpoints --exclude=best "$name" "$name.log" \
    "probe_$name/metrics.jsonl" "probe_$name.log" || status=1
done
echo "== done in $(($(date +%s) - start)) s, status $status"
exit $status
