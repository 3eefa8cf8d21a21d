#!/usr/bin/env bash
# Check that a change moves code and no number: short runs of every task (synthetic, block diffusion,
# sequences, Sudoku, text) with the working tree and with another commit, then every results.json
# value compared. Usage: bash launch/same_results.sh GITREF [OUTDIR]
# Prints one line per run, 'same' or the keys that differ (timings and keys only one side has aside),
# and exits 1 when any value differs. Both sides run on this machine, one after the other.
set -euo pipefail
ref=${1:?usage: bash launch/same_results.sh GITREF [OUTDIR]}
out=${2:-$(mktemp -d)}
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python}
other="$out/worktree"
git -C "$repo" worktree add --detach "$other" "$ref" >/dev/null
trap 'git -C "$repo" worktree remove --force "$other"' EXIT

"$python" - "$out" <<'EOF'
import sys
import numpy as np
out = sys.argv[1]
np.save(f"{out}/sequences.npy", np.random.default_rng(0).integers(0, 6, (300, 8)))
with open(f"{out}/corpus.txt", "w") as f:
  f.write(" ".join(["the quick brown fox jumps over the lazy dog"] * 400))
EOF

common=(--config.data.data_dir="$out/tfds" --config.train.steps=40 --config.train.log_every=20
  --config.train.checkpoint_every=40 --config.eval.num_samples=500 --config.eval.bound_examples=64
  --config.eval.bound_draws=4 --config.eval.iwae_k=2)
small=(--config.model.width=32 --config.model.depth=1 --config.model.encoder_width=32)
runs=(
  "syn_d1_vmd|configs/synthetic.py:d1,vmd|--config.data.num_train=2000 --config.data.num_test=200"
  "syn_d2_mdm|configs/synthetic.py:d2,mdm|--config.data.num_train=2000 --config.data.num_test=200"
  "syn_d1_vmd_block2|configs/synthetic.py:d1,vmd,block2|--config.data.num_train=2000 --config.data.num_test=200"
  "syn_pair_corr_global|configs/synthetic.py:pair_corr,global|--config.data.num_train=2000 --config.data.num_test=200"
  "sudoku|configs/sudoku.py:vmd|--config.data.num_train=200 --config.data.base_train=20 --config.data.num_test=40 ${small[*]} --config.eval.batch_size=50 --config.eval.nfes=(5,10)"
  "sequences|configs/sequences.py:vmd|--config.data.path=$out/sequences.npy --config.eval.nfes=(1,4,8)"
  "text|configs/text8.py:vmd,block4,cpu|--config.data.name=text_file --config.data.path=$out/corpus.txt ${small[*]}"
)
mkdir -p "$out/new" "$out/old"
for side in new old; do
  tree=$repo
  [ "$side" = old ] && tree=$other
  for run in "${runs[@]}"; do
    IFS='|' read -r name config flags <<<"$run"
    # shellcheck disable=SC2086 # flags is a list of words
    (cd "$tree" && PYTHONPATH="$tree" "$python" -m vmd_jax.main --config="$config" \
      --workdir="$out/$side/$name" "${common[@]}" $flags >"$out/$side/$name.log" 2>&1) ||
      { echo "$side $name failed: see $out/$side/$name.log"; exit 1; }
  done
done

"$python" - "$out" <<'EOF'
import json
import os
import sys
out, differ = sys.argv[1], False
for name in sorted(os.listdir(f"{out}/new")):
  if name.endswith(".log"):
    continue
  new, old = (json.load(open(f"{out}/{side}/{name}/results.json")) for side in ("new", "old"))
  timing = ("train_seconds", "samples_tokens_per_s")
  keys = [k for k in set(new) & set(old) if not k.startswith(timing)]
  diffs = [k for k in sorted(keys) if new[k] != old[k]]
  differ |= bool(diffs)
  print(name, "same" if not diffs else f"differ: {diffs}", f"(keys only new: {sorted(set(new) - set(old))})")
sys.exit(1 if differ else 0)
EOF
