"""Masking schedules alpha(t): the probability that a token is still unmasked at time t.

alpha(0) = 1 and alpha(1) = 0, shifted by eps as in MD4 so that w(t) stays finite. The NELBO weight is
w(t) = -alpha'(t) / (1 - alpha(t)) (w = 1/t for the linear schedule).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vmd_jax.errors import ConfigError


class Schedule(NamedTuple):
  """alpha(t), its time derivative and 1 - alpha(t), all elementwise in t. 1 - alpha is written out
  per schedule, so that it keeps its precision where alpha(t) is close to 1 (small t): computed as
  1 - alpha, it is 0 in float32 for cosine below t of about 1.5e-4, and w(t) is then infinite."""

  alpha: Callable[[jax.Array], jax.Array]
  dalpha: Callable[[jax.Array], jax.Array]
  one_minus_alpha: Callable[[jax.Array], jax.Array]


def _linear() -> Schedule:
  return Schedule(alpha=lambda t: 1.0 - t, dalpha=lambda t: -jnp.ones_like(t), one_minus_alpha=lambda t: t)


def _cosine() -> Schedule:
  return Schedule(
    alpha=lambda t: jnp.cos(0.5 * jnp.pi * t),
    dalpha=lambda t: -0.5 * jnp.pi * jnp.sin(0.5 * jnp.pi * t),
    one_minus_alpha=lambda t: 2.0 * jnp.sin(0.25 * jnp.pi * t) ** 2,  # 1 - cos(2a) = 2 sin(a)^2
  )


def _poly(k: float) -> Schedule:
  return Schedule(
    alpha=lambda t: 1.0 - t**k, dalpha=lambda t: -k * t ** (k - 1.0), one_minus_alpha=lambda t: t**k
  )


def get_schedule(name: str, eps: float = 1e-4) -> Schedule:
  """Schedule by name: 'linear', 'cosine' or 'poly<K>' (e.g. 'poly2').

  The result is eps + (1 - eps) * alpha(t): alpha(1) = eps rather than 0, as in MD4, so that w(t) stays
  finite at t = 1. With eps = 0 it is the exact schedule (used by the enumeration tests).
  """
  if name == "linear":
    base = _linear()
  elif name == "cosine":
    base = _cosine()
  elif name.startswith("poly"):
    try:
      k = float(name[4:])
    except ValueError:
      raise ConfigError(f"schedule {name!r}: expected poly<K> with a number K, e.g. poly2") from None
    if k <= 0:
      raise ConfigError(f"schedule {name!r}: K must be positive")
    base = _poly(k)
  else:
    raise ConfigError(f"unknown schedule {name!r}: choose linear, cosine or poly<K>")
  scale = 1.0 - eps
  return Schedule(
    alpha=lambda t: eps + scale * base.alpha(t),
    dalpha=lambda t: scale * base.dalpha(t),
    one_minus_alpha=lambda t: scale * base.one_minus_alpha(t),
  )


def nelbo_weight(schedule: Schedule, t: jax.Array) -> jax.Array:
  """w(t) = -alpha'(t) / (1 - alpha(t)), the weight of each masked token's cross-entropy: finite for
  every t in (0, 1] in float32 (1 - alpha from the schedule's own closed form)."""
  return -schedule.dalpha(t) / schedule.one_minus_alpha(t)


# Which time of a sampler step the denoiser reads: where the step starts (t_j = 1 - j/nfe; continuous-time
# training sees only such times) or where it ends (s_j = 1 - (j+1)/nfe, which tells the denoiser how many
# tokens the step reveals; the stepwise objective can train it).
TIME_INPUTS = ("start", "end")


def step_time(j, nfe, time_input: str = "start"):
  """The time the denoiser reads at step j (0-based) of an nfe-step sampler: 1 - j/nfe ('start') or
  1 - (j+1)/nfe ('end'); j and nfe may be arrays (elementwise)."""
  return 1.0 - (j + (1.0 if time_input == "end" else 0.0)) / nfe


def masked_count(schedule: Schedule, num_masked: jax.Array, s: jax.Array) -> jax.Array:
  """How many of num_masked tokens (masked at t = 1) the sampler leaves masked at time s: the expected
  share (1 - alpha(s)) / (1 - alpha(1)), exactly 1 at s = 1 and 0 at s = 0, times num_masked, rounded.
  Elementwise over broadcast num_masked and s; int32."""
  share = (1.0 - schedule.alpha(s)) / (1.0 - schedule.alpha(jnp.ones(())))
  share = jnp.where(s >= 1.0, 1.0, jnp.where(s <= 0.0, 0.0, share))
  # Round half up with a margin, so that jit and eager agree where float error lands near .5.
  return jnp.floor(share * num_masked + 0.5 + 1e-5).astype(jnp.int32)


def remaining_masked(schedule: Schedule, num_masked: jax.Array, nfe: int) -> jax.Array:
  """How many of num_masked tokens are still masked after each of nfe sampling steps.

  Step j (1..nfe) goes from t = 1 - (j-1)/nfe to s = 1 - j/nfe, and leaves `masked_count` tokens
  masked, so that every step reveals a fixed count.
  num_masked: [batch] int. Returns [nfe + 1, batch] int, from num_masked down to 0.
  """
  s = 1.0 - jnp.arange(nfe + 1) / nfe  # [nfe + 1], from 1 to 0
  return masked_count(schedule, num_masked[None, :], s[:, None])
