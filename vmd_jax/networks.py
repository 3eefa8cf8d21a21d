"""Networks: the denoiser p(x0 | x_t, t, z), the latent posterior q(z | x0, M_t) and the prior p(z).

All modules are flax.linen modules, used through pure init/apply. The denoiser is a bidirectional
transformer with adaLN conditioning on the time t and the latent z. Every conditioning path is zero-
initialised (as in DiT), so at initialisation a model with a latent computes exactly what the same model
without one computes: VMD starts from MDM, and MDM is the same class with latent_dim = 0.
"""

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

zeros = nn.initializers.zeros


class GaussianPosterior(NamedTuple):
  """Diagonal Gaussian q(z) = N(mean, exp(log_std)^2); both [batch, latent_dim]."""

  mean: jax.Array
  log_std: jax.Array


def sample_gaussian(posterior: GaussianPosterior, key: jax.Array) -> jax.Array:
  """Reparameterised draw z = mean + std * eps, eps ~ N(0, I)."""
  eps = jax.random.normal(key, posterior.mean.shape, posterior.mean.dtype)
  return posterior.mean + jnp.exp(posterior.log_std) * eps


def gaussian_log_prob(posterior: GaussianPosterior, z: jax.Array) -> jax.Array:
  """log N(z; mean, std^2) summed over the latent dimensions: [batch]."""
  std_z = (z - posterior.mean) * jnp.exp(-posterior.log_std)
  return jnp.sum(-0.5 * std_z**2 - posterior.log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def prior_log_prob(z: jax.Array) -> jax.Array:
  """log p(z) under the prior N(0, I), summed over the latent dimensions: [batch]."""
  return jnp.sum(-0.5 * z**2 - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def kl_to_prior(posterior: GaussianPosterior) -> jax.Array:
  """Analytic KL(q || N(0, I)) per latent dimension: [batch, latent_dim] (sum it for the full KL)."""
  var = jnp.exp(2 * posterior.log_std)
  return 0.5 * (posterior.mean**2 + var - 1.0) - posterior.log_std


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
  """Sinusoidal features of t in [0, 1] (scaled by 1000): [batch, dim]."""
  half = dim // 2
  freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half) / half)
  angles = 1000.0 * t[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
  # x, shift, scale: [batch, length, width]
  return x * (1.0 + scale) + shift


class TransformerBlock(nn.Module):
  """Pre-norm bidirectional transformer block, adaLN-modulated by a conditioning vector c."""

  width: int
  num_heads: int
  mlp_ratio: int = 4
  dropout: float = 0.0
  dtype: Any = jnp.float32  # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array, train: bool) -> jax.Array:
    # x: [batch, length, width]; c: [batch, length, width], the conditioning at each position
    mod = nn.Dense(6 * self.width, kernel_init=zeros, dtype=self.dtype, name="adaln")(nn.silu(c))
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
    norm = functools.partial(nn.LayerNorm, use_scale=False, use_bias=False, dtype=self.dtype)
    h = _modulate(norm()(x), shift1, scale1)
    h = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads, dropout_rate=self.dropout, dtype=self.dtype
    )(h, h, deterministic=not train)
    x = x + gate1 * h
    h = _modulate(norm()(x), shift2, scale2)
    h = nn.Dense(self.mlp_ratio * self.width, dtype=self.dtype)(h)
    h = nn.Dense(self.width, dtype=self.dtype)(nn.gelu(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    return x + gate2 * h


class Denoiser(nn.Module):
  """Bidirectional transformer f(x_t, t, z) -> logits over the V data tokens at every position.

  vocab_size counts the data tokens; the mask id is vocab_size. With latent_dim = 0 there is no latent
  path and this is the MDM denoiser; with time_conditioning = False the network ignores t.
  """

  vocab_size: int
  max_length: int
  width: int = 128
  depth: int = 4
  num_heads: int = 4
  mlp_ratio: int = 4
  dropout: float = 0.0
  latent_dim: int = 0
  time_conditioning: bool = True
  latent_per_position: bool = True
  dtype: Any = jnp.float32  # computation dtype (bfloat16 for mixed precision); params and logits float32

  @nn.compact
  def __call__(self, x_t: jax.Array, t: jax.Array, z: jax.Array | None = None, train: bool = False):
    # x_t: [batch, length] in {0..V} (V = mask); t: [batch]; z: [batch, latent_dim] or None
    length = x_t.shape[1]
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    h = nn.Embed(self.vocab_size + 1, self.width, dtype=self.dtype, name="token_embed")(x_t)
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.max_length, self.width))
    h = h + pos[None, :length].astype(self.dtype)  # h: [batch, length, width]
    c = jnp.zeros((x_t.shape[0], 1, self.width), self.dtype)  # c: [batch, 1 or length, width]
    if self.time_conditioning:
      temb = timestep_embedding(t, self.width)
      c = c + dense(self.width)(nn.silu(dense(self.width)(temb)))[:, None, :]
    if self.latent_dim > 0:
      if z is None:
        raise ValueError("this denoiser has a latent (latent_dim > 0): pass z")
      c = c + self._latent_conditioning(z, length)
    c = jnp.broadcast_to(c, h.shape)
    for i in range(self.depth):
      block = TransformerBlock(
        self.width, self.num_heads, self.mlp_ratio, self.dropout, self.dtype, name=f"block_{i}"
      )
      h = block(h, c, train)
    shift, scale = jnp.split(dense(2 * self.width, kernel_init=zeros, name="final_adaln")(nn.silu(c)), 2, -1)
    h = _modulate(nn.LayerNorm(use_scale=False, use_bias=False, dtype=self.dtype)(h), shift, scale)
    logits = dense(self.vocab_size, name="logits")(h)
    return logits.astype(jnp.float32)  # logits: [batch, length, vocab]

  def _latent_conditioning(self, z: jax.Array, length: int) -> jax.Array:
    """z's share of the adaLN conditioning: [batch, length, width] (per position) or [batch, 1, width].

    Zero-initialised, so that at initialisation the output does not depend on z. Per position, each
    token reads its own projection of z, which lets one latent set different tokens at different
    positions directly (with one shared projection the D2 set collapsed onto k = l).
    """
    if self.latent_per_position:
      out = nn.Dense(self.max_length * self.width, kernel_init=zeros, dtype=self.dtype, name="latent_proj")(z)
      return out.reshape(z.shape[0], self.max_length, self.width)[:, :length]
    return nn.Dense(self.width, kernel_init=zeros, dtype=self.dtype, name="latent_proj")(z)[:, None, :]


class PosteriorEncoder(nn.Module):
  """q(z | x0, M_t): a transformer over the clean tokens and the mask indicator, mean-pooled.

  The encoder sees x0 and which positions are masked in x_t (as in VADD: an encoder blind to x_t
  collapsed there). For the global-latent bound it is called with every position masked.
  """

  vocab_size: int
  max_length: int
  latent_dim: int
  width: int = 128
  depth: int = 2
  num_heads: int = 4
  mlp_ratio: int = 4
  init_log_std: float = 0.0
  dtype: Any = jnp.float32  # computation dtype of the blocks; the pooled head runs in float32

  @nn.compact
  def __call__(self, x0: jax.Array, masked: jax.Array) -> GaussianPosterior:
    # x0: [batch, length] in {0..V-1}; masked: [batch, length] bool
    h = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, name="token_embed")(x0)
    h = h + nn.Embed(2, self.width, dtype=self.dtype, name="mask_embed")(masked.astype(jnp.int32))
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.max_length, self.width))
    h = h + pos[None, : x0.shape[1]].astype(self.dtype)
    c = jnp.zeros_like(h)  # the encoder is unconditioned: adaLN reduces to plain LayerNorm
    for i in range(self.depth):
      block = TransformerBlock(
        self.width, self.num_heads, self.mlp_ratio, dtype=self.dtype, name=f"block_{i}"
      )
      h = block(h, c, False)
    pooled = nn.LayerNorm()(jnp.mean(h.astype(jnp.float32), axis=1))  # pooled: [batch, width]
    mean = nn.Dense(self.latent_dim, name="mean")(pooled)
    log_std = nn.Dense(self.latent_dim, kernel_init=zeros, name="log_std")(pooled) + self.init_log_std
    return GaussianPosterior(mean=mean, log_std=log_std)


class VMDModel(nn.Module):
  """The denoiser and, when it has a latent, the posterior encoder, under one parameter tree.

  Methods are called with `model.apply(params, ..., method=...)`: `denoise` (p(x0 | x_t, t, z)) and
  `posterior` (q(z | x0, M_t)). An MDM is a VMDModel whose denoiser has latent_dim = 0 and no encoder.
  """

  denoiser: Denoiser
  encoder: PosteriorEncoder | None = None

  def __post_init__(self):
    has_encoder = self.encoder is not None
    if has_encoder != (self.denoiser.latent_dim > 0) or (
      has_encoder and self.encoder.latent_dim != self.denoiser.latent_dim
    ):
      raise ValueError("the encoder's latent_dim must equal the denoiser's, and exist only if it is > 0")
    super().__post_init__()

  @property
  def vocab_size(self) -> int:
    """Data tokens V; the mask id is V."""
    return self.denoiser.vocab_size

  @property
  def latent_dim(self) -> int:
    """Dimension of z (0 for an MDM)."""
    return self.denoiser.latent_dim

  def denoise(self, x_t, t, z=None, train: bool = False):
    """Logits of p(x0_i | x_t, t, z): [batch, length, vocab]."""
    return self.denoiser(x_t, t, z, train)

  def posterior(self, x0, masked):
    """q(z | x0, M_t) as a GaussianPosterior with [batch, latent_dim] fields."""
    return self.encoder(x0, masked)

  def __call__(self, x0, masked, t):
    """Touch every submodule once (used by init)."""
    z = None
    if self.latent_dim > 0:
      z = self.posterior(x0, masked).mean
    return self.denoise(jnp.where(masked, self.vocab_size, x0), t, z)
