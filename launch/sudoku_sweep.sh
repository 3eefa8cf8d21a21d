#!/usr/bin/env bash
# Variants of a cpu Sudoku config compared on the validation puzzles (easy and hard, never the test
# sets): each variant trains in $OUT/<name> on a core of its own (variant i on core FIRST_CORE + i,
# modulo the core count; all at once), is evaluated with eval.split=validation and margin decoding,
# and is then paired puzzle by puzzle against the REFERENCE run (`python -m vmd_jax.report --reference`).
#
#   bash launch/sudoku_sweep.sh NAME "OVERRIDES" [NAME "OVERRIDES" ...]
#   bash launch/sudoku_sweep.sh base "" lr2e-3 "--config.train.learning_rate=2e-3"
#
# METHOD: the config's method (vmd+); FIRST_CORE: the core of the first variant (0); OUT: where the
# variants go (runs/sudoku_sweep); REFERENCE: a run directory evaluated on validation (default: the
# variant named base in OUT, trained with "" as its overrides). A variant whose directory already holds
# its validation results is not trained again; one with checkpoints and no results resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
METHOD=${METHOD:-vmd+}
OUT=${OUT:-runs/sudoku_sweep}
REFERENCE=${REFERENCE:-$OUT/base}
FIRST_CORE=${FIRST_CORE:-0}
(($# > 0 && $# % 2 == 0)) || { sed -n 2,12p "$0" >&2; exit 2; }
mkdir -p "$OUT"
cores=$(nproc)
names=()
pids=()
i=0
while (($# > 0)); do
  name=$1
  read -r -a overrides <<<"$2"
  shift 2
  names+=("$name")
  if [[ ! -f "$OUT/$name/results_validation.json" ]]; then
    taskset -c $(((FIRST_CORE + i) % cores)) "$PYTHON" -m vmd_jax.main --config="configs/sudoku.py:$METHOD" \
      --workdir="$OUT/$name" --config.label="$name" --config.eval.split=validation \
      --config.eval.decoders='("margin",)' "${overrides[@]}" >>"$OUT/$name.log" 2>&1 &
    pids+=($!)
  fi
  i=$((i + 1))
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || { s=$?; ((s == 3 && status != 0)) || status=$s; }; done
if ((status == 3)); then
  echo "a variant was stopped by SIGTERM (checkpoint saved): run the same command again to resume" >&2
  exit 3
fi
((status == 0)) || { echo "a variant failed: see $OUT/<name>.log" >&2; exit 1; }
label=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["method"])' \
  "$REFERENCE/results_validation.json")
dirs=("$REFERENCE")
for name in "${names[@]}"; do
  [[ "$OUT/$name" -ef "$REFERENCE" ]] || dirs+=("$OUT/$name")
done
"$PYTHON" -m vmd_jax.report --split=validation --reference="$label" "${dirs[@]}"
for name in "${names[@]}"; do
  seconds=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["train_seconds"])' \
    "$OUT/$name/train_time.json")
  echo "$name trained $seconds s"
done
