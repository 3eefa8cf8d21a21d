"""The paper's synthetic token sets: `configs/synthetic.py:<dataset>,<method>[,block<k>]`.

dataset: pair (uniform deterministic 2-token set), pair_nonuniform (P(k) = (k+1)/55), pair_corr (set
--config.data.p), d1 = {(k,k+1,k+2,k+3) mod 10}, d2 = {(k,k+1,l,l+1) mod 10}, markov (a 4-token Markov
chain of known entropy: x1 uniform, x_{i+1} = x_i + 1, 2 or 3 mod 10 at 0.6, 0.3, 0.1); method: vmd, mdm,
global, vmd+ (the recommended recipe: the stepwise objective, one z shared by the steps that reveal
several tokens and none for those that reveal one), vmd+0.4 (release 0.4's vmd+, kept reproducible).
block<k>: block diffusion with blocks of k tokens (d1,vmd,block2 is the paper's B = 2 column: two blocks
of two tokens, each with its own z_b); NFE then counts the steps of all blocks.
"""

from vmd_jax.defaults import apply_method
from vmd_jax.errors import ConfigError
from vmd_jax.tasks import base_config

LENGTHS = {"pair": 2, "pair_nonuniform": 2, "pair_corr": 2, "d1": 4, "d2": 4, "markov": 4}


def get_config(arg: str = "d1,vmd"):
  """Config for one dataset and method, optionally with block diffusion."""
  parts = arg.split(",")
  block = parts[2] if len(parts) == 3 else "block0"
  if len(parts) not in (2, 3) or parts[0] not in LENGTHS or not block.startswith("block"):
    raise ConfigError(
      f"synthetic config arg {arg!r}: expected <dataset>,<method>[,block<k>], dataset in {sorted(LENGTHS)}"
    )
  dataset, method = parts[:2]
  length = LENGTHS[dataset]
  try:
    block_size = int(block[len("block") :])
  except ValueError:
    raise ConfigError(f"synthetic config arg {arg!r}: block<k> needs an integer k") from None
  if block_size < 0 or (block_size and length % block_size):
    raise ConfigError(
      f"synthetic config arg {arg!r}: block size {block_size} must divide the length {length}"
    )
  config = apply_method(base_config("synthetic"), method)
  config.data.name = dataset
  if dataset == "pair_corr":
    config.data.p = 1.0
  config.model.max_length = length
  config.model.block_size = block_size
  # Every method here keeps adaln, the latent path of this config's README tables (vmd+ itself presets
  # low_rank_adaln): on 4-token sequences the network's cost does not limit a run, and vmd+ trained as
  # well on either path (launch/latent_paths.sh).
  config.model.latent_path = "adaln"
  blocks = length // block_size if block_size else 1
  config.eval.nfes = tuple(n for n in (1, 2, 4) if n <= length and n % blocks == 0)
  config.objective.kl_warmup_steps = 1000
  return config
