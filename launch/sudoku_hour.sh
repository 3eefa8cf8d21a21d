#!/usr/bin/env bash
# How long the cpu Sudoku configs train alone on this machine: each method of METHODS trains STEPS
# steps with every core (nothing else running), and the script prints the measured seconds and the
# projection to the config's 5,000 steps. The measured time includes compiling the train step, so the
# projection is an upper bound.
#
#   bash launch/sudoku_hour.sh                 # METHODS="mdm vmd vmd+", STEPS=300
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
STEPS=${STEPS:-300}
read -r -a METHODS <<<"${METHODS:-mdm vmd vmd+}"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "| method | cores | steps timed | seconds | projected minutes for 5,000 steps |"
echo "|---|---|---|---|---|"
for method in "${METHODS[@]}"; do
  "$PYTHON" -m vmd_jax.main --config="configs/sudoku.py:$method" --workdir="$OUT/$method" \
    --config.train.steps="$STEPS" --config.train.checkpoint_every="$STEPS" \
    --config.train.log_every="$STEPS" --config.eval.num_samples=10 --config.eval.nfes="(5,)" \
    --config.eval.decoders='("margin",)' >"$OUT/$method.log" 2>&1 ||
    { tail -20 "$OUT/$method.log"; exit 1; }
  "$PYTHON" - "$OUT/$method/train_time.json" "$method" "$STEPS" "$(nproc)" <<'PY'
import json, sys
seconds = json.load(open(sys.argv[1]))["train_seconds"]
steps = int(sys.argv[3])
print(f"| {sys.argv[2]} | {sys.argv[4]} | {steps} | {seconds:.1f} | {seconds * 5000 / steps / 60:.1f} |")
PY
done
