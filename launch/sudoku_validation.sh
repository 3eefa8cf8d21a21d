#!/usr/bin/env bash
# A trained Sudoku run's sampler options compared on the validation puzzles (easy and hard, never the
# test sets): the run's checkpoint evaluated with eval.split=validation once per z policy of POLICIES,
# each in a workdir of its own ($OUT/<method>_<policy>, holding a copy of the checkpoints, so that the
# run's own results stay as they are), then `python -m vmd_jax.report --split=validation`.
#
#   bash launch/sudoku_validation.sh                 # RUN=runs/sudoku/vmd+ METHOD=vmd+
#   RUN=runs/sudoku/vmd METHOD=vmd POLICIES="fixed per_step" bash launch/sudoku_validation.sh
#
# NFES and DECODERS: the eval.nfes and eval.decoders tuples; EXTRA: overrides for every evaluation.
# TRAIN_NFES: the NFEs the stepwise objective of vmd+ trained for, where the config does not set them
# (empty: the config's objective.nfes, which release 0.11 sets; a run of release 0.10:
# TRAIN_NFES="(5,5,10,10,20,20,50)"; of release 0.9 or before, trained with step_draw=step:
# TRAIN_NFES="(5,10,20,50)" EXTRA="--config.objective.step_draw=step").
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/sudoku/vmd+}
METHOD=${METHOD:-vmd+}
OUT=${OUT:-runs/sudoku_validation}
PYTHON=${PYTHON:-python}
read -r -a POLICIES <<<"${POLICIES:-parallel_only per_step}"
read -r -a EXTRA <<<"${EXTRA:-}"
NFES=${NFES:-(5,10,20)}
DECODERS=${DECODERS:-(\"margin\",)}
TRAIN_NFES=${TRAIN_NFES:-}
[[ -n $TRAIN_NFES ]] && EXTRA+=("--config.objective.nfes=$TRAIN_NFES")
[[ -d "$RUN/checkpoints" ]] || { echo "$RUN has no checkpoints: train it first" >&2; exit 2; }
workdirs=()
for policy in "${POLICIES[@]}"; do
  workdir="$OUT/${METHOD}_$policy"
  mkdir -p "$workdir"
  rm -rf "$workdir/checkpoints"
  cp -r "$RUN/checkpoints" "$workdir/"
  "$PYTHON" -m vmd_jax.main --config="configs/sudoku.py:$METHOD" --workdir="$workdir" --mode=eval \
    --config.eval.split=validation --config.eval.z_policy="$policy" --config.label="${METHOD}/z-$policy" \
    --config.eval.nfes="$NFES" --config.eval.decoders="$DECODERS" "${EXTRA[@]}" >"$workdir.log" 2>&1
  workdirs+=("$workdir")
done
"$PYTHON" -m vmd_jax.report --split=validation "${workdirs[@]}"
