"""Samplers for masked diffusion: reveal the masked tokens of x_1 over nfe denoiser calls.

x_t holds tokens in {0..V-1} and the mask id V. Step j = 0..nfe-1 goes from t_j = 1 - j/nfe to
t_{j+1}: the denoiser gives logits of p_theta(x_0 | x_t, t_j, z), every position gets a candidate
value (the token rule) and a score (the order rule), and the highest-scoring masked positions are
revealed, as many as the schedule says stop being masked between t_j and t_{j+1}
(`remaining_masked`). With the 'random' order this is the ancestral sampler of the MDM; 'top_prob'
and 'margin' reveal the positions where the denoiser is most confident first.

For VMD the denoiser is conditioned on z ~ N(0, I), drawn once per sequence ('fixed', as the VMD
paper samples) or anew at every step ('per_step', as VADD does); for the MDM latent_dim = 0 and the
denoiser gets z = None.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vmd_jax.errors import ConfigError
from vmd_jax.schedules import Schedule, remaining_masked

# denoise_fn(params, x_t [batch, length] int32, t [batch] float32, z [batch, d] or None)
#   -> logits [batch, length, vocab] float32
DenoiseFn = Callable[[Any, jax.Array, jax.Array, jax.Array | None], jax.Array]


class SampleResult(NamedTuple):
  """The sampled x_0 and the step at which each of its positions was revealed."""

  tokens: jax.Array  # [batch, length] int32, no mask id left
  reveal_step: jax.Array  # [batch, length] int32 in 0..nfe-1, -1 where the token was given


def _random_score(logits: jax.Array, key: jax.Array) -> jax.Array:
  """Uniform scores: a uniformly random set of positions is revealed, as in ancestral sampling."""
  return jax.random.uniform(key, logits.shape[:-1])  # [batch, length]


def _top_prob_score(logits: jax.Array, key: jax.Array) -> jax.Array:
  """max_v p_theta(x_0 = v | x_t): the denoiser's confidence in its top token."""
  del key
  return jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1)  # [batch, length]


def _margin_score(logits: jax.Array, key: jax.Array) -> jax.Array:
  """p(top token) - p(second token): confident and unambiguous positions first."""
  del key
  top2 = jax.lax.top_k(jax.nn.softmax(logits, axis=-1), 2)[0]  # [batch, length, 2]
  return top2[..., 0] - top2[..., 1]


def _argmax_tokens(logits: jax.Array, key: jax.Array, temperature: float) -> jax.Array:
  """The mode of p_theta(x_0 | x_t) at every position (the temperature does not change it)."""
  del key, temperature
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [batch, length]


def _sample_tokens(logits: jax.Array, key: jax.Array, temperature: float) -> jax.Array:
  """A draw from softmax(logits / temperature) at every position."""
  return jax.random.categorical(key, logits / temperature, axis=-1).astype(jnp.int32)  # [batch, length]


def _fixed_z_key(key: jax.Array, step: jax.Array) -> jax.Array:
  """The same key at every step, so one z per sequence for the whole trajectory."""
  del step
  return key


def _per_step_z_key(key: jax.Array, step: jax.Array) -> jax.Array:
  """A fresh key per step, so a new z ~ N(0, I) at every denoiser call."""
  return jax.random.fold_in(key, step)


# score(logits [batch, length, vocab], key) -> [batch, length]; higher is revealed first.
ORDERS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
  "random": _random_score,
  "top_prob": _top_prob_score,
  "margin": _margin_score,
}
# tokens(logits [batch, length, vocab], key, temperature) -> candidate x_0 [batch, length] int32.
TOKEN_RULES: dict[str, Callable[[jax.Array, jax.Array, float], jax.Array]] = {
  "argmax": _argmax_tokens,
  "sample": _sample_tokens,
}
# z_key(key, step) -> the key that step's z is drawn from.
Z_POLICIES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
  "fixed": _fixed_z_key,
  "per_step": _per_step_z_key,
}


def _choose(registry: dict[str, Any], option: str, name: str) -> Any:
  """registry[name], or a ConfigError naming the option and its valid choices."""
  if name not in registry:
    raise ConfigError(f"unknown {option} {name!r}: choose one of {', '.join(registry)}")
  return registry[name]


def _check_numbers(nfe: int, temperature: float, gumbel_scale: float, latent_dim: int) -> None:
  """Raise a ConfigError for a numeric sampler option out of range."""
  if nfe < 1:
    raise ConfigError(f"nfe must be at least 1, got {nfe}")
  if temperature <= 0:
    raise ConfigError(f"temperature must be positive, got {temperature}")
  if gumbel_scale < 0:
    raise ConfigError(f"gumbel_scale must be non-negative, got {gumbel_scale}")
  if latent_dim < 0:
    raise ConfigError(f"latent_dim must be non-negative, got {latent_dim}")


def _reveal(
  x: jax.Array,
  reveal_step: jax.Array,
  candidates: jax.Array,
  score: jax.Array,
  num_reveal: jax.Array,
  step: jax.Array,
  mask_id: int,
) -> tuple[jax.Array, jax.Array]:
  """Write candidates at the num_reveal highest-scoring masked positions of each row.

  x, reveal_step, candidates, score: [batch, length]; num_reveal: [batch]. The count differs between
  rows, so the top-k is taken through ranks rather than lax.top_k, whose k must be static.
  """
  masked = x == mask_id  # [batch, length]
  # -inf puts every given or already revealed position behind all masked ones.
  score = jnp.where(masked, score, -jnp.inf)
  rank = jnp.argsort(jnp.argsort(-score, axis=-1), axis=-1)  # [batch, length], 0 = highest score
  reveal = masked & (rank < num_reveal[:, None])  # [batch, length]
  return jnp.where(reveal, candidates, x), jnp.where(reveal, step, reveal_step)


def make_sampler(
  denoise_fn: DenoiseFn,
  *,
  nfe: int,
  mask_id: int,
  schedule: Schedule,
  order: str = "random",
  token_rule: str = "sample",
  temperature: float = 1.0,
  gumbel_scale: float = 0.0,
  latent_dim: int = 0,
  z_policy: str = "fixed",
) -> Callable[[Any, jax.Array, jax.Array], SampleResult]:
  """A jitted sampler (params, key, x_init [batch, length] int32) -> SampleResult.

  x_init has mask_id at the positions to generate and given tokens (clues, prompts) elsewhere, which
  are kept. The sampler makes exactly nfe denoiser calls, at t_j = 1 - j/nfe for j = 0..nfe-1, and
  after step j leaves remaining_masked(schedule, m, nfe)[j + 1] positions of a row masked, where m is
  the row's initial number of masks. Raises ConfigError for an unknown order, token_rule or z_policy,
  a number out of range, or (at the first call) nfe > length.
  """
  score_fn = _choose(ORDERS, "order", order)
  token_fn = _choose(TOKEN_RULES, "token_rule", token_rule)
  z_key_fn = _choose(Z_POLICIES, "z_policy", z_policy)
  _check_numbers(nfe, temperature, gumbel_scale, latent_dim)

  @jax.jit
  def sample(params: Any, key: jax.Array, x_init: jax.Array) -> SampleResult:
    batch, length = x_init.shape
    if nfe > length:
      raise ConfigError(f"nfe must be at most the sequence length {length}, got {nfe}")
    x_init = x_init.astype(jnp.int32)
    remaining = remaining_masked(schedule, jnp.sum(x_init == mask_id, axis=-1), nfe)  # [nfe + 1, batch]
    z_key, loop_key = jax.random.split(key)

    def step(j: jax.Array, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
      x, reveal_step = carry
      token_key, order_key, gumbel_key = jax.random.split(jax.random.fold_in(loop_key, j), 3)
      z = jax.random.normal(z_key_fn(z_key, j), (batch, latent_dim)) if latent_dim > 0 else None
      t = jnp.full((batch,), 1.0 - j / nfe, jnp.float32)
      logits = denoise_fn(params, x, t, z)  # [batch, length, vocab]
      candidates = token_fn(logits, token_key, temperature)  # [batch, length]
      score = score_fn(logits, order_key)  # [batch, length]
      if gumbel_scale > 0:
        score = score + gumbel_scale * jax.random.gumbel(gumbel_key, score.shape)
      num_reveal = jnp.sum(x == mask_id, axis=-1) - remaining[j + 1]  # [batch]
      return _reveal(x, reveal_step, candidates, score, num_reveal, j, mask_id)

    tokens, reveal_step = jax.lax.fori_loop(0, nfe, step, (x_init, jnp.full_like(x_init, -1)))
    return SampleResult(tokens=tokens, reveal_step=reveal_step)

  return sample
