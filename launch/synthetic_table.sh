#!/usr/bin/env bash
# Train and evaluate every synthetic (dataset, method) run of the README table, then print the table.
# Usage: bash launch/synthetic_table.sh [WORKDIR] [extra --config.* overrides...]
# Each run writes WORKDIR/<dataset>_<method>/results.json; finished runs are resumed, not redone.
set -euo pipefail
workdir=${1:-runs/synthetic}
shift || true
for dataset in pair pair_nonuniform d1 d2; do
  for method in mdm vmd; do
    python -m vmd_jax.main --config="configs/synthetic.py:${dataset},${method}" \
      --workdir="${workdir}/${dataset}_${method}" "$@"
  done
done
python -m vmd_jax.report "${workdir}"/*_*/
