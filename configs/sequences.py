"""A user's own token sequences: `configs/sequences.py:<method>` with `--config.data.path=FILE.npy`.

The file holds an integer array [N, L]; the vocabulary is max token + 1 unless --config.data.vocab_size
is set. A share data.test_fraction is held out for the likelihood bounds. The evaluated NFEs follow
the data's length L (1, 4 and 16, each capped at L) unless --config.eval.nfes is set.
"""

from vmd_jax.defaults import apply_method
from vmd_jax.tasks import base_config


def get_config(arg: str = "vmd"):
  """Config for training `method` on data.path."""
  config = apply_method(base_config("sequences"), arg)
  config.data.name = "sequences"
  config.model.max_length = 256
  config.eval.nfes = ()  # follows the data: 1, 4 and 16 steps, each at most the length
  config.eval.num_samples = 1_000
  config.eval.bound_examples = 1_000
  config.eval.bound_draws = 16
  config.eval.iwae_k = 0  # each IWAE sample costs `length` denoiser calls: enable it on accelerators
  config.objective.kl_warmup_steps = 1000
  return config
