#!/usr/bin/env bash
# Variants of one text run (configs/text8.py:$RUN,cpu), chosen on the validation split: each variant
# is trained and evaluated there (results_validation.json), side by side, one run per core of CORES
# (a shared queue); then `python -m vmd_jax.report --split=validation` over the base run and every
# variant, whose tables give each run's bounds, training steps and time. The README's choices of the
# cpu size (learning rate, steps) and of free bits for `vmd+` come from this script.
#
#   VARIANTS="lr2e-3:--config.train.learning_rate=2e-3 steps4500:--config.train.steps=4500" \
#     RUN=mdm,block4 bash launch/text_sweep.sh
#   VARIANTS="fb0.05:--config.objective.free_bits=0.05" RUN=vmd+,block8 bash launch/text_sweep.sh
#
# VARIANTS: space-separated name:flag;flag;... (a name alone: the run as configured). A variant's
# workdir is $OUT/<run>_<name> with ',' as '_'; the run without flags, $OUT/<run> (mdm_block4), is the
# one launch/text_table.sh trains, so a finished table run is only evaluated on the validation split
# here, not trained again. A variant whose results_validation.json exists is skipped; one cut off
# mid-training resumes from its checkpoint. CORPUS: the text8-style file (launch/text_table.sh builds
# sotu8 there). EXTRA: overrides for every variant and the base run, as in launch/text_table.sh (the
# README's studies of release 0.8 to 0.14 repeat with OUT=runs/text3500 EXTRA=--config.train.steps=3500
# in both scripts). CORES: one entry per worker, each a taskset core list ("0 1": two runs side by
# side; "0,1": one run on both cores).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/text}
PYTHON=${PYTHON:-python}
CORPUS=${CORPUS:-$OUT/sotu8}
RUN=${RUN:-mdm,block4}
read -r -a VARIANTS <<<"${VARIANTS:-base}"
read -r -a CORES <<<"${CORES:-0 1}"
read -r -a EXTRA <<<"${EXTRA:-}"
[[ -e "$CORPUS" ]] || "$PYTHON" launch/sotu_corpus.py -o "$CORPUS"
mkdir -p "$OUT/logs"
base=${RUN//,/_}

workdir() {  # variant -> its workdir
  local name=${1%%:*}
  if [[ "$1" == *:* ]]; then echo "$OUT/${base}_$name"; else echo "$OUT/$base"; fi
}

lock="$OUT/logs/.sweep.$$"
: >"$lock"
worker() {  # core: take the next variant off the queue until none is left
  local core=$1 index variant dir flags
  while true; do
    index=$(flock "$lock" bash -c 'n=$(wc -l <"$0"); echo "$n" >>"$0"; echo "$n"' "$lock")
    ((index < ${#VARIANTS[@]})) || return 0
    variant=${VARIANTS[$index]}
    dir=$(workdir "$variant")
    [[ -e "$dir/results_validation.json" ]] && continue
    flags=()
    if [[ "$variant" == *:* ]]; then
      IFS=';' read -r -a flags <<<"${variant#*:}"
      flags+=("--config.label=${RUN%%,*}_${variant%%:*}")
    fi
    echo "core $core: $RUN ${variant%%:*}"
    local start=$SECONDS
    # train (or resume) on the test split's settings, then evaluate on the validation split
    taskset -c "$core" "$PYTHON" -m vmd_jax.main --config="configs/text8.py:$RUN,cpu" \
      --config.data.path="$CORPUS" --workdir="$dir" --config.eval.split=validation "${EXTRA[@]}" \
      "${flags[@]}" \
      >"$OUT/logs/$(basename "$dir").validation.log" 2>&1 ||
      echo "core $core: $RUN ${variant%%:*} FAILED, status $? (3: stopped by SIGTERM, run again to resume):" \
        "see $OUT/logs/$(basename "$dir").validation.log"
    echo "core $core: $RUN ${variant%%:*} ended after $((SECONDS - start)) s"
  done
}
for core in "${CORES[@]}"; do worker "$core" & done
wait
rm -f "$lock"
dirs=()
for variant in "${VARIANTS[@]}"; do
  dir=$(workdir "$variant")
  [[ -e "$dir/results_validation.json" ]] && dirs+=("$dir")
done
"$PYTHON" -m vmd_jax.report --split=validation "${dirs[@]}"
