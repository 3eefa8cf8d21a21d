#!/usr/bin/env bash
# The README's latent path table ("How z reaches the denoiser"): vmd+ on D1 and D2 with each
# model.latent_path, seeds 0, 1 and 2 for adaln (the path of the synthetic configs and their tables) and
# low_rank_adaln (vmd+'s preset since 0.6), seed 0 for low_rank; the paper's vmd with low_rank_adaln on
# seed 0. Every run is configs/synthetic.py with its defaults (6,000 steps) and an override of the path,
# two runs at a time, one per CPU core.
#
#   bash launch/latent_paths.sh    # OUT=runs/latent_paths; a run whose results.json exists is skipped
#
# At the end it prints `python -m vmd_jax.report $OUT/runs/*` (runs that differ only in seed share a row).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/latent_paths}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT/runs" "$OUT/logs"

jobs=()  # name|config arg|overrides
add() {  # set method path seed
  local label="$2/$3"
  jobs+=("$1_${2/+/plus}_$3_s$4|$1,$2|--config.model.latent_path=$3 --config.seed=$4 --config.label=$label")
}
for seed in 0 1 2; do
  for set in d1 d2; do
    add "$set" vmd+ low_rank_adaln "$seed"
    add "$set" vmd+ adaln "$seed"
  done
done
for set in d1 d2; do
  add "$set" vmd+ low_rank 0
  add "$set" vmd low_rank_adaln 0
done

run_job() {  # job, core
  IFS='|' read -r name arg overrides <<<"$1"
  [[ -f "$OUT/runs/$name/results.json" ]] && return 0
  # shellcheck disable=SC2086  # overrides are separate flags
  taskset -c "$2" "$PYTHON" -m vmd_jax.main --config="configs/synthetic.py:$arg" --workdir="$OUT/runs/$name" \
    $overrides >"$OUT/logs/$name.log" 2>&1 ||
    echo "FAILED: $name, status $? (3: stopped by SIGTERM, run again to resume; see $OUT/logs/$name.log)"
}

worker() {  # worker k runs every second job, from the k-th, on core k
  local k=$1 i
  for ((i = k; i < ${#jobs[@]}; i += 2)); do run_job "${jobs[$i]}" "$k"; done
}

worker 0 &
worker 1 &
wait
"$PYTHON" -m vmd_jax.report "$OUT"/runs/*
