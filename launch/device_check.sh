#!/usr/bin/env bash
# The accelerator check: one script, at most 8 minutes on one GPU.
#
# Usage: bash launch/device_check.sh            (from the repository root, on the machine with the GPU)
#
# 1. Installs the package with the [cuda] and [test] extras into a virtual environment (skipped when
#    that environment's jax already sees a GPU).
# 2. The throughput benchmark at the gpu size (12 x 768, 256 tokens, global batch 256, bf16 compute):
#    step time, tokens/s, FLOPs per token against the 6N + attention estimate, MFU, for MDM, vmd and
#    vmd+ (each VMD's step time over MDM's).
# 3. The block sampler benchmark (cached against uncached, 256 and 1,024 tokens).
# 4. The attention implementations in bf16 (written-out, XLA's, cuDNN's), forward and backward.
# 5. The tests that depend on the accelerator, with every local device: bf16 compute, the fused
#    attention against the written-out one, and the data-parallel step over all devices against one.
#
# Variables:
#   OUT     where the results go (default: runs/device_check): device_check.json (everything) and
#           device_check.md (the tables, for the README).
#   VENV    the virtual environment (default: .venv-device).
#   PYTHON  the python that creates it (default: python3).
#   ROUNDS  benchmark rounds (default: 3).
#   SIZE    the benchmark size of configs/benchmark.py (default: gpu).
#   INSTALL 0 to use $VENV as it is (default: 1, install unless its jax already sees a GPU).
# A dry run of the script itself on a CPU: INSTALL=0 VENV=.venv JAX_PLATFORMS=cpu SIZE=cpu ROUNDS=1.
#
# Each stage has its own time limit (the sum is under 8 minutes after the install); a stage that fails
# or runs out of time is reported in the table and the others still run. Exit status: 0 when every
# stage passed.
set -uo pipefail

OUT=${OUT:-runs/device_check}
VENV=${VENV:-.venv-device}
PYTHON=${PYTHON:-python3}
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-gpu}
INSTALL=${INSTALL:-1}
mkdir -p "$OUT"

sees_gpu() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c \
  "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; }
if [ "$INSTALL" = 1 ] && ! sees_gpu; then
  "$PYTHON" -m venv "$VENV" && "$VENV/bin/pip" install -q -e ".[cuda,test]" || {
    echo "device_check: installing .[cuda,test] into $VENV failed" >&2; exit 1; }
fi
py="$VENV/bin/python"
export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}

status=0
declare -A result
stage() {  # stage NAME SECONDS COMMAND...: run it, keep its output in $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit} s)"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  result[$name]="rc=$rc, $((SECONDS - start)) s"
  [ "$rc" = 0 ] || status=1
}

stage throughput 265 "$py" -m vmd_jax.benchmark --config="configs/benchmark.py:$SIZE" --rounds="$ROUNDS" \
  --steps=5 --json="$OUT/throughput.json"
stage blocks 75 "$py" -m vmd_jax.benchmark_blocks --lengths=256,1024 --rounds="$ROUNDS" \
  --json="$OUT/blocks.json"
stage attention 45 "$py" -m vmd_jax.benchmark_attention --dtype=bfloat16 --head_dims=64,128 \
  --batch=64 --length=1024 --heads=12 --json="$OUT/attention.json"
stage tests 90 "$py" -m pytest -q -n 0 -p no:cacheprovider \
  tests/test_networks.py tests/test_trainer.py -k "bfloat16 or fused or device or sharded"

{
  echo "device: $("$py" -c 'import jax; print(jax.device_count(), "x", jax.devices()[0].device_kind)')"
  echo
  for name in throughput blocks attention tests; do
    echo "### $name (${result[$name]})"
    echo
    echo '```'
    grep -v "^== \|Warning\|warn(" "$OUT/$name.log" | tail -n 25
    echo '```'
    echo
  done
} > "$OUT/device_check.md"
"$py" - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
record = {}
for name in ("throughput", "blocks", "attention"):
  path = os.path.join(out, f"{name}.json")
  record[name] = json.load(open(path)) if os.path.exists(path) else None
record["tests"] = open(os.path.join(out, "tests.log")).read().strip().splitlines()[-1:]
json.dump(record, open(os.path.join(out, "device_check.json"), "w"), indent=2)
PY
cat "$OUT/device_check.md"
exit $status
