#!/usr/bin/env bash
# The README's "VMD that never loses" tables and figures: MDM, the paper's VMD (`vmd`) and the recipe
# (`vmd+`) on D1, D2 (one block and two), pair_corr at p = 0.25, 0.5, 0.75 and the Markov set, then the
# ablation rows (D2 and Markov; other token rules everywhere vmd+ samples). Every run is
# configs/synthetic.py with its defaults (6,000 steps); vmd+ runs on seeds 0, 1, 2, the rest on seed 0.
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
tag_of() { local t=${1/+/plus}; echo "${t//./_}"; }  # vmd+0.4 -> vmdplus0_4

SETS=(d1 d2 d1,block2 d2,block2 pair_corr:0.25 pair_corr:0.5 pair_corr:0.75 markov)
name_of() { local n=${1/,/}; echo "${n/:/_p}"; }  # d1,block2 -> d1block2; pair_corr:0.5 -> pair_corr_p0.5
arg_of() {  # <set>[,block2] -> its config arg (with the method in the middle) and overrides
  local set=${1%%:*} block="" p=""
  [[ $1 == *:* ]] && p="--config.data.p=${1#*:}"
  [[ $set == *,* ]] && { block=",${set#*,}"; set=${set%%,*}; }
  echo "$set,$2$block|$p"
}
add_run() {  # set method seed [label suffix] [overrides]
  local name arg extra
  IFS='|' read -r arg extra <<<"$(arg_of "$1" "$2")"
  name="$(name_of "$1")_$(tag_of "$2")${4:+_$4}"
  [[ $3 != "" ]] && { name+="_s$3"; extra+=" --config.seed=$3"; }
  add "$name" "$arg" "$extra ${5:-}" "${6:-}"
}
# MDM and the paper's VMD on seed 0; vmd+ on seed 0 everywhere, then seeds 1 and 2
for set in "${SETS[@]}"; do
  add_run "$set" mdm ""
  add_run "$set" vmd ""
  add_run "$set" vmd+ 0
done
for seed in 1 2; do for set in d1 d2 d1,block2 d2,block2 markov; do add_run "$set" vmd+ "$seed"; done; done
# ablations (seed 0): each changes one part of vmd+; release 0.4's recipe as a whole
for set in d2 markov; do
  add_run "$set" vmd+0.4 ""
  add_run "$set" vmd+ "" scheduled_z \
    "--config.objective.z_policy=scheduled --config.eval.z_policy=scheduled --config.label=vmd+/scheduled-z"
  add_run "$set" vmd+ "" no_rb "--config.objective.rao_blackwell=False --config.label=vmd+/revealed-only"
  add_run "$set" vmd+ "" nfe_draw "--config.objective.step_draw=nfe --config.label=vmd+/T-uniform"
done
add_run d2 vmd+ "" start_time "--config.model.time_input=start --config.label=vmd+/start-time"
add_run d2 vmd "" per_step "--config.eval.z_policy=per_step --config.label=vmd/z-per-step" d2_vmd
# other token rules on the same checkpoints (eval only)
for set in d2 markov pair_corr:0.25 pair_corr:0.5 pair_corr:0.75; do
  source="$(name_of "$set")_vmdplus_s0"
  add_run "$set" vmd+ "" argmax_parallel \
    "--config.eval.token_rule=argmax_parallel --config.label=vmd+/argmax-parallel" "$source"
  add_run "$set" vmd+ "" sample "--config.eval.token_rule=sample --config.label=vmd+/sample" "$source"
done
add_run d2 vmd+ "" argmax "--config.eval.token_rule=argmax --config.label=vmd+/argmax" d2_vmdplus_s0
for seed in 1 2; do for p in 0.25 0.5 0.75; do add_run "pair_corr:$p" vmd+ "$seed"; done; done

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
    || {
      echo "FAILED: $name, status $? (3: stopped by SIGTERM, run again to resume; see $OUT/logs/$name.log)"
      touch "$OUT/failed/$name"
    }
}

next_job() {  # the queue's next index, shared by the workers (a counter under a lock)
  flock "$OUT/queue.lock" bash -c 'n=$(<"$1"); echo $((n + 1)) >"$1"; echo "$n"' _ "$OUT/queue"
}

worker() {  # worker k takes the next job of the queue, on core k, until none is left
  local k=$1 i
  while i=$(next_job) && ((i < ${#jobs[@]})); do run_job "${jobs[$i]}" "$k"; done
}

echo 0 >"$OUT/queue"
worker 0 &
worker 1 &
wait
"$PYTHON" -m vmd_jax.report --figures="$OUT/figures" "$OUT"/runs/*
