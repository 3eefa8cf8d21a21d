#!/usr/bin/env bash
# The README's throughput tables: this tree against REF (default: the release before the per-block
# conditioning) at the benchmark's cpu size and at 4 x 128 (mdm, vmd on the adaln latent path, vmd+ on
# low_rank_adaln), the low_rank latent path, the attention implementations, and the block sampler with
# and without its cache. Run on an otherwise idle machine.
# Usage: bash launch/throughput_table.sh [REF]
set -euo pipefail
ref=${1:-2387a3d}
common=(--rounds=5 --steps=5 --sample_nfe=8)
echo "### cpu size, against $ref"
python -m vmd_jax.benchmark "${common[@]}" --compare-ref="$ref"
echo "### 4 x 128 (encoder 1 x 64), against $ref"
python -m vmd_jax.benchmark "${common[@]}" --compare-ref="$ref" --config.model.width=128 \
  --config.model.encoder_width=64
echo "### cpu size, latent_path=low_rank"
python -m vmd_jax.benchmark "${common[@]}" --config.model.latent_path=low_rank
echo "### attention implementations"
python -m vmd_jax.benchmark_attention
echo "### block sampler"
python -m vmd_jax.benchmark_blocks --lengths=256,1024 --rounds=3
