"""Throughput benchmark sizes: `python -m vmd_jax.benchmark --config=configs/benchmark.py:<size>`.

cpu: a 4-block width-256 denoiser on 256 tokens, small enough to time on a laptop CPU.
gpu: the text scale of the paper (12 blocks, width 768, 12 heads) on 256 tokens of a 27-character
  vocabulary, global batch 256, bf16 compute (model.dtype auto) with float32 master weights.
VMD adds a 1-block posterior encoder and a 32-dimensional z (the encoder is half the denoiser's width
at the cpu size, its full width at the gpu size); MDM is the same denoiser without them.
"""

from vmd_jax.tasks import base_config

SIZES = {
  # size: (width, depth, heads, length, global batch, sampling batch, encoder width)
  "cpu": (256, 4, 4, 256, 16, 16, 128),
  "gpu": (768, 12, 12, 256, 256, 256, 768),
}


def get_config(arg: str = "cpu"):
  """The VMD config whose denoiser the benchmark times (MDM is derived from it)."""
  if arg not in SIZES:
    raise ValueError(f"unknown size {arg!r}: choose one of {sorted(SIZES)}")
  width, depth, heads, length, batch, sample_batch, encoder_width = SIZES[arg]
  config = base_config("sequences")
  config.data.name = "sequences"
  config.data.vocab_size = 27
  config.model.max_length = length
  config.model.width = width
  config.model.depth = depth
  config.model.num_heads = heads
  config.model.latent_dim = 32
  config.model.encoder_width = encoder_width
  config.model.encoder_depth = 1
  config.train.batch_size = batch
  config.eval.batch_size = sample_batch
  return config
