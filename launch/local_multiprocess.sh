#!/usr/bin/env bash
# Run N training processes on this machine through jax.distributed, as a multi-host
# job would run one process per host. Each process gets the same command; process 0
# coordinates and is the only one that writes metrics and checkpoints.
#
#   launch/local_multiprocess.sh N CONFIG WORKDIR [--config.key=value ...]
#
# Per-process output goes to WORKDIR/logs/process_<i>.log. Exits non-zero if any
# process fails. PORT (default 12355) sets the coordinator port.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 N CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
N=$1; CONFIG=$2; WORKDIR=$3; shift 3
PYTHON=${PYTHON:-python}
PORT=${PORT:-12355}
mkdir -p "$WORKDIR/logs"
pids=()
for ((i = 0; i < N; i++)); do
  "$PYTHON" -m esnet_jax.main --config "$CONFIG" --workdir "$WORKDIR" \
    --coordinator_address "127.0.0.1:$PORT" --num_processes "$N" --process_id "$i" "$@" \
    > "$WORKDIR/logs/process_$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "process $i failed; see $WORKDIR/logs/process_$i.log" >&2
    status=1
  fi
done
exit $status
