#!/usr/bin/env bash
# The README's "VMD that never loses" tables and figures: MDM, the paper's VMD (`vmd`) and the recipe
# (`vmd+`) on D1, D2 (one block and two), pair_corr at p = 0.25, 0.5, 0.75 and the Markov set, then the
# ablation rows (D2, and sampled values on pair_corr). Every run is configs/synthetic.py with its
# defaults (6,000 steps); vmd+ runs on seeds 0, 1, 2 on D1 and D2 (B = 1 and 2), the rest on seed 0.
#
#   bash launch/never_loses.sh    # in the environment of the install; OUT=runs/never_loses, two runs at
#                                 # a time, one per CPU core
#
# A run whose results.json exists is skipped, so the same command resumes a cut-off table (a run cut
# off mid-training resumes from its checkpoint). At the end it prints
# `python -m vmd_jax.report --figures=$OUT/figures $OUT/runs/*` (the tables, one row per method with
# the mean ± standard deviation over seeds, and nfe_<set>.png per set).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/never_loses}
DATA=${DATA:-$OUT/data}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT/runs" "$OUT/logs" "$OUT/failed"
rm -f "$OUT"/failed/*

jobs=()  # name|config arg|overrides|source workdir to evaluate again (eval-only rows)
add() { jobs+=("$1|$2|${3:-}|${4:-}"); }

for set in d1 d2; do
  for block in "" ",block2"; do
    tag=${set}${block#,}
    add "${tag}_mdm" "$set,mdm$block"
    add "${tag}_vmd" "$set,vmd$block"
    for seed in 0 1 2; do add "${tag}_vmdplus_s$seed" "$set,vmd+$block" "--config.seed=$seed"; done
  done
done
for p in 0.25 0.5 0.75; do
  for method in mdm vmd vmd+; do
    add "pair_corr_p${p}_${method/+/plus}" "pair_corr,$method" "--config.data.p=$p"
  done
done
for method in mdm vmd vmd+; do add "markov_${method/+/plus}" "markov,$method"; done
# ablations on D2 (seed 0): what each part of the recipe does
add "d2_vmd_per_step" "d2,vmd" "--config.eval.z_policy=per_step --config.label=vmd/z-per-step" "d2_vmd"
add "d2_vmdplus_argmax" "d2,vmd+" "--config.eval.token_rule=argmax --config.label=vmd+/argmax" "d2_vmdplus_s0"
add "d2_vmdplus_start_time" "d2,vmd+" "--config.model.time_input=start --config.label=vmd+/start-time"
add "d2_vmdplus_per_step" "d2,vmd+" \
  "--config.objective.z_policy=per_step --config.eval.z_policy=per_step --config.label=vmd+/z-per-step"
# sampled values at every step instead of the argmax at parallel steps (the same checkpoints)
add "d2_vmdplus_sample" "d2,vmd+" "--config.eval.token_rule=sample --config.label=vmd+/sample" "d2_vmdplus_s0"
for p in 0.25 0.5 0.75; do
  add "pair_corr_p${p}_vmdplus_sample" "pair_corr,vmd+" \
    "--config.data.p=$p --config.eval.token_rule=sample --config.label=vmd+/sample" "pair_corr_p${p}_vmdplus"
done

run_job() {
  IFS='|' read -r name arg overrides source <<<"$1"
  local workdir="$OUT/runs/$name" mode=train
  [[ -f "$workdir/results.json" ]] && return 0
  if [[ -n "$source" ]]; then  # evaluate a trained run's checkpoint with other eval options
    while [[ ! -f "$OUT/runs/$source/results.json" ]]; do
      [[ -f "$OUT/failed/$source" ]] && { echo "SKIPPED: $name ($source failed)"; return 0; }
      sleep 20
    done
    [[ -d "$workdir" ]] || cp -r "$OUT/runs/$source" "$workdir"
    rm -f "$workdir/results.json"
    mode=eval
  fi
  # shellcheck disable=SC2086  # overrides are separate flags
  taskset -c "$2" "$PYTHON" -m vmd_jax.main --config="configs/synthetic.py:$arg" --workdir="$workdir" \
    --mode=$mode --config.data.data_dir="$DATA" $overrides >"$OUT/logs/$name.log" 2>&1 \
    || { echo "FAILED: $name (see $OUT/logs/$name.log)"; touch "$OUT/failed/$name"; }
}

worker() {  # worker k runs jobs k, k + 2, ... on core k
  local k=$1
  for ((i = k; i < ${#jobs[@]}; i += 2)); do run_job "${jobs[$i]}" "$k"; done
}

worker 0 &
worker 1 &
wait
"$PYTHON" -m vmd_jax.report --figures="$OUT/figures" "$OUT"/runs/*
