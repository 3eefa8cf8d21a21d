#!/usr/bin/env bash
# Train one config on one machine with several GPUs.
#
# Usage:
#   bash launch/local_multi_gpu.sh [extra --config.* overrides...]                   # one process, all GPUs
#   MODE=multiprocess bash launch/local_multi_gpu.sh [extra --config.* overrides...] # one process per GPU
#
# Variables:
#   CONFIG   config file[:arg] (default: configs/compare.py).
#   WORKDIR  checkpoints, metrics, results and pictures (default: runs/local).
#   MODE     single (default): one process that sees every GPU; jax splits each batch over all of them.
#            multiprocess: one process per GPU, joined by jax.distributed into one run.
#   GPUS     multiprocess: comma-separated GPU ids, one process each (default: CUDA_VISIBLE_DEVICES if set,
#            else every GPU that `nvidia-smi --list-gpus` lists).
#   PORT     multiprocess: the coordinator's port on localhost (default: 12355).
#   LOG_DIR  multiprocess: where processes 1.. write their output, process_<i>.log; process 0 prints to the
#            terminal (default: $WORKDIR/logs).
#   GRACE    multiprocess: seconds the others get to stop after SIGTERM when one fails (default: 60); then
#            SIGKILL. (Processes that lost a peer can hang in collectives.)
#   PYTHON   the python to run (default: python).
#
# In multiprocess mode process i runs with CUDA_VISIBLE_DEVICES=<its GPU> and VMD_COORDINATOR_ADDRESS=
# localhost:$PORT, VMD_NUM_PROCESSES=<number of GPUs>, VMD_PROCESS_ID=i, which the library passes to
# jax.distributed.initialize() under --config.jax_distributed=True. The script waits for all processes
# and fails if any fails, stopping the others (SIGTERM, then SIGKILL after GRACE seconds).
#
# Batch: train.batch_size is the global batch, fixed by the config whatever the number of GPUs; each GPU
# takes train.batch_size / GPUs of it. The memory knob is --config.train.per_device_batch_size=N: each GPU
# then holds N sequences at a time and the step accumulates gradients over train.batch_size / (N x GPUs)
# microbatches: the same update, up to rounding.
#
# Output: only process 0 prints progress and writes metrics, results and pictures; checkpoints are written
# by orbax from all processes. Running the same command again resumes from the latest checkpoint.
set -euo pipefail

CONFIG=${CONFIG:-configs/compare.py}
WORKDIR=${WORKDIR:-runs/local}
MODE=${MODE:-single}
PORT=${PORT:-12355}
LOG_DIR=${LOG_DIR:-$WORKDIR/logs}
GRACE=${GRACE:-60}
PYTHON=${PYTHON:-python}


case "$MODE" in
  single)
    exec "$PYTHON" -m vmd_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
    ;;
  multiprocess) ;;
  *)
    echo "MODE=$MODE: choose single or multiprocess" >&2
    exit 2
    ;;
esac

if [[ -z "${GPUS:-}" ]]; then
  if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
    GPUS=$CUDA_VISIBLE_DEVICES
  else
    GPUS=$(nvidia-smi --list-gpus | awk '{ printf "%s%d", (NR > 1 ? "," : ""), NR - 1 }')
  fi
fi
IFS=, read -r -a gpus <<<"$GPUS"
num=${#gpus[@]}
if ((num == 0)); then
  echo "no GPUs: set GPUS=0,1,..." >&2
  exit 2
fi
mkdir -p "$LOG_DIR"

pids=()
# SIGTERM to every process (each saves a checkpoint if it can), then SIGKILL to those alive after GRACE s.
stop() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for ((waited = 0; waited < GRACE; waited++)); do
    alive=0
    for pid in "${pids[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then
        alive=1
      fi
    done
    if ((alive == 0)); then
      return 0
    fi
    sleep 1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}
trap 'stop; exit 130' INT TERM

for ((i = 0; i < num; i++)); do
  env_vars=(
    CUDA_VISIBLE_DEVICES="${gpus[i]}"
    VMD_COORDINATOR_ADDRESS="localhost:$PORT"
    VMD_NUM_PROCESSES="$num"
    VMD_PROCESS_ID="$i"
  )
  cmd=("$PYTHON" -m vmd_jax.main --config="$CONFIG" --workdir="$WORKDIR" --config.jax_distributed=True "$@")
  if ((i == 0)); then
    env "${env_vars[@]}" "${cmd[@]}" &
  else
    env "${env_vars[@]}" "${cmd[@]}" >"$LOG_DIR/process_$i.log" 2>&1 &
  fi
  pids+=("$!")
done
echo "started $num processes on GPUs $GPUS (processes 1.. log to $LOG_DIR)" >&2

for ((left = num; left > 0; left--)); do
  if ! wait -n; then
    echo "a process failed: stopping the others (their output is in $LOG_DIR)" >&2
    stop
    wait || true
    exit 1
  fi
done
