#!/usr/bin/env bash
# The README's Sudoku tables and figure: configs/sudoku.py:<method> (the cpu size) for each method of
# METHODS, trained and evaluated side by side, one run per CPU core (a shared queue), on one prepared
# dataset; then `python -m vmd_jax.report --figures=$OUT $OUT/<methods>` (% solved and the share of
# valid units in unsolved grids per puzzle set, decoder and NFE; each VMD's paired difference from MDM
# with its 95% interval; sudoku_nfe.png).
#
#   bash launch/sudoku_table.sh                      # OUT=runs/sudoku, METHODS="mdm vmd+ vmd"
#   METHODS="mdm vmd+" EXTRA="--config.eval.split=validation" bash launch/sudoku_table.sh
#
# A run whose results.json exists is skipped and a run cut off mid-training resumes from its
# checkpoint, so the same command finishes a cut-off table. EXTRA: overrides for every run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/sudoku}
PYTHON=${PYTHON:-python}
read -r -a METHODS <<<"${METHODS:-mdm vmd+ vmd}"
read -r -a EXTRA <<<"${EXTRA:-}"
CORES=${CORES:-2}
mkdir -p "$OUT/logs"
# one process makes the dataset; the runs then only read it
"$PYTHON" -m vmd_jax.main --config="configs/sudoku.py:${METHODS[0]}" --workdir="$OUT/${METHODS[0]}" \
  --mode=prepare "${EXTRA[@]}" >"$OUT/logs/prepare.log" 2>&1

lock="$OUT/logs/.queue"
: >"$lock"
worker() {  # core: take the next method off the queue until none is left
  local core=$1 method
  while true; do
    method=$(flock "$lock" bash -c 'n=$(wc -l <"$0"); echo "$n" >>"$0"; echo "$n"' "$lock")
    ((method < ${#METHODS[@]})) || return 0
    method=${METHODS[$method]}
    if [[ -e "$OUT/$method/results.json" ]]; then continue; fi
    echo "core $core: $method"
    local start=$SECONDS
    taskset -c "$core" "$PYTHON" -m vmd_jax.main --config="configs/sudoku.py:$method" \
      --workdir="$OUT/$method" "${EXTRA[@]}" >"$OUT/logs/$method.log" 2>&1 ||
      echo "core $core: $method FAILED, status $? (3: stopped by SIGTERM, run again to resume):" \
        "see $OUT/logs/$method.log"
    echo "core $core: $method ended after $((SECONDS - start)) s"
  done
}
for ((core = 0; core < CORES; core++)); do worker "$core" & done
wait
runs=()
for method in "${METHODS[@]}"; do [[ -e "$OUT/$method/results.json" ]] && runs+=("$OUT/$method"); done
"$PYTHON" -m vmd_jax.report --figures="$OUT" "${runs[@]}"
