#!/usr/bin/env bash
# TinyGroundingGPT on a Cloud TPU slice: the same command on every worker, over gcloud ssh.
#
#   TPU_NAME=tgg-v5p-64 ZONE=europe-west4-b launch/tpu_vm.sh setup
#   TPU_NAME=... ZONE=... STAGE=stage2 SIZE=3b WORKDIR=/mnt/runs/stage2 launch/tpu_vm.sh train [--config.x=y ...]
#   TPU_NAME=... ZONE=... EVAL=rec.py:refcoco CHECKPOINT=/mnt/runs/stage3/checkpoints/6555 \
#       WORKDIR=/mnt/runs/eval/refcoco launch/tpu_vm.sh eval [--config.x=y ...]
#
#   setup   copy this checkout to every worker and install it with jax[tpu]
#   train   tgg-train --config configs/$STAGE.py:$SIZE --workdir $WORKDIR ARGS  on every worker
#   eval    tgg-eval --config configs/eval/$EVAL --checkpoint $CHECKPOINT --workdir $WORKDIR ARGS
#
#   TPU_NAME, ZONE  the slice (required)
#   GCLOUD_FLAGS    more gcloud flags (e.g. "--project=P --internal-ip")
#   REMOTE_DIR      the repository on each worker, relative to its home (default tgg-jax)
#   STAGE, SIZE     as in slurm_gpu.sbatch (default stage2, 3b)
#   WORKDIR         run directory on storage that every worker sees, the same path on each (an
#                   NFS / Filestore or gcsfuse mount): checkpoints are written by all workers
#                   together. Default runs/$STAGE under REMOTE_DIR, which is right only for a
#                   single-host slice. The data (--config.data.data_dir) likewise.
#   COORDINATOR     host:port of process 0 (default: worker 0's internal IP, port 8476)
#   DRY_RUN=1       print the gcloud commands instead of running them
#
# jax.distributed: tgg-train / tgg-eval call it when JAX_COORDINATOR_ADDRESS is set, which this
# script does on every worker; the process count and ids come from the TPU VM's metadata.
# The library itself holds no cloud code: everything Google-Cloud-specific is in this file.
set -euo pipefail

usage() {
  sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
[[ $# -ge 1 ]] || usage
action=$1
shift
: "${TPU_NAME:?set TPU_NAME to the TPU VM slice}"
: "${ZONE:?set ZONE to the zone of the slice}"
REMOTE_DIR=${REMOTE_DIR:-tgg-jax}
STAGE=${STAGE:-stage2}
SIZE=${SIZE:-3b}
read -r -a gcloud_flags <<<"${GCLOUD_FLAGS:-}"
REPO=$(cd "$(dirname "$0")/.." && pwd)

run() {
  if [[ -n "${DRY_RUN:-}" ]]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

on_all_workers() {  # on_all_workers COMMAND_STRING
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all "${gcloud_flags[@]}" \
    --command="$1"
}

coordinator() {
  if [[ -n "${COORDINATOR:-}" ]]; then
    echo "$COORDINATOR"
  elif [[ -n "${DRY_RUN:-}" ]]; then
    echo "WORKER0_IP:8476"
  else
    local ip
    ip=$(gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone="$ZONE" "${gcloud_flags[@]}" \
           --format='value(networkEndpoints[0].ipAddress)')
    echo "$ip:8476"
  fi
}

case "$action" in
  setup)
    archive=$(mktemp "${TMPDIR:-/tmp}/tgg-jax.XXXXXX.tar.gz")
    trap 'rm -f "$archive"' EXIT
    tar -C "$REPO" --exclude=./runs --exclude=./.git -czf "$archive" .
    run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:tgg-jax.tar.gz" --zone="$ZONE" \
      --worker=all "${gcloud_flags[@]}"
    dir=$(printf '%q' "$REMOTE_DIR")
    on_all_workers "mkdir -p $dir && tar -xzf tgg-jax.tar.gz -C $dir && rm tgg-jax.tar.gz &&
      pip install -q -e $dir 'jax[tpu]==0.10.2'"
    ;;
  train | eval)
    if [[ "$action" == eval ]]; then
      : "${EVAL:?set EVAL to a config under configs/eval/ (e.g. rec.py:refcoco)}"
      : "${CHECKPOINT:?set CHECKPOINT to the checkpoint tgg-eval should load}"
      [[ -f "$REPO/configs/eval/${EVAL%%:*}" ]] || { echo "no configs/eval/${EVAL%%:*}" >&2; exit 2; }
      name=${EVAL/.py/}
      cmd=(tgg-eval --config "configs/eval/$EVAL" --checkpoint "$CHECKPOINT"
           --workdir "${WORKDIR:-runs/eval/${name//[:,\/]/_}}")
    else
      [[ -f "$REPO/configs/$STAGE.py" ]] || { echo "STAGE=$STAGE: no configs/$STAGE.py" >&2; exit 2; }
      config="configs/$STAGE.py"
      [[ "$STAGE" == tiny ]] || config="$config:$SIZE"
      cmd=(tgg-train --config "$config" --workdir "${WORKDIR:-runs/$STAGE}")
    fi
    remote="cd $(printf '%q' "$REMOTE_DIR") && JAX_COORDINATOR_ADDRESS=$(coordinator) $(printf '%q ' "${cmd[@]}" "$@")"
    on_all_workers "$remote"
    ;;
  *)
    usage
    ;;
esac
