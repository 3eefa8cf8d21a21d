#!/usr/bin/env bash
# Seconds per training step of a config and its variants on this machine, and the steps each fits in a
# budget: each variant of VARIANTS trains STEPS steps, one after another, and its rate is read off the
# progress line of its last LOG_EVERY steps (compiling and the first steps left out). Measured with
# nothing else running, the last column is the steps of a run alone in MINUTES minutes; measured beside
# other work, only the ratio to the first variant compares.
#
#   CONFIG=configs/sudoku.py:vmd+ VARIANTS="base d6:--config.model.depth=6" bash launch/hour.sh
#   CONFIG=configs/text8.py:mdm,block4,cpu EXTRA="--config.data.path=runs/text/sotu8" \
#     VARIANTS="base w192:--config.model.width=192;--config.model.encoder_width=192" bash launch/hour.sh
#
# VARIANTS: space-separated name:flag;flag;... (a name alone: the config as it is); EXTRA: flags for
# every variant; CORES: a taskset core list to pin the runs to (all cores if empty); MINUTES: 60.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
CONFIG=${CONFIG:?set CONFIG, e.g. configs/sudoku.py:vmd+}
STEPS=${STEPS:-150}
LOG_EVERY=${LOG_EVERY:-50}
MINUTES=${MINUTES:-60}
CORES=${CORES:-}
read -r -a VARIANTS <<<"${VARIANTS:-base}"
read -r -a EXTRA <<<"${EXTRA:-}"
((STEPS > LOG_EVERY)) || { echo "STEPS must exceed LOG_EVERY" >&2; exit 2; }
pin=()
[[ -n $CORES ]] && pin=(taskset -c "$CORES")
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "| variant | seconds per step | x ${VARIANTS[0]%%:*} | steps in $MINUTES minutes |"
echo "|---|---|---|---|"
first=""
for variant in "${VARIANTS[@]}"; do
  name=${variant%%:*}
  flags=()
  [[ "$variant" == *:* ]] && IFS=';' read -r -a flags <<<"${variant#*:}"
  "${pin[@]}" "$PYTHON" -m vmd_jax.main --config="$CONFIG" --workdir="$OUT/$name" --mode=train_only \
    --config.train.steps="$STEPS" --config.train.checkpoint_every="$STEPS" \
    --config.train.log_every="$LOG_EVERY" "${EXTRA[@]}" "${flags[@]}" >"$OUT/$name.log" 2>&1 ||
    { tail -20 "$OUT/$name.log"; exit 1; }
  rate=$(grep -o '[0-9.e+]* steps/s' "$OUT/$name.log" | tail -1 | cut -d' ' -f1)
  [[ -n $rate ]] || { echo "$name: no progress line in its log" >&2; exit 1; }
  [[ -n $first ]] || first=$rate
  "$PYTHON" -c 'import sys; r, f, m = map(float, sys.argv[2:]); print(
    f"| {sys.argv[1]} | {1 / r:.3f} | {f / r:.2f} | {int(m * 60 * r):,} |")' \
    "$name" "$rate" "$first" "$MINUTES"
done
