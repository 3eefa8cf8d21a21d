"""The model a config describes, and the pure functions that the samplers and bounds call on it.

`build_model` turns config.model into a networks.VMDModel for data of a given vocabulary and length;
`denoise_fn` and `block_fns` adapt it to the samplers' interfaces; `sampler` returns the nfe-step
sampler for a model, choosing the block sampler when the sequence has several blocks. Everything that
knows both the network's methods and the samplers' signatures lives here, once.
"""

import jax
import jax.numpy as jnp

from vmd_jax import networks, samplers
from vmd_jax.errors import ConfigError
from vmd_jax.objectives import num_blocks
from vmd_jax.schedules import TIME_INPUTS, Schedule

# model.dtype -> the computation dtype; "auto" is bfloat16 on accelerators and float32 on CPU.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  """The computation dtype for model.dtype (parameters are always float32)."""
  if name == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  if name not in DTYPES:
    raise ConfigError(f"model.dtype={name!r}: choose one of {sorted(DTYPES) + ['auto']}")
  return DTYPES[name]


def check_config(model_config, has_latent: bool | None) -> None:
  """Raise ConfigError, naming the field, for model options no network could use."""
  m = model_config
  for name in ("width", "depth", "num_heads", "mlp_ratio", "max_length", "encoder_width", "encoder_depth"):
    if m[name] <= 0:
      raise ConfigError(f"model.{name}={m[name]}: must be positive")
  if m.width % m.num_heads or m.encoder_width % m.num_heads:
    raise ConfigError(f"model.num_heads={m.num_heads} must divide model.width and model.encoder_width")
  if not 0.0 <= m.dropout < 1.0:
    raise ConfigError(f"model.dropout={m.dropout}: must be in [0, 1)")
  if m.dtype not in (*DTYPES, "auto"):  # not compute_dtype: that asks for the backend before it is set up
    raise ConfigError(f"model.dtype={m.dtype!r}: choose one of {sorted(DTYPES) + ['auto']}")
  if m.latent_path not in networks.LATENT_PATHS:
    raise ConfigError(f"model.latent_path={m.latent_path!r}: choose one of {list(networks.LATENT_PATHS)}")
  if m.encoder_pool not in networks.ENCODER_POOLS:
    raise ConfigError(f"model.encoder_pool={m.encoder_pool!r}: choose one of {list(networks.ENCODER_POOLS)}")
  if m.latent_rank <= 0:
    raise ConfigError(f"model.latent_rank={m.latent_rank}: must be positive")
  if m.block_size < 0:
    raise ConfigError(f"model.block_size={m.block_size}: must be >= 0 (0: no blocks)")
  if m.time_input not in TIME_INPUTS:
    raise ConfigError(f"model.time_input={m.time_input!r}: choose one of {list(TIME_INPUTS)}")
  if has_latent is not None and (m.latent_dim > 0) != has_latent:
    raise ConfigError(
      f"model.latent_dim={m.latent_dim}: the objective "
      + ("needs a latent (latent_dim > 0)" if has_latent else "needs latent_dim = 0")
    )


def check_length(model_config, length: int) -> int:
  """Raise ConfigError unless the model fits sequences of `length` tokens; returns their block count."""
  m = model_config
  if length > m.max_length:
    raise ConfigError(f"model.max_length={m.max_length} is shorter than the data's length {length}")
  if m.block_size and length % m.block_size:
    raise ConfigError(f"model.block_size={m.block_size} does not divide the data's length {length}")
  return networks.block_layout(length, m.block_size)[0]


def build_model(config, vocab_size: int, length: int) -> networks.VMDModel:
  """The model a config describes, for data of the given vocabulary and sequence length."""
  m = config.model
  check_length(m, length)
  dtype = compute_dtype(m.dtype)
  denoiser = networks.Denoiser(
    vocab_size=vocab_size,
    max_length=m.max_length,
    width=m.width,
    depth=m.depth,
    num_heads=m.num_heads,
    mlp_ratio=m.mlp_ratio,
    dropout=m.dropout,
    latent_dim=m.latent_dim,
    time_conditioning=m.time_conditioning,
    latent_per_position=m.latent_per_position,
    latent_path=m.latent_path,
    latent_rank=m.latent_rank,
    block_size=m.block_size,
    dtype=dtype,
    time_input=m.time_input,
  )
  encoder = None
  if m.latent_dim > 0:
    encoder = networks.PosteriorEncoder(
      vocab_size=vocab_size,
      max_length=m.max_length,
      latent_dim=m.latent_dim,
      width=m.encoder_width,
      depth=m.encoder_depth,
      num_heads=m.num_heads,
      mlp_ratio=m.mlp_ratio,
      init_log_std=m.encoder_init_log_std,
      block_size=m.block_size,
      sees_prefix=m.encoder_sees_prefix,
      dtype=dtype,
      pool=m.encoder_pool,
    )
  return networks.VMDModel(denoiser=denoiser, encoder=encoder)


def check_nfes(nfes, length: int, blocks: int = 1, field: str = "eval.nfes") -> None:
  """Each NFE (of the config field named) must be in 1..length and, for a block model, a multiple of
  the block count."""
  bad = [n for n in nfes if not 1 <= n <= length or n % blocks]
  if bad:
    raise ConfigError(
      f"{field} {tuple(nfes)}: each must be in 1..{length} (the sequence length)"
      + (f" and a multiple of the {blocks} blocks (NFE counts the steps of all blocks)" if blocks > 1 else "")
    )


def denoise_fn(model: networks.VMDModel):
  """The pure denoiser (params, x_t, t, z) -> logits [batch, length, vocab] the samplers call."""
  return lambda params, x_t, t, z: model.apply(params, x_t, t, z, method="denoise")


def block_fns(model: networks.VMDModel) -> samplers.BlockModelFns:
  """The pure functions of a block diffusion model that samplers.make_block_sampler calls."""
  d = model.denoiser

  def empty_cache(batch: int, length: int):
    shape = (batch, length, d.num_heads, d.width // d.num_heads)
    return [(jnp.zeros(shape, d.dtype), jnp.zeros(shape, d.dtype)) for _ in range(d.depth)]

  def denoise(params, x_t, t, z, context):
    return model.apply(params, x_t, t, z, False, context, method="denoise")

  def denoise_cached(params, x, t, z, cache, offset):
    return model.apply(params, x, t, z, cache, offset, method="denoise_cached")

  def cache_block(params, x0, cache, offset):
    return model.apply(params, x0, cache, offset, method="cache_block")

  return samplers.BlockModelFns(denoise, denoise_cached, cache_block, empty_cache)


def sampler(
  model: networks.VMDModel,
  schedule: Schedule,
  options: samplers.SamplerOptions,
  nfe: int,
  length: int | None = None,
):
  """The jitted nfe-step sampler (params, key, x_init) -> SampleResult of the model under `options`.
  For a block model with several blocks in `length` tokens it is the block sampler, with nfe / blocks
  steps per block (nfe must then be a multiple of the block count)."""
  common = dict(
    mask_id=model.vocab_size,
    schedule=schedule,
    latent_dim=model.latent_dim,
    options=options,
    time_input=model.denoiser.time_input,
  )
  blocks = 1 if length is None else num_blocks(model, length)
  if blocks == 1:
    return samplers.make_sampler(denoise_fn(model), nfe=nfe, **common)
  check_nfes([nfe], length, blocks)
  return samplers.make_block_sampler(
    block_fns(model), block_size=model.block_size, nfe_per_block=nfe // blocks, **common
  )
