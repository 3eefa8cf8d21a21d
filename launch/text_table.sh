#!/usr/bin/env bash
# The README's text tables: the sotu8 corpus (launch/sotu_corpus.py), its Kneser-Ney n-gram floors
# (orders 1-7, `python -m vmd_jax.ngram`, on the validation and the test split), and the runs of RUNS
# (configs/text8.py:<run>,cpu: MDM and VMD at blocks 4 and 8, and the AR baseline), trained and
# evaluated side by side, one run per core of CORES (a shared queue); then `python -m vmd_jax.report`
# over every finished run.
#
#   bash launch/text_table.sh                          # OUT=runs/text, all five runs on cores 0 and 1
#   RUNS="vmd,block4" bash launch/text_table.sh        # the paper's objective, beside them
#   RUNS="mdm,block4 vmd+,block4" EXTRA="--config.eval.split=validation" bash launch/text_table.sh
#
# A run's workdir is $OUT/<run> with ',' as '_' (mdm_block4). A run whose results.json exists is
# skipped and a run cut off mid-training resumes from its checkpoint, so the same command finishes a
# cut-off table. CORPUS: an existing text8-style file to use instead of building sotu8 (text8 itself
# works). EXTRA: overrides for every run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/text}
PYTHON=${PYTHON:-python}
CORPUS=${CORPUS:-$OUT/sotu8}
read -r -a RUNS <<<"${RUNS:-mdm,block4 vmd+,block4 mdm,block8 vmd+,block8 ar}"
read -r -a CORES <<<"${CORES:-0 1}"
read -r -a EXTRA <<<"${EXTRA:-}"
mkdir -p "$OUT/logs"
[[ -e "$CORPUS" ]] || "$PYTHON" launch/sotu_corpus.py -o "$CORPUS"
for split in validation test; do
  "$PYTHON" -m vmd_jax.ngram --corpus="$CORPUS" --split="$split" | tee "$OUT/ngram_$split.md"
done
# one process makes the dataset; the runs then only read it
"$PYTHON" -m vmd_jax.main --config="configs/text8.py:${RUNS[0]},cpu" --config.data.path="$CORPUS" \
  --workdir="$OUT/${RUNS[0]//,/_}" --mode=prepare "${EXTRA[@]}" >"$OUT/logs/prepare.log" 2>&1

lock="$OUT/logs/.queue.$$"
: >"$lock"
worker() {  # core: take the next run off the queue until none is left
  local core=$1 index run name
  while true; do
    index=$(flock "$lock" bash -c 'n=$(wc -l <"$0"); echo "$n" >>"$0"; echo "$n"' "$lock")
    ((index < ${#RUNS[@]})) || return 0
    run=${RUNS[$index]}
    name=${run//,/_}
    if [[ -e "$OUT/$name/results.json" ]]; then continue; fi
    echo "core $core: $run"
    local start=$SECONDS
    taskset -c "$core" "$PYTHON" -m vmd_jax.main --config="configs/text8.py:$run,cpu" \
      --config.data.path="$CORPUS" --workdir="$OUT/$name" "${EXTRA[@]}" >"$OUT/logs/$name.log" 2>&1 ||
      echo "core $core: $run FAILED, status $? (3: stopped by SIGTERM, run again to resume):" \
        "see $OUT/logs/$name.log"
    echo "core $core: $run ended after $((SECONDS - start)) s"
  done
}
for core in "${CORES[@]}"; do worker "$core" & done
wait
rm -f "$lock"
runs=()
for dir in "$OUT"/*/; do [[ -e "$dir/results.json" ]] && runs+=("$dir"); done
"$PYTHON" -m vmd_jax.report "${runs[@]}"
