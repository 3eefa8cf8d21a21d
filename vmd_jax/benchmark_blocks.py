"""Block sampling speed, key/value cache against none: `python -m vmd_jax.benchmark_blocks`.

Samples whole sequences of each length in --lengths with the block sampler of a VMD block diffusion
model (fresh z_b per block, --nfe_per_block steps a block), once with the cache of finished blocks and
once recomputing the whole sequence at every denoiser call, and prints the seconds of each and their
ratio. Both produce the same tokens (tests/test_blocks.py). The two alternate within each round and the
ratio is the median of the per-round ratios, so a busy machine slows both sides alike. Compilation is
excluded. The model is random: speed does not depend on the weights.
"""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from vmd_jax import model as model_lib
from vmd_jax import networks, samplers
from vmd_jax.schedules import get_schedule

flags.DEFINE_list("lengths", ["256", "1024"], "Sequence lengths to sample.")
flags.DEFINE_integer("block_size", 16, "Tokens per block.")
flags.DEFINE_integer("nfe_per_block", 2, "Denoiser calls per block.")
flags.DEFINE_integer("batch", 2, "Sequences sampled together.")
flags.DEFINE_integer("width", 128, "Denoiser width.")
flags.DEFINE_integer("depth", 4, "Denoiser depth.")
flags.DEFINE_integer("rounds", 3, "Rounds; each times both samplers once.")
flags.DEFINE_string("json", None, "Also write the measurements to this JSON file.")
FLAGS = flags.FLAGS

VOCAB, LATENT = 27, 16


def _model(length: int) -> networks.VMDModel:
  kwargs = dict(width=FLAGS.width, num_heads=4, block_size=FLAGS.block_size)
  denoiser = networks.Denoiser(VOCAB, length, depth=FLAGS.depth, latent_dim=LATENT, **kwargs)
  encoder = networks.PosteriorEncoder(VOCAB, length, LATENT, depth=1, **kwargs)
  return networks.VMDModel(denoiser, encoder)


def measure(length: int, rounds: int) -> dict:
  """Seconds per sampled batch with and without the cache, and their per-round ratios."""
  model = _model(length)
  x0 = jnp.zeros((1, length), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), x0, x0 == 0, jnp.ones((1,)))
  x_init = jnp.full((FLAGS.batch, length), VOCAB, jnp.int32)
  compiled = {}
  for cached in (True, False):
    sample = samplers.make_block_sampler(
      model_lib.block_fns(model),
      block_size=FLAGS.block_size,
      nfe_per_block=FLAGS.nfe_per_block,
      mask_id=VOCAB,
      schedule=get_schedule("linear"),
      latent_dim=LATENT,
      options=samplers.SamplerOptions(kv_cache=cached),
    )
    compiled[cached] = sample.lower(params, jax.random.PRNGKey(0), x_init).compile()
  seconds = {True: [], False: []}
  for r in range(rounds):
    for cached in (True, False) if r % 2 == 0 else (False, True):
      start = time.perf_counter()
      compiled[cached](params, jax.random.PRNGKey(r), x_init).tokens.block_until_ready()
      seconds[cached].append(time.perf_counter() - start)
  ratios = [u / c for u, c in zip(seconds[False], seconds[True], strict=True)]
  return {
    "length": length,
    "cached_s": float(np.median(seconds[True])),
    "uncached_s": float(np.median(seconds[False])),
    "uncached_over_cached": float(np.median(ratios)),
    "per_round_ratios": [round(x, 2) for x in ratios],
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  rows = [measure(int(n), FLAGS.rounds) for n in FLAGS.lengths]
  print(
    f"device: {jax.device_count()} x {jax.devices()[0].device_kind}; VMD denoiser {FLAGS.depth} x "
    f"{FLAGS.width}, blocks of {FLAGS.block_size}, {FLAGS.nfe_per_block} steps a block, batch {FLAGS.batch}"
  )
  print("\n| tokens | cached (s) | uncached (s) | uncached / cached |\n|---|---|---|---|")
  for row in rows:
    print(
      f"| {row['length']} | {row['cached_s']:.2f} | {row['uncached_s']:.2f} | "
      f"{row['uncached_over_cached']:.1f} (rounds: {row['per_round_ratios']}) |"
    )
  if FLAGS.json:
    with open(FLAGS.json, "w", encoding="utf-8") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
