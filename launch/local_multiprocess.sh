#!/usr/bin/env bash
# N JAX processes of one job on this machine (CPU): the multi-host code path without a cluster.
#
#   launch/local_multiprocess.sh N [ARGS...]
#
# starts N copies of `python -m $MODULE ARGS... --coordinator_address=127.0.0.1:PORT
# --num_processes=N --process_id=i`, waits for all of them and exits non-zero if any fails
# (the others are then stopped: they would wait forever on the missing process). Process 0 writes
# to this terminal; process i > 0 to $LOG_DIR/process_i.log.
#
#   MODULE   tgg_jax.train.main (default) or tgg_jax.evals.main (a sharded eval)
#   PORT     coordinator port (default: a free one)
#   LOG_DIR  where processes 1..N-1 log (default: a new temporary directory)
#   PYTHON   the interpreter (default: python3)
#
# Example: two processes of two simulated CPU devices each, the tiny run:
#   launch/local_multiprocess.sh 2 --config configs/tiny.py --workdir runs/tiny_2p --cpu_devices 2 \
#       --config.tower_align.steps=0   (stage 0 runs in one process only)
set -uo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES [ARGS...]   (see the header of this script)" >&2
  exit 2
fi
NUM_PROCESSES=$1
shift
MODULE=${MODULE:-tgg_jax.train.main}
PYTHON=${PYTHON:-python3}
# Port 0 asks the kernel for a free port; it stays free until the coordinator binds it.
PORT=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
LOG_DIR=${LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/tgg_local.XXXXXX")}
mkdir -p "$LOG_DIR"

pids=()
stop_all() {
  local signal=$1
  for pid in "${pids[@]}"; do
    kill "-$signal" "$pid" 2>/dev/null
  done
}
# Ctrl-C or SIGTERM to this script reaches every process (SIGTERM makes tgg-train checkpoint).
trap 'stop_all TERM' INT TERM

echo "local_multiprocess: $NUM_PROCESSES x $MODULE, coordinator 127.0.0.1:$PORT," \
  "logs of processes 1..$((NUM_PROCESSES - 1)) in $LOG_DIR" >&2
for ((i = 0; i < NUM_PROCESSES; i++)); do
  flags=(--coordinator_address="127.0.0.1:$PORT" --num_processes="$NUM_PROCESSES" --process_id="$i")
  if ((i == 0)); then
    "$PYTHON" -m "$MODULE" "$@" "${flags[@]}" &
  else
    "$PYTHON" -m "$MODULE" "$@" "${flags[@]}" >"$LOG_DIR/process_$i.log" 2>&1 &
  fi
  pids+=($!)
done

# Poll rather than wait on one pid at a time: a failure anywhere must stop the rest at once.
status=0
remaining=$NUM_PROCESSES
declare -A done_pids=()
while ((remaining > 0)); do
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    [[ -n "${done_pids[$pid]:-}" ]] && continue
    kill -0 "$pid" 2>/dev/null && continue
    wait "$pid"
    rc=$?
    done_pids[$pid]=1
    remaining=$((remaining - 1))
    if ((rc != 0 && status == 0)); then
      status=$rc
      echo "local_multiprocess: process $i exited with status $rc; stopping the others" >&2
      if ((i > 0)); then
        tail -n 30 "$LOG_DIR/process_$i.log" >&2
      fi
      stop_all TERM
      (sleep 20 && stop_all KILL) >/dev/null 2>&1 &
      killer=$!
    fi
  done
  ((remaining > 0)) && sleep 0.5
done
if [[ -n "${killer:-}" ]]; then
  kill "$killer" 2>/dev/null
fi
exit "$status"
