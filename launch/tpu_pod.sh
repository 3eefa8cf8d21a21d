#!/usr/bin/env bash
# Train one config on every worker of a Cloud TPU VM pod slice (v4-32, v5e-64, ...): one process per
# worker (host), each driving that host's TPU chips, all of them one run.
#
# Usage (from your own machine, with gcloud logged in):
#   TPU_NAME=my-pod ZONE=us-central2-b WORKDIR=/mnt/shared/runs/d2_vmd bash launch/tpu_pod.sh \
#       [extra --config.* overrides...]
#
# Variables:
#   TPU_NAME      name of the TPU VM (pod slice), as `gcloud compute tpus tpu-vm list` shows it. Required.
#   ZONE          its zone. Required.
#   PROJECT       its gcloud project (default: the project gcloud is configured with).
#   WORKDIR       checkpoints, metrics, results and pictures. Required. It must be one directory that every
#                 worker sees at the same path: a shared filesystem (Filestore or another NFS), or a Cloud
#                 Storage bucket mounted with gcsfuse at the same mount point on each worker. A path on
#                 each worker's own disk does not work: orbax writes each checkpoint from all processes.
#   CONFIG        config file[:arg], relative to REPO_DIR (default: configs/synthetic.py:d2,vmd).
#   REPO_DIR      the repository on each worker; relative paths start at the worker's home directory
#                 (default: vmd_jax).
#   REPO_URL      git URL to clone into REPO_DIR on workers that do not have it yet (default: empty, so
#                 REPO_DIR must already be there on every worker).
#   PYTHON        python on the workers (default: python3).
#   SKIP_INSTALL  1 skips the install step (default: 0).
#
# Two ssh commands reach all workers at once (--worker=all): first the install, `pip install -e ".[tpu]"`
# in REPO_DIR; then the same training command everywhere,
#   python -m vmd_jax.main --config=$CONFIG --workdir=$WORKDIR --config.jax_distributed=True
#, where
# jax.distributed.initialize() finds the coordinator, the number of processes and each process's id
# from the TPU VM metadata. For your own data (configs/sequences.py), data.path must exist on every worker.
#
# Batch: train.batch_size is the global batch, fixed by the config whatever the number of chips; each
# device takes train.batch_size / devices of it. The memory knob is --config.train.per_device_batch_size=N:
# each device then holds N sequences at a time and the step accumulates gradients over
# train.batch_size / (N x devices) microbatches: the same update, up to rounding.
#
# Output: only process 0 prints progress and writes metrics, results and pictures; checkpoints are written
# by orbax from all processes. The ssh sessions last as long as the run: start this script in tmux or
# screen. A run that stopped (lost connection, preemption) resumes from its latest checkpoint when this
# script is run again with the same WORKDIR.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME to the name of the TPU VM}"
: "${ZONE:?set ZONE to the zone of the TPU VM}"
: "${WORKDIR:?set WORKDIR to a directory that every worker sees at the same path}"
CONFIG=${CONFIG:-configs/synthetic.py:d2,vmd}
REPO_DIR=${REPO_DIR:-vmd_jax}
REPO_URL=${REPO_URL:-}
PYTHON=${PYTHON:-python3}
SKIP_INSTALL=${SKIP_INSTALL:-0}


gcloud_ssh=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all)
if [[ -n "${PROJECT:-}" ]]; then
  gcloud_ssh+=(--project="$PROJECT")
fi
repo=$(printf '%q' "$REPO_DIR")

if [[ "$SKIP_INSTALL" != 1 ]]; then
  install="set -e"
  if [[ -n "$REPO_URL" ]]; then
    install+="; [ -d $repo ] || git clone $(printf '%q' "$REPO_URL") $repo"
  fi
  install+="; cd $repo && $PYTHON -m pip install -q -e '.[tpu]'"
  "${gcloud_ssh[@]}" --command="$install"
fi

args=(--config="$CONFIG" --workdir="$WORKDIR" --config.jax_distributed=True "$@")
"${gcloud_ssh[@]}" --command="cd $repo && $PYTHON -m vmd_jax.main $(printf '%q ' "${args[@]}")"
