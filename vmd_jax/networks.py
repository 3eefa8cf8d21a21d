"""Networks: the denoiser p(x0 | x_t, t, z), the latent posterior q(z | x0, M_t) and the prior p(z).

All modules are flax.linen modules, used through pure init/apply. The denoiser is a bidirectional
transformer with adaLN conditioning on the time t and the latent z. Every conditioning path is zero-
initialised (as in DiT), so at initialisation a model with a latent computes exactly what the same model
without one computes: VMD starts from MDM, and MDM is the same class with latent_dim = 0.

The conditioning is computed at the cost it needs. t is constant over a sequence (over a block with
block diffusion), so each layer's modulation from t is computed once per sequence (per block) and read
by its positions without being written out per position; the clean stream's (t = 0, no latent) is
computed once. How z_b enters is `latent_path`:
- `adaln` (the default, and the network of releases up to 0.5) adds z_b's projection at each position
  to that position's conditioning vector, so a VMD's adaLN MLPs (width -> 6 x width) run at every
  position.
- `low_rank_adaln` (the path of the `vmd+` recipe since release 0.6): each position's conditioning
  vector, the same as `adaln`'s, becomes, through silu and one map, a code of latent_rank numbers;
  each layer adds a zero-initialised linear map of the code to its shifts and scales. The adaLN MLPs
  stay per block, and the per-position part costs latent_rank x 4 x width multiply-adds per layer.
- `low_rank` adds z_b to the block's vector once per block, and its per-position contribution enters the
  input embedding through latent_dim features per position (linear in z; `LatentPath`).

Block diffusion (BD3-LM): with block_size = k < L the sequence is cut into L / k blocks, each with its
own time t_b and latent z_b. The denoiser then reads the noisy sequence x_t and the clean sequence x0 in
one pass of length 2L under `block_attention_mask`: noisy block b sees itself and the clean blocks before
it, clean block b sees the clean blocks up to itself. Clean tokens are conditioned on t = 0 and no
latent, so the keys and values of finished blocks can be cached while later blocks are sampled
(`Denoiser.__call__` with `cache`). With one block (block_size = 0 or L) the clean stream is not read
and the network is exactly the non-block denoiser.
"""

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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


def _grouped(x: jax.Array, rows: jax.Array) -> jax.Array:
  """x [batch, n, width] viewed as [batch, groups, n / groups, width] for the rows [batch or 1, groups,
  1, width] of a modulation: each row is broadcast over its group of positions inside the elementwise
  op that reads it instead of being written out per position."""
  return x.reshape(x.shape[0], rows.shape[1], -1, x.shape[-1])


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
  # x: [batch, n, width]; shift, scale: [batch or 1, groups, 1, width], groups dividing n (scale's
  # groups no finer than shift's)
  return (_grouped(x, shift) * (1.0 + scale) + shift).reshape(x.shape)


def _gated_add(x: jax.Array, gate: jax.Array, h: jax.Array) -> jax.Array:
  # x, h: [batch, n, width]; gate: [batch or 1, groups, 1, width]
  return (_grouped(x, gate) + gate * _grouped(h, gate)).reshape(x.shape)


def block_layout(length: int, block_size: int) -> tuple[int, int]:
  """(number of blocks, block size) of a sequence; block_size 0 means one block of the whole sequence."""
  size = block_size or length
  if size < 1 or length % size:
    raise ValueError(f"block size {block_size} must divide the sequence length {length}")
  return length // size, size


def block_attention_mask(length: int, block_size: int) -> np.ndarray:
  """The BD3-LM attention mask over [x_t; x0], [2 * length, 2 * length] bool (True = may attend).

  Queries and keys are ordered noisy positions 0..L-1, then clean positions 0..L-1. Noisy block b attends
  to noisy block b and to clean blocks < b; clean block b attends to clean blocks <= b; no clean
  position attends to a noisy one.
  """
  blocks = np.arange(length) // (block_size or length)
  query, key = blocks[:, None], blocks[None, :]  # [L, 1], [1, L]
  top = np.concatenate([query == key, key < query], axis=1)  # noisy queries: [L, 2L]
  bottom = np.concatenate([np.zeros((length, length), bool), key <= query], axis=1)  # clean queries
  return np.concatenate([top, bottom], axis=0)


def encoder_attention_mask(length: int, block_size: int, sees_prefix: bool) -> np.ndarray | None:
  """The posterior encoder's mask [L, L]: block b attends to block b (and to blocks < b if sees_prefix);
  None (full attention) for one block."""
  blocks = np.arange(length) // (block_size or length)
  if blocks[-1] == 0:
    return None
  query, key = blocks[:, None], blocks[None, :]
  return (key <= query) if sees_prefix else (key == query)


def _einsum_attention(q, k, v, mask, dtype):
  """softmax(q k^T / sqrt(d)) v with logits and softmax in float32, written out: [batch, n, heads, d].

  q: [batch, n, heads, d]; k, v: [batch, s, heads, d]; mask: broadcastable to [batch, heads, n, s] bool.
  """
  logits = jnp.einsum("bqhd,bkhd->bhqk", q / jnp.sqrt(q.shape[-1]).astype(q.dtype), k)
  logits = logits.astype(jnp.float32)  # logits: [batch, heads, n, s]
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  return softmax(logits).astype(dtype)


@jax.custom_vjp
def softmax(logits: jax.Array) -> jax.Array:
  """softmax over the last axis, whose backward reads the saved output: g -> (g - sum(g * p)) * p.

  The function of jax.nn.softmax (a test compares values and gradients); written so for XLA's CPU
  backend, which ran the attention's forward and backward faster this way (README, Throughput).
  """
  unnormalised = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  return unnormalised / jnp.sum(unnormalised, axis=-1, keepdims=True)


def _softmax_fwd(logits):
  probs = softmax(logits)
  return probs, probs


def _softmax_bwd(probs, g):
  return ((g - jnp.sum(g * probs, axis=-1, keepdims=True)) * probs,)


softmax.defvjp(_softmax_fwd, _softmax_bwd)


def attention_implementation(dtype, head_dim: int, train: bool) -> str | None:
  """The `implementation` of jax.nn.dot_product_attention for this backend, or None for the written-out
  `_einsum_attention`.

  cuDNN's fused (flash) attention on a GPU in half precision with a head size it takes; XLA's
  elsewhere, except for training on a CPU: there XLA's forward and backward took 15-27% longer than the
  written-out attention's at [16, 256, 4, 64] and [16, 256, 4, 32], while its forward alone, what
  sampling runs, took 30-40% of the time (`python -m vmd_jax.benchmark_attention`; README,
  Throughput).
  """
  backend = jax.default_backend()
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  if backend == "gpu" and half and head_dim % 8 == 0 and head_dim <= 128:
    return "cudnn"
  if backend == "cpu" and train:
    return None
  return "xla"


def fused_attention(q, k, v, mask=None, implementation: str = "xla"):
  """softmax(q k^T / sqrt(d)) v through jax.nn.dot_product_attention with the given implementation
  ("cudnn" falls back to "xla" where this cuDNN or card lacks the kernel).

  q: [batch, n, heads, d]; k, v: [batch, s, heads, d]; mask: [n, s] or [batch, 1, n, s] bool, or None.
  Returns [batch, n, heads, d]. The logits and softmax are float32, as in `_einsum_attention`; a test
  checks that they agree.
  """
  if mask is not None:
    mask = jnp.asarray(mask, bool)
    mask = mask if mask.ndim == 4 else mask[None, None]  # [batch or 1, 1, n, s]
  if implementation == "cudnn":
    try:
      return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
    except (NotImplementedError, RuntimeError, ValueError):
      pass
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")


class Attention(nn.Module):
  """Multi-head self-attention with an optional mask and optional extra keys and values (a cache).

  The parameters (query, key, value, out) have the layout of flax's MultiHeadDotProductAttention.
  Without a cache (and without attention dropout) the attention is `fused_attention` where
  `attention_implementation` names one.
  """

  num_heads: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, prefix=None, train: bool = False):
    # x: [batch, n, width]; mask: [n, p + n] bool, or [batch, 1, n, p + n]; prefix: (k, v), each
    # [batch, p, heads, head_dim], keys placed before x's own. Returns the output [batch, n, width] and
    # x's own keys and values ([batch, n, heads, head_dim] each).
    width = x.shape[-1]
    head_dim = width // self.num_heads
    project = functools.partial(
      nn.DenseGeneral, features=(self.num_heads, head_dim), axis=-1, dtype=self.dtype
    )
    q, k, v = (project(name=name)(x) for name in ("query", "key", "value"))
    own = (k, v)
    dropping = train and self.dropout > 0
    implementation = attention_implementation(self.dtype, head_dim, train)
    if prefix is None and not dropping and implementation is not None:
      out = fused_attention(q, k, v, mask, implementation)
    else:
      if prefix is not None:
        k = jnp.concatenate([prefix[0].astype(k.dtype), k], axis=1)
        v = jnp.concatenate([prefix[1].astype(v.dtype), v], axis=1)
      weights = _einsum_attention(q, k, v, mask, self.dtype)  # [batch, heads, n, p + n]
      if dropping:
        weights = nn.Dropout(self.dropout)(weights, deterministic=False)
      out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype, name="out")(out), own


class Conditioning(NamedTuple):
  """What the adaLN layers of one pass read, at the resolution where it varies.

  The pass covers blocks x size noisy positions, then clean_length clean ones (the clean stream of block
  diffusion, or nothing).
  time: [batch or 1, blocks or 1, width], the conditioning vector of each noisy block: the embedding of
    t_b plus z_b's share (its positions share it; one row when all blocks share it).
  blocks, size: noisy blocks, and positions per block.
  clean: [1, 1, width], the embedding of t = 0 that every clean position reads; None without them.
  code: [batch, blocks x size, rank], each noisy position's low-rank code of (t_b, z_b) that the
    `low_rank_adaln` latent path adds to the shifts and scales of every layer; None otherwise.
  """

  time: jax.Array
  blocks: int
  size: int
  clean: jax.Array | None = None
  clean_length: int = 0
  code: jax.Array | None = None


def adaln_modulation(cond: Conditioning, dense: nn.Module, batch: int, chunks: int):
  """The modulation of a pass, split into `chunks` arrays [batch or 1, groups, 1, width]: one row per
  group of positions that share their conditioning (`_modulate` and `_gated_add` read them so).

  dense maps silu(conditioning vector) to chunks x width features; it runs once per noisy block and
  once for the clean stream. The groups are the noisy blocks, then the clean stream cut into groups of
  the same size, which all read the clean row.
  """
  rows = dense(nn.silu(cond.time))  # [batch or 1, blocks or 1, features]
  if cond.clean_length:
    rows = jnp.broadcast_to(rows, (batch, cond.blocks, rows.shape[-1]))
    clean = dense(nn.silu(cond.clean)).astype(rows.dtype)  # [1, 1, features]
    clean = jnp.broadcast_to(clean, (batch, cond.clean_length // cond.size, rows.shape[-1]))
    rows = jnp.concatenate([rows, clean], axis=1)
  return jnp.split(rows[:, :, None], chunks, axis=-1)


def add_code_modulation(rows: list, cond: Conditioning, dense: nn.Module, batch: int) -> list:
  """rows (shift, scale, shift, scale: [batch or 1, groups, 1, width]) plus dense(cond.code), each
  noisy position's own share: [batch, positions, 1, width] each. Clean positions get no share."""
  share = dense(cond.code)  # [batch, noisy positions, len(rows) x width]
  if cond.clean_length:
    share = jnp.concatenate([share, jnp.zeros((batch, cond.clean_length, share.shape[-1]), share.dtype)], 1)
  positions = share.shape[1]
  out = []
  for row, part in zip(rows, jnp.split(share[:, :, None], len(rows), axis=-1), strict=True):
    row = jnp.broadcast_to(row, (batch, row.shape[1], positions // row.shape[1], row.shape[-1]))
    out.append(row.reshape(batch, positions, 1, -1) + part)
  return out


class TransformerBlock(nn.Module):
  """Pre-norm transformer block, adaLN-modulated by the conditioning of each position."""

  width: int
  num_heads: int
  mlp_ratio: int = 4
  dropout: float = 0.0
  dtype: Any = jnp.float32  # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, x, cond: Conditioning, train: bool, mask=None, prefix=None):
    # x: [batch, n, width]; cond covers x's n positions; mask and prefix as in Attention.
    # Returns x [batch, n, width] and this layer's keys and values of x.
    adaln = nn.Dense(6 * self.width, kernel_init=zeros, dtype=self.dtype, name="adaln")
    shift1, scale1, gate1, shift2, scale2, gate2 = adaln_modulation(cond, adaln, x.shape[0], 6)
    if cond.code is not None:
      code = nn.Dense(4 * self.width, use_bias=False, kernel_init=zeros, dtype=self.dtype, name="adaln_code")
      shift1, scale1, shift2, scale2 = add_code_modulation(
        [shift1, scale1, shift2, scale2], cond, code, x.shape[0]
      )
    norm = functools.partial(nn.LayerNorm, use_scale=False, use_bias=False, dtype=self.dtype)
    h = _modulate(norm()(x), shift1, scale1)
    # The name keeps the parameter tree of earlier releases, which used flax's attention module.
    attention = Attention(self.num_heads, self.dropout, self.dtype, name="MultiHeadDotProductAttention_0")
    h, kv = attention(h, mask, prefix, train)
    x = _gated_add(x, gate1, h)
    h = _modulate(norm()(x), shift2, scale2)
    h = nn.Dense(self.mlp_ratio * self.width, dtype=self.dtype)(h)
    h = nn.Dense(self.width, dtype=self.dtype)(nn.gelu(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    return _gated_add(x, gate2, h), kv


class LatentPath(nn.Module):
  """How z_b reaches the denoiser at the positions of block b, through latent_dim features.

  Two parts, both zero-initialised, so a model that has not trained them ignores z and is exactly an
  MDM (there is no bias either, so z = 0 is the MDM too):
  - Per block: z_b, through a [latent_dim, width] kernel, joins the time embedding of t_b that every
    layer's adaLN reads (as z and t shared one conditioning vector in earlier releases). Like t's, it is
    computed once per block and broadcast to the block's positions.
  - Per position: z_b becomes latent_dim features per position, and a [latent_dim, width] kernel adds
    them to the position's input embedding (a low-rank path, linear in z). With latent_per_position
    each position of a block reads its own linear map of z_b (by its index within the block), which
    lets one latent set different tokens directly (with one shared map the D2 set collapsed onto k = l);
    otherwise every position reads the same map. The maps start at N(0, 1 / latent_dim), so the
    features of a z ~ N(0, I) are about unit scale.
  Per token that costs latent_dim x (latent_dim + width) multiply-adds, once.
  """

  latent_dim: int
  max_length: int
  width: int
  per_position: bool = True
  dtype: Any = jnp.float32

  def setup(self):
    rows = self.max_length if self.per_position else 1
    init = nn.initializers.normal(self.latent_dim**-0.5)
    self.feature_map = self.param("features", init, (self.latent_dim, rows, self.latent_dim))
    self.embed_kernel = self.param("embed", zeros, (self.latent_dim, self.width))
    self.condition_kernel = self.param("condition", zeros, (self.latent_dim, self.width))

  def embedding(self, z: jax.Array, block_size: int) -> jax.Array:
    """z_b's share of each position's input: z [batch, blocks, latent_dim] -> [batch, blocks x
    block_size, width]."""
    kernel = self.feature_map[:, : block_size if self.per_position else 1].astype(self.dtype)
    features = jnp.einsum("bnd,dpe->bnpe", z.astype(self.dtype), kernel)  # [batch, blocks, rows, d]
    out = features @ self.embed_kernel.astype(self.dtype)  # [batch, blocks, rows, width]
    out = jnp.broadcast_to(out, z.shape[:2] + (block_size, self.width))
    return out.reshape(z.shape[0], -1, self.width)

  def conditioning(self, z: jax.Array) -> jax.Array:
    """z_b's share of block b's conditioning vector: z [batch, blocks, latent_dim] -> [batch, blocks,
    width]."""
    return z.astype(self.dtype) @ self.condition_kernel.astype(self.dtype)


class LatentProjection(nn.Module):
  """z_b's share of the conditioning vector of each position of block b (`adaln`, `low_rank_adaln`).

  Per position (latent_per_position), each position of a block reads its own projection of z_b (by its
  index within the block); otherwise every position reads the same one. The vector, t_b's embedding
  plus this, goes through each layer's adaLN MLP at every position (`adaln`) or becomes the position's
  code (`low_rank_adaln`). Zero-initialised, the parameters of a Dense layer to max_length x width, or
  width, features.
  """

  max_length: int
  width: int
  per_position: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, block_size: int) -> jax.Array:
    # z: [batch, blocks, latent_dim] -> [batch, blocks * block_size, width]
    rows = self.max_length if self.per_position else 1
    kernel = self.param("kernel", zeros, (z.shape[-1], rows * self.width))
    bias = self.param("bias", zeros, (rows * self.width,))
    kernel = kernel.reshape(z.shape[-1], rows, self.width)[:, :block_size].astype(self.dtype)
    bias = bias.reshape(rows, self.width)[:block_size].astype(self.dtype)
    out = jnp.einsum("bnd,dpw->bnpw", z.astype(self.dtype), kernel) + bias  # [batch, blocks, rows', width]
    out = jnp.broadcast_to(out, z.shape[:2] + (block_size, self.width))
    return out.reshape(z.shape[0], -1, self.width)


LATENT_PATHS = ("adaln", "low_rank", "low_rank_adaln")
# How the posterior encoder pools its positions: a plain mean, or a learned weight per position and feature
ENCODER_POOLS = ("mean", "position")


def per_block(x: jax.Array, batch_ndim: int) -> jax.Array:
  """Give a per-sequence array ([batch] t, [batch, d] z) a blocks axis: [batch, 1(, d)]."""
  return x[:, None] if x.ndim == batch_ndim else x


class Denoiser(nn.Module):
  """Transformer f(x_t, t, z) -> logits over the V data tokens at every position.

  vocab_size counts the data tokens; the mask id is vocab_size. With latent_dim = 0 there is no latent
  path and this is the MDM denoiser; with time_conditioning = False the network ignores t. block_size
  > 0 makes it a block diffusion denoiser (module docstring).
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
  latent_path: str = "adaln"  # how z reaches the network: one of LATENT_PATHS (Denoiser._conditioning)
  latent_rank: int = 16  # the size of each position's code of (t_b, z_b) with latent_path low_rank_adaln
  block_size: int = 0  # 0: one block, the whole sequence
  dtype: Any = jnp.float32  # computation dtype (bfloat16 for mixed precision); params and logits float32
  # which time of a sampler step its callers pass as t (schedules.TIME_INPUTS); the network is the same
  time_input: str = "start"

  @nn.compact
  def __call__(self, x_t, t, z=None, train: bool = False, context=None, cache=None, offset=0):
    """Logits of p(x0 | x_t, t, z) [batch, n, vocab], in one of three modes.

    Whole sequence (cache None): x_t [batch, L]; t [batch] or [batch, blocks]; z [batch, d] or [batch,
    blocks, d]; context, the clean x0 [batch, L], is read only when there are several blocks.
    One block against a cache (cache given): x_t [batch, block_size] is the noisy block starting at
    position `offset`; t [batch]; z [batch, d]; cache holds, per layer, keys and values [batch, L,
    heads, head_dim] of the clean tokens, valid before `offset`.
    Clean block into a cache (cache given, t None): x_t holds the clean tokens of the block at `offset`;
    returns, per layer, their keys and values [batch, block_size, heads, head_dim] instead of logits.
    """
    batch, n = x_t.shape
    clean_only = cache is not None and t is None
    if cache is None:
      num_blocks, size = block_layout(n, self.block_size)
    else:
      num_blocks, size = 1, n
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    embed = nn.Embed(self.vocab_size + 1, self.width, dtype=self.dtype, name="token_embed")
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.max_length, self.width))
    pos = jax.lax.dynamic_slice_in_dim(pos, offset, n).astype(self.dtype)  # [n, width]
    time_mlp = None
    if self.time_conditioning:
      layers = (dense(self.width), dense(self.width))  # created in the order of earlier releases
      time_mlp = lambda times: layers[0](nn.silu(layers[1](timestep_embedding(times, self.width))))  # noqa: E731
    cond, latent_input = self._conditioning(time_mlp, t, z, num_blocks, size, clean_only)
    h = embed(x_t) + pos[None] + latent_input  # h: [batch, n, width]
    mask, prefixes = None, [None] * self.depth
    if num_blocks > 1:  # the clean stream joins the noisy one
      if context is None:
        raise ValueError("a block diffusion denoiser with several blocks needs the clean sequence (context)")
      h = jnp.concatenate([h, embed(context) + pos[None]], axis=1)  # [batch, 2L, width]
      clean = self._time_embedding(time_mlp, jnp.zeros((1, 1)))  # [1, 1, width]
      cond = cond._replace(clean=clean, clean_length=n)
      mask = block_attention_mask(n, size)
    if cache is not None:
      cache_length = cache[0][0].shape[1]
      visible = jnp.concatenate([jnp.arange(cache_length) < offset, jnp.ones((n,), bool)])
      mask, prefixes = visible[None, :], cache
    kvs = []
    for i in range(self.depth):
      block = TransformerBlock(
        self.width, self.num_heads, self.mlp_ratio, self.dropout, self.dtype, name=f"block_{i}"
      )
      h, kv = block(h, cond, train, mask, prefixes[i])
      kvs.append(kv)
    if clean_only:
      return kvs
    h = h[:, :n]  # the noisy positions
    final = dense(2 * self.width, kernel_init=zeros, name="final_adaln")
    shift, scale = adaln_modulation(cond._replace(clean_length=0), final, batch, 2)
    h = _modulate(nn.LayerNorm(use_scale=False, use_bias=False, dtype=self.dtype)(h), shift, scale)
    # The logits layer runs in float32 under mixed precision too: its outputs are what every bound and
    # sampler reads.
    return nn.Dense(self.vocab_size, dtype=jnp.float32, name="logits")(h.astype(jnp.float32))  # [batch, n, V]

  def _time_embedding(self, time_mlp, times: jax.Array) -> jax.Array:
    """The time embedding of each block, [batch, blocks, width] for times [batch, blocks]; zeros
    [1, 1, width] for a denoiser without time conditioning."""
    if time_mlp is None:
      return jnp.zeros((1, 1, self.width), self.dtype)
    return time_mlp(times.reshape(-1)).reshape(times.shape + (self.width,))

  def _conditioning(self, time_mlp, t, z, blocks: int, size: int, clean_only: bool):
    """The Conditioning of the noisy positions (of the clean block for clean_only), and z_b's share of
    each noisy position's input embedding ([batch, n, width], or 0).

    The conditioning vector is t_b's embedding (t = 0 for clean tokens) plus z_b's share (none for
    clean tokens), which depends on latent_path:
    - `adaln` (the releases up to 0.2): z_b's `LatentProjection` at each position, so the vector, and
      every layer's adaLN MLP with it, is computed per position;
    - `low_rank`: z_b's `LatentPath`, a share of the vector per block (computed once per block, as t's)
      and a low-rank share of each position's input embedding;
    - `low_rank_adaln`: the vector stays t_b's, computed once per block; as with `adaln`, each position
      forms t_b's embedding plus its `LatentProjection` of z_b, but that vector, through silu and one
      [width, latent_rank] map, becomes the position's code (`Conditioning.code`), and each layer adds
      a zero-initialised [latent_rank, 4 x width] map of the code to its shifts and scales.
    """
    times = jnp.zeros((1, 1)) if clean_only else per_block(t, 1)  # [batch, blocks]
    cond = Conditioning(self._time_embedding(time_mlp, times), blocks, size)
    if self.latent_dim == 0 or clean_only:
      return cond, 0.0
    if z is None:
      raise ValueError("this denoiser has a latent (latent_dim > 0): pass z")
    z = per_block(z, 2)  # [batch, blocks, latent_dim]
    if self.latent_path in ("adaln", "low_rank_adaln"):
      project = LatentProjection(
        self.max_length, self.width, self.latent_per_position, self.dtype, name="latent_proj"
      )
      batch = z.shape[0]
      time = jnp.broadcast_to(cond.time[:, :, None], (batch, blocks, size, self.width)).reshape(
        batch, -1, self.width
      )
      vector = time + project(z, size)  # each noisy position's conditioning vector: [batch, n, width]
      if self.latent_path == "adaln":
        return Conditioning(vector, blocks * size, 1), 0.0
      code = nn.Dense(self.latent_rank, use_bias=False, dtype=self.dtype, name="latent_code")
      return cond._replace(code=code(nn.silu(vector))), 0.0  # code: [batch, n, latent_rank]
    path = LatentPath(
      self.latent_dim, self.max_length, self.width, self.latent_per_position, self.dtype, name="latent_path"
    )
    cond = cond._replace(time=cond.time + path.conditioning(z))
    return cond, path.embedding(z, size)


class PosteriorEncoder(nn.Module):
  """q(z | x0, M_t): a transformer over the clean tokens and the mask indicator, pooled over positions
  (`pool`: their mean, or a sum with a learned weight per position and feature).

  The encoder sees x0 and which positions are masked in x_t (as in VADD: an encoder blind to x_t
  collapsed there). For the global-latent bound it is called with every position masked. With
  block_size > 0 there is one posterior per block, pooled over that block; block b's tokens attend to
  block b only, or also to the blocks before it with sees_prefix.
  """

  vocab_size: int
  max_length: int
  latent_dim: int
  width: int = 128
  depth: int = 2
  num_heads: int = 4
  mlp_ratio: int = 4
  init_log_std: float = 0.0
  block_size: int = 0
  sees_prefix: bool = False
  dtype: Any = jnp.float32  # computation dtype of the blocks; the pooled head runs in float32
  pool: str = "mean"  # one of ENCODER_POOLS

  @nn.compact
  def __call__(
    self, x0: jax.Array, masked: jax.Array, train: bool = False, hidden: jax.Array | None = None
  ) -> GaussianPosterior:
    # x0: [batch, length] in {0..V-1}; masked: [batch, length] bool; train: whether a gradient will be
    # taken (it picks the attention's implementation); hidden: [batch, length] bool or None, positions
    # whose token the encoder does not see (their token embedding is left out). Fields [batch,
    # latent_dim], or [batch, blocks, latent_dim] for a block model.
    batch, length = x0.shape
    num_blocks, size = block_layout(length, self.block_size)
    h = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, name="token_embed")(x0)
    if hidden is not None:
      h = jnp.where(hidden[..., None], jnp.zeros((), h.dtype), h)
    h = h + nn.Embed(2, self.width, dtype=self.dtype, name="mask_embed")(masked.astype(jnp.int32))
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.max_length, self.width))
    h = h + pos[None, :length].astype(self.dtype)
    # The encoder is unconditioned: its adaLN reads zeros, a learned constant modulation.
    cond = Conditioning(jnp.zeros((1, 1, self.width), self.dtype), 1, length)
    mask = encoder_attention_mask(length, self.block_size, self.sees_prefix)
    for i in range(self.depth):
      block = TransformerBlock(
        self.width, self.num_heads, self.mlp_ratio, dtype=self.dtype, name=f"block_{i}"
      )
      h, _ = block(h, cond, train, mask)
    h = h.astype(jnp.float32).reshape(batch, num_blocks, size, self.width)
    if self.pool == "position":
      # each position of a block (of the sequence) weighs each feature its own way: a solved Sudoku holds
      # every digit nine times, so its plain mean is nearly the same for every grid
      slots = self.block_size or self.max_length
      weights = self.param("pool_weights", nn.initializers.normal(1.0), (slots, self.width))
      pooled = jnp.einsum("bksw,sw->bkw", h, weights[:size]) / np.sqrt(size)
    else:
      pooled = jnp.mean(h, axis=2)
    pooled = nn.LayerNorm()(pooled)  # [batch, blocks, width]
    mean = nn.Dense(self.latent_dim, name="mean")(pooled)
    log_std = nn.Dense(self.latent_dim, kernel_init=zeros, name="log_std")(pooled) + self.init_log_std
    if self.block_size == 0:
      mean, log_std = mean[:, 0], log_std[:, 0]
    return GaussianPosterior(mean=mean, log_std=log_std)


class VMDModel(nn.Module):
  """The denoiser and, when it has a latent, the posterior encoder, under one parameter tree.

  Methods are called with `model.apply(params, ..., method=...)`: `denoise` (p(x0 | x_t, t, z)),
  `posterior` (q(z | x0, M_t)), and for block sampling `denoise_cached` and `cache_block`. An MDM is a
  VMDModel whose denoiser has latent_dim = 0 and no encoder.
  """

  denoiser: Denoiser
  encoder: PosteriorEncoder | None = None

  def __post_init__(self):
    has_encoder = self.encoder is not None
    if has_encoder != (self.denoiser.latent_dim > 0) or (
      has_encoder and self.encoder.latent_dim != self.denoiser.latent_dim
    ):
      raise ValueError("the encoder's latent_dim must equal the denoiser's, and exist only if it is > 0")
    if has_encoder and self.encoder.block_size != self.denoiser.block_size:
      raise ValueError("the encoder's block_size must equal the denoiser's")
    super().__post_init__()

  @property
  def vocab_size(self) -> int:
    """Data tokens V; the mask id is V."""
    return self.denoiser.vocab_size

  @property
  def latent_dim(self) -> int:
    """Dimension of z (0 for an MDM)."""
    return self.denoiser.latent_dim

  @property
  def block_size(self) -> int:
    """Tokens per diffusion block (0: the whole sequence is one block)."""
    return self.denoiser.block_size

  def denoise(self, x_t, t, z=None, train: bool = False, context=None):
    """Logits of p(x0_i | x_t, t, z): [batch, length, vocab]. For several blocks, t is [batch, blocks],
    z [batch, blocks, d] and context the clean x0 [batch, length]."""
    return self.denoiser(x_t, t, z, train, context)

  def denoise_cached(self, x_block, t, z, cache, offset):
    """Logits [batch, block_size, vocab] of the noisy block at `offset`, against cached clean keys."""
    return self.denoiser(x_block, t, z, cache=cache, offset=offset)

  def cache_block(self, x0_block, cache, offset):
    """Per layer, the keys and values [batch, block_size, heads, head_dim] of the clean block at
    `offset`, which attends to the cache before it."""
    return self.denoiser(x0_block, None, cache=cache, offset=offset)

  def posterior(self, x0, masked, train: bool = False, hidden=None):
    """q(z | x0, M_t) as a GaussianPosterior with [batch, latent_dim] fields ([batch, blocks,
    latent_dim] for a block model); train as in the training step. With hidden ([batch, length]
    bool), the encoder does not see x0 at those positions: r(z | x0 outside hidden, M_t), the
    proposal of one sampler step that reveals masked & ~hidden (objective `stepwise`)."""
    return self.encoder(x0, masked, train, hidden)

  def __call__(self, x0, masked, t):
    """Touch every submodule once (used by init)."""
    z = None
    if self.latent_dim > 0:
      z = self.posterior(x0, masked).mean
    x_t = jnp.where(masked, self.vocab_size, x0)
    if self.block_size and self.block_size < x0.shape[1]:
      t = jnp.broadcast_to(per_block(t, 1), (x0.shape[0], x0.shape[1] // self.block_size))
    return self.denoise(x_t, t, z, context=x0)
