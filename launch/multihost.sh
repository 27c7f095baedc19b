#!/usr/bin/env bash
# Generic multi-host launch: run this same command on every host, with the environment
# telling each host who it is (any scheduler, or by hand over ssh):
#
#   COORDINATOR=host0:12355 NUM_PROCESSES=4 PROCESS_ID=<0..3> \
#     launch/multihost.sh CONFIG WORKDIR [--config.key=value ...]
#
# Process 0 runs the coordinator at COORDINATOR; the port must be reachable from every
# host. Each process uses all accelerators of its host; config.batch_size is global.
# The workdir must be on a filesystem that every host sees.
set -euo pipefail
if [ $# -lt 2 ] || [ -z "${COORDINATOR:-}" ] || [ -z "${NUM_PROCESSES:-}" ] || [ -z "${PROCESS_ID:-}" ]; then
  echo "usage: COORDINATOR=host:port NUM_PROCESSES=N PROCESS_ID=i $0 CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
CONFIG=$1; WORKDIR=$2; shift 2
exec "${PYTHON:-python}" -m esnet_jax.main --config "$CONFIG" --workdir "$WORKDIR" \
  --coordinator_address "$COORDINATOR" --num_processes "$NUM_PROCESSES" \
  --process_id "$PROCESS_ID" "$@"
