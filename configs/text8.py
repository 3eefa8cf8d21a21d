"""Block diffusion on text: `configs/text8.py:<method>,block<k>[,<size>]`.

method: vmd, mdm (BD3-LM, the block diffusion baseline) or global; block<k>: blocks of k characters,
each with its own t and (for vmd) its own latent z_b ~ N(0, I); size:
- gpu (default): the paper's scale on text8 (27 characters, the 90M/5M/5M split): a 12-layer, width-768
  denoiser on sequences of 256 characters. text8.zip is downloaded when online; offline, pass
  --config.data.path=DIR (or the zip) holding text8.zip or the extracted text8.
- cpu: a local corpus at character level (--config.data.path=FILE or FOLDER of UTF-8 text), a 4-layer
  width-128 denoiser on 64-character sequences, 1,500 steps of batch 32: about 15 minutes of
  training alone on one CPU core (45 with two runs per core), so MDM and VMD at block sizes 4 and 8
  take about an hour of one core.
Evaluation (task text): bits per character and perplexity bounds (results.json `bpc_bound`,
`ppl_bound`, plus the finite-NFE and IWAE bounds), samples at each NFE of eval.nfes (NFE counts the
steps of all blocks) written to the workdir, and the sampler's tokens/s.
"""

from vmd_jax.defaults import METHODS, apply_method
from vmd_jax.errors import ConfigError
from vmd_jax.tasks import base_config

SIZES = ("gpu", "cpu")


def _gpu(config, method: str) -> None:
  """The paper's text8 scale: 12 x 768 on 256 characters, 400k steps of batch 256."""
  config.data.name = "text8"
  config.data.seq_length = 256
  config.model.max_length = 256
  config.model.width = 768  # 12 x 768, 12 heads: the paper's (and BD3-LM's) text8 scale
  config.model.depth = 12
  config.model.num_heads = 12
  config.model.dropout = 0.1
  config.model.latent_dim = 32 if method != "mdm" else 0
  config.model.encoder_width = 768
  config.model.encoder_depth = 2
  config.train.steps = 400_000
  config.train.batch_size = 256
  config.train.learning_rate = 3e-4
  config.train.warmup_steps = 2_500
  config.train.log_every = 1_000
  config.train.checkpoint_every = 10_000
  config.eval.bound_examples = 10_000
  config.eval.bound_draws = 16
  config.eval.iwae_k = 8
  config.eval.batch_size = 256


def _cpu(config, method: str) -> None:
  """A local corpus at character level: 4 x 128 on 64 characters, 1,500 steps of batch 32."""
  config.data.name = "text_file"
  config.data.level = "char"
  config.data.seq_length = 64
  config.model.max_length = 64
  config.model.width = 128
  config.model.depth = 4
  config.model.num_heads = 4
  config.model.latent_dim = 16 if method != "mdm" else 0
  config.model.encoder_width = 128
  config.model.encoder_depth = 1
  config.train.steps = 1_500
  config.train.batch_size = 32
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 200
  config.train.log_every = 100
  config.train.checkpoint_every = 500
  config.eval.bound_examples = 500
  config.eval.bound_draws = 16
  config.eval.iwae_k = 4
  config.eval.batch_size = 64


def get_config(arg: str = "vmd,block4"):
  """Config for one method and block size at a size."""
  parts = arg.split(",")
  size = parts[2] if len(parts) == 3 else "gpu"
  method, block = parts[0], parts[1] if len(parts) > 1 else ""
  if len(parts) not in (2, 3) or method not in METHODS or size not in SIZES or not block.startswith("block"):
    raise ConfigError(
      f"text8 config arg {arg!r}: expected <method>,block<k>[,<size>] with method in {sorted(METHODS)} "
      f"and size in {list(SIZES)}"
    )
  try:
    block_size = int(block[len("block") :])
  except ValueError:
    raise ConfigError(f"text8 config arg {arg!r}: block<k> needs an integer k") from None
  config = apply_method(base_config("text"), method)
  config.model.block_size = block_size
  config.objective.kl_warmup_steps = 1_000
  config.eval.token_rule = "sample"  # text: sampled characters for both methods
  config.eval.temperature = 1.0
  (_gpu if size == "gpu" else _cpu)(config, method)
  length = config.data.seq_length
  if block_size < 1 or length % block_size:
    raise ConfigError(f"text8 config arg {arg!r}: the block size must divide the sequence length {length}")
  blocks = length // block_size
  config.eval.nfes = tuple(sorted({blocks, blocks * min(4, block_size), length}))  # 1, 4, k steps a block
  config.eval.num_samples = 8
  return config
