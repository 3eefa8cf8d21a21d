"""The paper's synthetic token sets: `configs/synthetic.py:<dataset>,<method>`.

dataset: pair (uniform deterministic 2-token set), pair_nonuniform (P(k) = (k+1)/55), pair_corr (set
--config.data.p), d1 = {(k,k+1,k+2,k+3) mod 10}, d2 = {(k,k+1,l,l+1) mod 10}; method: vmd, mdm, global.
"""

from vmd_jax.defaults import apply_method, base_config
from vmd_jax.errors import ConfigError

LENGTHS = {"pair": 2, "pair_nonuniform": 2, "pair_corr": 2, "d1": 4, "d2": 4}


def get_config(arg: str = "d1,vmd"):
  """Config for one dataset and method."""
  parts = arg.split(",")
  if len(parts) != 2 or parts[0] not in LENGTHS:
    raise ConfigError(
      f"synthetic config arg {arg!r}: expected <dataset>,<method>, dataset in {sorted(LENGTHS)}"
    )
  dataset, method = parts
  config = apply_method(base_config(), method)
  config.task = "synthetic"
  config.data.name = dataset
  if dataset == "pair_corr":
    config.data.p = 1.0
  length = LENGTHS[dataset]
  config.model.max_length = length
  config.eval.nfes = tuple(n for n in (1, 2, 4) if n <= length)
  config.objective.kl_warmup_steps = 1000
  return config
