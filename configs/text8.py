"""Block diffusion on text: `configs/text8.py:<method>,block<k>[,<size>]` or `configs/text8.py:ar[,<size>]`.

method: vmd+ (the recommended recipe), vmd (the paper's objective), mdm (BD3-LM, the block diffusion
baseline) or global; block<k>: blocks of k characters, each with its own t and (for the latent
methods) its own z_b ~ N(0, I). `ar` is the autoregressive baseline at the same size: blocks of one
character, sampled in one step each and trained on exactly that sampler's bound (the stepwise
objective without a latent), i.e. next-character cross-entropy. size:
- gpu (default): the paper's scale on text8 (27 characters, the 90M/5M/5M split): a 12-layer, width-768
  denoiser on sequences of 256 characters. text8.zip is downloaded when online; offline, pass
  --config.data.path=DIR (or the zip) holding text8.zip or the extracted text8.
- cpu: a text8-style corpus (--config.data.path=FILE of space and a-z only, split 90/5/5 like text8:
  `sotu8` of launch/sotu_corpus.py, or text8 itself; a corpus of other characters takes
  --config.data.name=text_file), a 4-layer width-128 denoiser on 64-character sequences, batch 32 at
  learning rate 1e-3 (2e-3 and 3e-3 were worse on validation at 3,500 steps, and 7,500 steps beat
  3,500 for MDM and vmd+, launch/text_sweep.sh), for the steps of an hour: the steps that take at most
  58 minutes (the hour less 2 minutes) alone on 2 CPU cores at the slowest step times measured there
  (LATENT_CPU_STEPS, AR_CPU_STEPS; README, "Steps to fill the hour"). About twice the time on one core
  beside another run.
Evaluation (task text): bits per character and perplexity bounds (results.json `bpc_bound`,
`ppl_bound`, plus the finite-NFE and IWAE bounds), samples at each NFE of eval.nfes (NFE counts the
steps of all blocks) written to the workdir with their word and 4-gram statistics, and the sampler's
tokens/s.
"""

from vmd_jax.defaults import METHODS, apply_method
from vmd_jax.errors import ConfigError
from vmd_jax.tasks import base_config

SIZES = ("gpu", "cpu")
# cpu size: every run trains the steps of at most 58 minutes at the slowest seconds per step timed alone
# on 2 CPU cores (launch/hour.sh). MDM (0.459 at block 4) keeps _cpu's 7,500: timed on another day
# against MDM at block 4, MDM at block 8 costs 0.94 times its step (it fits) and AR 1.13 times, about
# 0.519 s on the slow day, so AR takes AR_CPU_STEPS (57 minutes there). The latent methods (vmd+: 0.599
# at block 4, 0.676 at block 8) take LATENT_CPU_STEPS by block size; blocks of other sizes, untimed,
# take the block-8 count, and vmd, global and vmd+0.4 vmd+'s counts, untimed (vmd's adaLN path costs
# more a step).
LATENT_CPU_STEPS = {4: 5_700, 8: 5_000}
AR_CPU_STEPS = 6_600


def _gpu(config) -> None:
  """The paper's text8 scale: 12 x 768 on 256 characters, 400k steps of batch 256."""
  config.data.name = "text8"
  config.data.seq_length = 256
  config.model.max_length = 256
  config.model.width = 768  # 12 x 768, 12 heads: the paper's (and BD3-LM's) text8 scale
  config.model.depth = 12
  config.model.num_heads = 12
  config.model.dropout = 0.1
  config.model.latent_dim = 32 if config.model.latent_dim else 0  # mdm and ar have none
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


def _cpu(config) -> None:
  """A text8-style corpus: 4 x 128 on 64 characters, 7,500 steps of batch 32 (MDM's count)."""
  config.data.name = "text8"
  config.data.seq_length = 64
  config.model.max_length = 64
  config.model.width = 128
  config.model.depth = 4
  config.model.num_heads = 4
  config.model.latent_dim = 16 if config.model.latent_dim else 0  # mdm and ar have none
  config.model.encoder_width = 128
  config.model.encoder_depth = 1
  config.train.steps = 7_500  # MDM's; AR's and the latent methods' in get_config
  config.train.batch_size = 32
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 200
  config.train.log_every = 250
  config.train.checkpoint_every = 500
  config.eval.bound_examples = 1_000
  config.eval.bound_draws = 16
  config.eval.iwae_k = 4
  config.eval.batch_size = 256


def _parse(arg: str) -> tuple[str, int, str]:
  """(method, block size, size) of `<method>,block<k>[,<size>]` or `ar[,<size>]`."""
  parts = arg.split(",")
  if parts[0] == "ar" and len(parts) <= 2:
    parts.insert(1, "block1")
  size = parts[2] if len(parts) == 3 else "gpu"
  method, block = parts[0], parts[1] if len(parts) > 1 else ""
  bad = len(parts) not in (2, 3) or size not in SIZES or not block.startswith("block")
  if bad or method not in (*METHODS, "ar") or (method == "ar" and block != "block1"):
    raise ConfigError(
      f"text8 config arg {arg!r}: expected <method>,block<k>[,<size>] with method in {sorted(METHODS)}, "
      f"or ar[,<size>], and size in {list(SIZES)}"
    )
  try:
    return method, int(block[len("block") :]), size
  except ValueError:
    raise ConfigError(f"text8 config arg {arg!r}: block<k> needs an integer k") from None


def _autoregressive(config) -> None:
  """Blocks of one character, one sampler step each, trained on that sampler's bound: the stepwise
  objective without a latent at NFE = length, whose loss is the next-character cross-entropy."""
  apply_method(config, "mdm")
  config.label = "ar"
  config.objective.name = "stepwise"
  config.model.time_input = "end"


def get_config(arg: str = "vmd,block4"):
  """Config for one method and block size at a size."""
  method, block_size, size = _parse(arg)
  config = base_config("text")
  if method == "ar":
    _autoregressive(config)
  else:
    apply_method(config, method)
  config.model.block_size = block_size
  config.objective.kl_warmup_steps = 1_000
  config.eval.token_rule = "sample"  # text: sampled characters for every method
  config.eval.temperature = 1.0
  (_gpu if size == "gpu" else _cpu)(config)
  if size == "cpu" and config.model.latent_dim:
    config.train.steps = LATENT_CPU_STEPS.get(block_size, LATENT_CPU_STEPS[8])
  elif size == "cpu" and method == "ar":
    config.train.steps = AR_CPU_STEPS
  length = config.data.seq_length
  if block_size < 1 or length % block_size:
    raise ConfigError(f"text8 config arg {arg!r}: the block size must divide the sequence length {length}")
  blocks = length // block_size
  config.eval.nfes = tuple(sorted({blocks, blocks * min(4, block_size), length}))  # 1, 4, k steps a block
  if method == "ar":
    config.objective.nfes = (length,)
    config.eval.iwae_k = 1  # one reveal order: every draw of a path is the same
  config.eval.num_samples = 256
  return config
