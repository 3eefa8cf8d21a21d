"""Training objectives (mdm, vmd, global) and the valid likelihood bounds reported at evaluation.

Notation of the design note: x0 clean tokens [batch, length], alpha(t) the masking schedule, w(t) =
-alpha'(t) / (1 - alpha(t)), M_t the masked positions, q(z | x0, M_t) the posterior, p(z) = N(0, I).

Training objectives (the loss that is optimised; see design note §2-3):
  mdm:      w(t) * sum_{i in M_t} -log p(x0_i | x_t)
  vmd:      w(t) * E_q[sum_{i in M_t} -log p(x0_i | x_t, z)] + beta * [w(t)] * KL(q(z | x0, M_t) || p(z))
            (the bracketed w(t): objective.kl_time_weight; the KL is then not paid where nothing is masked)
  global:   w(t) * E_q[sum_{i in M_t} -log p(x0_i | x_t, z)] + beta * KL(q(z | x0) || p(z))
  stepwise: T * (E_r[sum_{i in U} -log p(x0_i | x_t, z)] + beta * KL(r(z | x0 outside M_s, M_t) || p(z)))
            for a step j of a T-step sampler revealing U = M_t minus M_s: the bound of that sampler,
            trained (with objective.z_policy scheduled, r = q(z | x0) shared by the parallel steps;
            with parallel_only, those share it and the others have no latent: z = 0, no KL)
The vmd loss is NOT a bound on the NLL (design note §3); the bounds below are, and only they are
reported as likelihoods.

Block diffusion (model.block_size = k): each block b of k tokens has its own t_b, M_t within the block,
z_b and posterior q(z_b | ...); every term above is summed over the blocks, the denoiser of block b
seeing the clean blocks before it. With one block (k = 0 or L) this is exactly the non-block objective.

Every loss and bound here is in nats per sequence unless its name says otherwise.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vmd_jax import networks
from vmd_jax.errors import ConfigError
from vmd_jax.schedules import Schedule, get_schedule, masked_count, nelbo_weight, remaining_masked, step_time


class ObjectiveSettings(NamedTuple):
  """The options of an objective that a config sets (see configs/ for their meaning)."""

  name: str
  schedule: Schedule
  antithetic: bool = True
  beta: float = 1.0
  kl_warmup_steps: int = 0
  kl_hold_steps: int = 0  # steps at beta = 0 before the warm-up starts
  free_bits: float = 0.0
  kl_time_weight: bool = False
  nfes: tuple[int, ...] = ()  # stepwise: the sampler step counts (all blocks') it trains the bound of
  z_policy: str = "per_step"  # stepwise: the sampler's z policy, one of STEPWISE_Z_POLICIES
  # stepwise: score every masked token where the step's z does not depend on what it reveals
  rao_blackwell: bool = False
  # stepwise: how (T, j) is drawn: T uniform from nfes ('nfe'), or a step uniform among all the steps
  # of the T's ('step': T in proportion to T); the expected loss is the same (STEP_DRAWS)
  step_draw: str = "nfe"


def check_config(objective_config) -> None:
  """Raise ConfigError, naming the field, for objective options no run could use."""
  o = objective_config
  if o.name not in OBJECTIVES:
    raise ConfigError(f"objective.name={o.name!r}: choose one of {sorted(OBJECTIVES)}")
  get_schedule(o.schedule, o.eps)
  if not 0.0 <= o.eps < 1.0:
    raise ConfigError(f"objective.eps={o.eps}: must be in [0, 1)")
  if o.beta < 0 or o.free_bits < 0 or o.kl_warmup_steps < 0 or o.kl_hold_steps < 0:
    raise ConfigError("objective.beta, free_bits, kl_warmup_steps and kl_hold_steps must be >= 0")
  if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in o.nfes):
    raise ConfigError(f"objective.nfes={tuple(o.nfes)}: each must be a positive integer")
  if o.step_draw not in STEP_DRAWS:
    raise ConfigError(f"objective.step_draw={o.step_draw!r}: choose one of {list(STEP_DRAWS)}")
  if o.z_policy not in STEPWISE_Z_POLICIES:
    raise ConfigError(f"objective.z_policy={o.z_policy!r}: choose one of {list(STEPWISE_Z_POLICIES)}")


def settings_from_config(objective_config) -> ObjectiveSettings:
  """ObjectiveSettings from a config's `objective` section."""
  o = objective_config
  return ObjectiveSettings(
    name=o.name,
    schedule=get_schedule(o.schedule, o.eps),
    antithetic=o.antithetic,
    beta=o.beta,
    kl_warmup_steps=o.kl_warmup_steps,
    kl_hold_steps=o.kl_hold_steps,
    free_bits=o.free_bits,
    kl_time_weight=o.kl_time_weight,
    nfes=tuple(o.nfes),
    z_policy=o.z_policy,
    rao_blackwell=o.rao_blackwell,
    step_draw=o.step_draw,
  )


def sample_times(key: jax.Array, batch: int, antithetic: bool) -> jax.Array:
  """t in (0, 1] for each sequence; antithetic: one uniform shift of an evenly spaced grid. [batch]."""
  if antithetic:
    u = jnp.mod(jax.random.uniform(key, ()) + jnp.arange(batch) / batch, 1.0)
  else:
    u = jax.random.uniform(key, (batch,))
  return 1.0 - u  # 1 - u avoids t = 0, where w(t) is infinite


def mask_tokens(key: jax.Array, x0: jax.Array, t: jax.Array, schedule: Schedule, given=None):
  """Forward process: each token independently masked with prob 1 - alpha(t). Returns M_t [batch, length].

  t is [batch] (one time per sequence) or [batch, blocks] (one per block of length / blocks tokens).
  Positions in `given` (clues, prompts) are never masked.
  """
  t = t[:, None] if t.ndim == 1 else t
  t = jnp.repeat(t, x0.shape[1] // t.shape[1], axis=1)  # [batch, length]
  masked = jax.random.uniform(key, x0.shape) < (1.0 - schedule.alpha(t))
  if given is not None:
    masked = masked & ~given
  return masked


def masked_cross_entropy(logits: jax.Array, x0: jax.Array, masked: jax.Array, num_blocks: int = 1):
  """sum_{i in M} -log p(x0_i | .) per sequence [batch], or per block [batch, num_blocks] if > 1."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  token_ll = jnp.take_along_axis(log_probs, x0[..., None], axis=-1)[..., 0]  # [batch, length]
  nll = -jnp.where(masked, token_ll, 0.0)
  if num_blocks == 1:
    return jnp.sum(nll, axis=-1)
  return jnp.sum(nll.reshape(nll.shape[0], num_blocks, -1), axis=-1)


def weighted_nll(schedule: Schedule, t: jax.Array, logits, x0, masked) -> jax.Array:
  """w(t) * sum_{i in M_t} -log p(x0_i | x_t): [batch], summed over blocks when t is [batch, blocks].
  Zero where nothing is masked, even where w is infinite in floating point (t -> 0), since no token is
  then paid for."""
  t = t[:, None] if t.ndim == 1 else t  # [batch, blocks]
  ce = masked_cross_entropy(logits, x0, masked, t.shape[1]).reshape(t.shape)
  any_masked = jnp.any(masked.reshape(t.shape + (-1,)), axis=-1)
  return jnp.sum(jnp.where(any_masked, nelbo_weight(schedule, t) * ce, 0.0), axis=-1)


def _time_weighted(schedule: Schedule, t: jax.Array, masked: jax.Array, term: jax.Array) -> jax.Array:
  """w(t) * term per block [batch, blocks], and 0 for a block with nothing masked: at such a t the
  sampler reveals nothing, so nothing is paid. This also keeps E_t[w(t) * term] finite under the
  linear schedule (w = 1/t, but P(anything masked) ~ L t as t -> 0)."""
  any_masked = jnp.any(masked.reshape(term.shape + (-1,)), axis=-1)
  return jnp.where(any_masked, nelbo_weight(schedule, t) * term, 0.0)


def kl_weight(settings: ObjectiveSettings, step) -> jax.Array:
  """beta: 0 for the first kl_hold_steps, then linearly warmed up from 0 over kl_warmup_steps."""
  if settings.kl_warmup_steps <= 0 and settings.kl_hold_steps <= 0:
    return jnp.asarray(settings.beta, jnp.float32)
  ramp = jnp.asarray(step, jnp.float32) - settings.kl_hold_steps
  if settings.kl_warmup_steps <= 0:
    return settings.beta * (ramp >= 0).astype(jnp.float32)
  return settings.beta * jnp.clip(ramp / settings.kl_warmup_steps, 0.0, 1.0)


def free_bits_kl(kl_per_dim: jax.Array, free_bits: float) -> jax.Array:
  """KL summed over latent dimensions, each dimension's term floored at free_bits nats: [batch]."""
  if free_bits > 0:
    kl_per_dim = jnp.maximum(kl_per_dim, free_bits)
  return jnp.sum(kl_per_dim, axis=-1)


def num_blocks(model, length: int) -> int:
  """Diffusion blocks of a sequence of `length` tokens under the model (1 without block diffusion)."""
  return networks.block_layout(length, model.block_size)[0]


def _denoise(model, params, x_t, t, z, key, train, context):
  rngs = {"dropout": key} if train else None
  return model.apply(params, x_t, t, z, train, context, method="denoise", rngs=rngs)


def _corrupt(model, batch, key, settings):
  """Draw (t, M_t, x_t) for a batch: t [batch] ([batch, blocks] for several blocks), masked and x_t
  [batch, length]. Times are antithetic across all (sequence, block) pairs."""
  x0 = batch["tokens"]
  t_key, m_key = jax.random.split(key)
  blocks = num_blocks(model, x0.shape[1])
  t = sample_times(t_key, x0.shape[0] * blocks, settings.antithetic)
  t = t if blocks == 1 else t.reshape(x0.shape[0], blocks)
  masked = mask_tokens(m_key, x0, t, settings.schedule, batch.get("given"))
  return t, masked, jnp.where(masked, model.vocab_size, x0)


def mdm_loss(model, params, batch, key, settings, step, train=True):
  """Masked diffusion NELBO estimate w(t) * sum_{i in M_t} CE_i: [batch] and named terms."""
  del step
  corrupt_key, drop_key = jax.random.split(key)
  t, masked, x_t = _corrupt(model, batch, corrupt_key, settings)
  logits = _denoise(model, params, x_t, t, None, drop_key, train, batch["tokens"])
  recon = weighted_nll(settings.schedule, t, logits, batch["tokens"], masked)
  return recon, {"recon": recon}


def _latent_loss(model, params, batch, key, settings, step, train, encoder_sees_mask: bool):
  corrupt_key, z_key, drop_key = jax.random.split(key, 3)
  x0 = batch["tokens"]
  t, masked, x_t = _corrupt(model, batch, corrupt_key, settings)
  enc_mask = masked if encoder_sees_mask else jnp.ones_like(masked)
  posterior = model.apply(params, x0, enc_mask, train, method="posterior")
  z = networks.sample_gaussian(posterior, z_key)
  logits = _denoise(model, params, x_t, t, z, drop_key, train, x0)
  recon = weighted_nll(settings.schedule, t, logits, x0, masked)
  kl_dims = networks.per_block(networks.kl_to_prior(posterior), 2)  # [batch, blocks, latent_dim]
  kl_term = free_bits_kl(kl_dims, settings.free_bits)  # [batch, blocks]
  if encoder_sees_mask and settings.kl_time_weight:
    kl_term = _time_weighted(settings.schedule, networks.per_block(t, 1), masked, kl_term)
  loss = recon + kl_weight(settings, step) * jnp.sum(kl_term, axis=-1)
  return loss, {"recon": recon, "kl": jnp.sum(kl_dims, axis=(1, 2))}


def vmd_loss(model, params, batch, key, settings, step, train=True):
  """The paper's objective: posterior q(z | x0, M_t) per sampled t, KL optionally weighted by w(t)."""
  return _latent_loss(model, params, batch, key, settings, step, train, encoder_sees_mask=True)


def global_loss(model, params, batch, key, settings, step, train=True):
  """The fixed-z bound trained directly: q(z | x0) (encoder sees every position masked), one KL."""
  return _latent_loss(model, params, batch, key, settings, step, train, encoder_sees_mask=False)


def reveal_ranks(key: jax.Array, batch: int, blocks: int, size: int, given=None) -> jax.Array:
  """rank[b, k, i]: the place of token i of block k in a uniformly random reveal order of that block,
  the given positions (clues; [batch, length] bool or None) placed last: [batch, blocks, size] int32.
  The sampler's step j reveals the tokens whose rank lies in [masked after j, masked before j)."""
  scores = jax.random.uniform(key, (batch, blocks, size))
  if given is not None:
    scores = scores + 2.0 * given.reshape(batch, blocks, size)
  return jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)


# The samplers whose bound the stepwise objective trains: a fresh z at every step, the fixed z at the
# steps that reveal several tokens and a fresh one at the others, or the fixed z there and none (z = 0)
# at the others (samplers.Z_POLICIES).
STEPWISE_Z_POLICIES = ("per_step", "scheduled", "parallel_only")
# How the stepwise objective draws a step: T uniform from objective.nfes and then j (the loss weighs
# the step by T), or one step uniform among all the steps of the T's (T in proportion to T, every step
# weighed alike by the mean T). Both are unbiased for the mean over nfes of the T-step bounds.
STEP_DRAWS = ("nfe", "step")


class SamplerStep(NamedTuple):
  """One step of a T-step random-order sampler per (sequence, block): T, the loss weight of its terms
  (`_random_steps`), the time the denoiser reads
  (t = 1 - j/T, or s = 1 - (j+1)/T under the model's time_input 'end'), whether the step reveals more
  than one token, and how many of the T steps do ([batch, blocks]); the masks before (M_t) and after
  (M_s) the step, [batch, length] bool."""

  steps: jax.Array
  weight: jax.Array
  time: jax.Array
  parallel: jax.Array
  num_parallel: jax.Array
  masked_t: jax.Array
  masked_s: jax.Array


def _random_steps(model, x0, key, settings, given) -> SamplerStep:
  """One step of a random-order sampler per (sequence, block), drawn as the stepwise objective trains
  it: T from settings.nfes (divided by the blocks; uniform, or in proportion to T under step_draw
  'step'), j uniform in 0..T-1, a uniform order. `weight` is what the step's terms are multiplied by
  for an unbiased estimate of the mean over nfes of the T-step bounds: T, or the mean T."""
  batch, length = x0.shape
  blocks, size = networks.block_layout(length, model.block_size)
  if not settings.nfes:
    raise ConfigError(
      "objective.nfes is empty: the stepwise objective needs the sampler's step counts (set it, or let"
      " vmd_jax.tasks.fit_to_data fill it in from eval.nfes, as api.train does)"
    )
  per_block = jnp.asarray([n // blocks for n in settings.nfes], jnp.float32)
  nfe_key, step_key, order_key = jax.random.split(key, 3)
  if settings.step_draw == "step":
    choice = jax.random.categorical(nfe_key, jnp.log(per_block), shape=(batch, blocks))
  else:
    choice = jax.random.randint(nfe_key, (batch, blocks), 0, len(settings.nfes))
  steps = per_block[choice]
  weight = jnp.full_like(steps, jnp.mean(per_block)) if settings.step_draw == "step" else steps
  j = jnp.floor(jax.random.uniform(step_key, (batch, blocks)) * steps)  # [batch, blocks]
  free = jnp.full((batch, blocks), size, jnp.int32)
  if given is not None:
    free = free - jnp.sum(given.reshape(batch, blocks, size), axis=-1, dtype=jnp.int32)

  def count(jj):  # masks left before step jj of T (T and jj broadcast)
    return masked_count(settings.schedule, free[..., None], 1.0 - jj / steps[..., None])

  every = jnp.arange(max(settings.nfes) // blocks, dtype=jnp.float32)  # [steps of the largest T]
  parallel_steps = (count(every) - count(every + 1) > 1) & (every < steps[..., None])
  before, after = count(j[..., None]), count(j[..., None] + 1)  # [batch, blocks, 1]
  rank = reveal_ranks(order_key, batch, blocks, size, given)
  return SamplerStep(
    steps=steps,
    weight=weight,
    time=step_time(j, steps, model.denoiser.time_input),
    parallel=(before - after > 1)[..., 0],
    num_parallel=jnp.sum(parallel_steps, axis=-1),
    masked_t=(rank < before).reshape(batch, length),
    masked_s=(rank < after).reshape(batch, length),
  )


def stepwise_loss(model, params, batch, key, settings, step, train=True):
  """The bound of the sampler one runs, trained one step at a time (design note §7): for T from
  objective.nfes and a step j of the T-step random-order sampler, which reveals U = M_t minus M_s
  from x_t at t = 1 - j/T, T times the step's share of the bound:
  - a step with a fresh z (every step under z_policy per_step; the steps that reveal one token under
    scheduled): E_r[sum_{i in U} -log p(x0_i | x_t, z)] + beta * KL(r || p(z)), r = r(z | x0 outside
    M_s, M_t) an encoder that sees the tokens visible after the step, not those still masked;
  - a step with the fixed z (scheduled and parallel_only: the P steps of T that reveal several tokens):
    E_q[sum_{i in U} -log p(x0_i | x_t, z)] + beta * KL(q(z | x0) || p(z)) / P, q the encoder at the
    full mask, whose one KL the P steps share;
  - a step without a latent (parallel_only: the steps that reveal one token): sum_{i in U} -log p(x0_i
    | x_t, z = 0), the MDM's term, with no KL.
  With beta = 1 and no free bits it is an unbiased estimate of the T-step bound of that sampler
  (`trajectory_log_weights` with proposal `step`), averaged over the T in objective.nfes; every block
  takes its own T and j.

  settings.rao_blackwell: where the step's z does not depend on which tokens the step reveals (the
  shared z, and z = 0), the revealed set U is a uniform draw of k of the m tokens of M_t given z, so
  E[sum_{i in U} CE_i] = k/m sum_{i in M_t} CE_i: every masked token is scored, weighted by k/m. The
  expectation is the same, the variance lower, and each step trains the denoiser on all m tokens (as
  the MDM loss does). A fresh z's r sees the tokens visible after the step, so its steps keep U.
  """
  step_key, z_key, drop_key = jax.random.split(key, 3)
  x0 = batch["tokens"]
  s = _random_steps(model, x0, step_key, settings, batch.get("given"))
  blocks = s.steps.shape[1]
  shares = settings.z_policy in ("scheduled", "parallel_only")
  fixed = s.parallel if shares else jnp.zeros_like(s.parallel)  # [batch, blocks]
  used = fixed if settings.z_policy == "parallel_only" else jnp.ones_like(fixed)  # a step that has a z
  fixed_tokens = jnp.repeat(fixed, x0.shape[1] // blocks, axis=1)  # [batch, length]
  # the fixed z's q is the encoder at the full mask that sees every token; a fresh z's r the step's
  encoder_masked = s.masked_t | fixed_tokens
  encoder_hidden = s.masked_s & ~fixed_tokens
  posterior, z = None, None  # without a latent: the bound of the MDM sampler, no z and no KL
  if model.latent_dim > 0:
    posterior = model.apply(params, x0, encoder_masked, train, encoder_hidden, method="posterior")
    z = networks.sample_gaussian(posterior, z_key)  # [batch, (blocks,) latent_dim]
    z = jnp.where(used.reshape(z.shape[:-1] + (1,)), z, 0.0)
  x_t = jnp.where(s.masked_t, model.vocab_size, x0)
  logits = _denoise(model, params, x_t, s.time if blocks > 1 else s.time[:, 0], z, drop_key, train, x0)
  revealed = s.masked_t & ~s.masked_s
  recon = masked_cross_entropy(logits, x0, revealed, blocks).reshape(s.steps.shape)
  if settings.rao_blackwell and shares:  # [batch, blocks]: the steps whose z ignores the order
    order_free = fixed | ~used  # the shared z, or z = 0
    every = masked_cross_entropy(logits, x0, s.masked_t, blocks).reshape(s.steps.shape)

    def per_block_count(mask):
      return jnp.sum(mask.reshape(*s.steps.shape, -1), axis=-1)

    share = per_block_count(revealed) / jnp.maximum(per_block_count(s.masked_t), 1)
    recon = jnp.where(order_free, share * every, recon)
  terms = {"recon": jnp.sum(s.weight * recon, axis=-1)}
  if posterior is None:
    return terms["recon"], terms
  kl_dims = networks.per_block(networks.kl_to_prior(posterior), 2)  # [batch, blocks, latent_dim]
  kl_share = jnp.where(fixed, 1.0 / jnp.maximum(s.num_parallel, 1), 1.0) * used  # [batch, blocks]
  kl_term = kl_share * free_bits_kl(kl_dims, settings.free_bits)
  loss = jnp.sum(s.weight * (recon + kl_weight(settings, step) * kl_term), axis=-1)
  terms["kl"] = jnp.sum(s.weight * kl_share * jnp.sum(kl_dims, -1), -1)
  return loss, terms


OBJECTIVES: dict[str, Callable[..., Any]] = {
  "mdm": mdm_loss,
  "vmd": vmd_loss,
  "global": global_loss,
  "stepwise": stepwise_loss,
}


# objective -> whether its model has a latent: True, False, or None for either (stepwise without a
# latent trains the bound of the MDM sampler it runs; at one step per block of one token, an AR model)
LATENT = {"mdm": False, "vmd": True, "global": True, "stepwise": None}


def needs_latent(name: str) -> bool | None:
  """Whether the objective trains a latent-variable model (True), a model without one (False), or
  either (None)."""
  return LATENT[name]


def loss_fn(model, params, batch, key, settings: ObjectiveSettings, step, train: bool = True):
  """Scalar training loss in nats per token, and metrics averaged over the batch. train=False turns
  dropout off (the loss on test data).

  The loss is the optimised objective, labelled `loss`; for mdm (and global with beta = 1 and no free
  bits) it is also a bound estimate, but only the evaluation bounds are reported as likelihoods.
  """
  if settings.name not in OBJECTIVES:
    raise ConfigError(f"unknown objective {settings.name!r}: choose one of {sorted(OBJECTIVES)}")
  per_seq, terms = OBJECTIVES[settings.name](model, params, batch, key, settings, step, train)
  length = batch["tokens"].shape[1]
  metrics = {name: jnp.mean(value) / length for name, value in terms.items()}
  loss = jnp.mean(per_seq) / length
  metrics["loss"] = loss
  if model.latent_dim > 0:
    metrics["beta"] = kl_weight(settings, step)
  return loss, metrics


# ----------------------------------------------------------------------------------------------------
# Valid upper bounds on the NLL (design note §3). Each returns per-sequence estimates in nats.


def global_posterior(model, params, x0):
  """q(z | x0) for the fixed-z model: the encoder with every position masked."""
  return model.apply(params, x0, jnp.ones(x0.shape, bool), method="posterior")


def latent_signal(model, params, x0, given=None) -> dict[str, jax.Array]:
  """How much q(z | x0) tells the examples of x0 apart, with the encoder seeing what a sampler fills in
  as masked (every position, or all but `given`: clues, prompts): the posterior of the z that a
  sampler's parallel steps share. Returns scalars:
  - z_share: the share of the posterior mean's second moment that lies between examples (its variance
    over the batch, over its mean square). Near 0, z is the same for every example and carries
    nothing about it, whatever the KL says;
  - z_std: the posterior's mean standard deviation;
  - z_kl: the mean KL to the prior in nats per example.
  """
  masked = jnp.ones(x0.shape, bool) if given is None else ~given
  posterior = model.apply(params, x0, masked, method="posterior")
  mean = posterior.mean
  share = jnp.mean(jnp.var(mean, axis=0)) / jnp.maximum(jnp.mean(mean**2), 1e-12)
  kl = jnp.sum(networks.kl_to_prior(posterior).reshape(x0.shape[0], -1), axis=-1)
  return {"z_share": share, "z_std": jnp.mean(jnp.exp(posterior.log_std)), "z_kl": jnp.mean(kl)}


PROPOSALS = ("posterior", "prior", "step")


def bound_proposal(model, params, x0, proposal: str = "posterior") -> networks.GaussianPosterior:
  """The distribution q(z | x0) that a bound draws z from: the encoder's `global_posterior`, or the
  prior N(0, I) itself (then the KL is zero and the bound is that of the sampler's own z ~ p(z)). Any
  q gives a valid bound; they differ in tightness."""
  if proposal in ("posterior", "step"):  # a one-step sampler's step sees every token: the same r
    return global_posterior(model, params, x0)
  if proposal == "prior":  # the encoder's output shape, without running the encoder
    blocks = (num_blocks(model, x0.shape[1]),) if model.block_size else ()
    zeros = jnp.zeros((x0.shape[0], *blocks, model.latent_dim))
    return networks.GaussianPosterior(mean=zeros, log_std=zeros)
  raise ConfigError(f"unknown bound proposal {proposal!r}: choose one of {', '.join(PROPOSALS)}")


def nelbo_draws(
  model, params, x0, key, schedule: Schedule, num_draws: int, proposal: str = "posterior"
) -> jax.Array:
  """Continuous-time bound (a): w(t) sum_{i in M_t} -log p(x0_i | x_t, z) + KL(q(z | x0) || p(z)).

  One unbiased draw of (z, t, M_t) per row of the output: [num_draws, batch] nats per sequence. For an
  MDM (latent_dim = 0) there is no z and no KL. Times are antithetic within each draw's batch. For a
  block model every block has its own t, M_t and z_b ~ q(z_b | x0_b), and the terms add up over blocks.
  proposal picks q (`bound_proposal`).
  """
  settings = ObjectiveSettings(name="mdm", schedule=schedule)
  if model.latent_dim > 0:
    posterior = bound_proposal(model, params, x0, proposal)
    kl = jnp.sum(networks.kl_to_prior(posterior).reshape(x0.shape[0], -1), axis=-1)

  def one_draw(key):
    corrupt_key, z_key = jax.random.split(key)
    t, masked, x_t = _corrupt(model, {"tokens": x0}, corrupt_key, settings)
    z = None
    if model.latent_dim > 0:
      z = networks.sample_gaussian(posterior, z_key)
    logits = _denoise(model, params, x_t, t, z, None, False, x0)
    recon = weighted_nll(schedule, t, logits, x0, masked)
    return recon + kl if model.latent_dim > 0 else recon

  return jax.lax.map(one_draw, jax.random.split(key, num_draws))


Z_POLICIES = ("fixed", "per_step", "scheduled", "parallel_only")


def _step_proposal(model, params, x0, masked, still_masked, proposal: str) -> networks.GaussianPosterior:
  """r(z | .) of one step of the per-step bound, which reveals masked & ~still_masked: the training
  posterior q(z | x0, M_t) with the step's masked set M_t (`posterior`), the prior N(0, I) (`prior`),
  or the stepwise objective's encoder, blind to the tokens still masked after the step (`step`)."""
  if proposal == "posterior":
    return model.apply(params, x0, masked, method="posterior")
  if proposal == "step":
    return model.apply(params, x0, masked, False, still_masked, method="posterior")
  return bound_proposal(model, params, x0, "prior")


def _revealed_log_lik(model, params, x_t, t, z, x0, revealed, blocks, temperature):
  """sum_{i revealed} log p(x0_i | x_t, z) under softmax(logits / temperature): [batch, blocks]."""
  logits = _denoise(model, params, x_t, t, z, None, False, x0) / temperature
  return -masked_cross_entropy(logits, x0, revealed, blocks).reshape(x0.shape[0], blocks)


def trajectory_log_weights(
  model,
  params,
  x0,
  key,
  schedule: Schedule,
  nfe: int,
  per_block: bool = False,
  proposal: str = "posterior",
  z_policy: str = "fixed",
  temperature: float = 1.0,
  step_draws: int = 1,
) -> jax.Array:
  """log w for one random reveal path per block of the nfe-step random-order sampler, E[w] = p(x0).

  The path is that of `samplers.make_sampler` with order 'random' and sampled token values at
  `temperature`: a uniformly random order, cut into the per-step counts of `remaining_masked`, step j
  at t_j = 1 - j/nfe (the denoiser reads t_j, or t_{j+1} under the model's time_input 'end'). Since
  the path's distribution does not depend on x0, it cancels from the weight.
  - z_policy 'fixed' (one z per sequence, or per block): z ~ q(z | x0) and
    log w = sum_steps sum_{i revealed} log p(x0_i | x_t, z) + log p(z) - log q(z | x0).
  - z_policy 'per_step' (a fresh z ~ N(0, I) at every step): at each step, step_draws draws
    z_k ~ r(z | x0, M_{t_j}) and log w adds log (1/K sum_k p(x0_U | x_t, z_k) p(z_k) / r(z_k)), U the
    step's revealed set. For every K, exp of it is unbiased for the step's p(x0_U | x_t), so -log w is
    a valid bound (the per-step bound of the design note, one KL per step, at K = 1).
  - z_policy 'scheduled' (the fixed z at steps that reveal several tokens, a fresh one at the others,
    as `samplers` draws them): the per-step terms at the steps that reveal one token, and for the
    others step_draws draws z_k ~ q(z | x0), each weighted by p(z_k) / q(z_k) times the likelihood
    of every such step given z_k, averaged at the end (nothing where no step uses z). The factors
    are independent and each unbiased for its part, so -log w is again a valid bound.
  - z_policy 'parallel_only' (as scheduled at the steps that reveal several tokens, z = 0 at the
    others): those steps add their exact log-likelihood given z = 0.
  proposal picks q or r: `posterior` (fixed: the encoder at the full mask; per step: the training
  posterior at the step's mask), `prior`, or `step` (per step: the stepwise objective's encoder, which
  sees the tokens the step reveals and not those it leaves masked; z fixed: as `posterior`). Either
  way E[w] = p(x0) and -E[log w] >= -log p(x0): the
  finite-step bound (b) of the design note for that sampler; with nfe = the block's length (one
  token a step) it is the any-order form. For a block model, nfe counts the steps of each block,
  every block follows its own path with its own z_b against the clean blocks before it, and all
  blocks advance together in one denoiser call per step. Returns the sequence's log w [batch], or with
  per_block each block's [batch, blocks] (they add up to the sequence's).
  """
  if z_policy not in Z_POLICIES:
    raise ConfigError(f"z_policy={z_policy!r}: choose one of {', '.join(Z_POLICIES)}")
  if step_draws < 1 or (step_draws > 1 and z_policy == "fixed"):
    raise ConfigError(
      f"step_draws={step_draws}: must be 1 for z fixed (use iwae_bound over paths), >= 1 else"
    )
  batch, length = x0.shape
  blocks, size = networks.block_layout(length, model.block_size)
  order_key, z_key = jax.random.split(key)
  log_w, z = jnp.zeros((batch, blocks)), None
  latent = model.latent_dim > 0
  counts = remaining_masked(schedule, jnp.full((batch,), size), nfe)  # [nfe + 1, batch], alike for every row
  parallel = counts[:-1, 0] - counts[1:, 0] > 1  # [nfe]: the steps that reveal several tokens of a block
  # the shared z (z_policy fixed, or the parallel steps of scheduled): K draws from q, whose weights
  # accumulate over the steps that use it and are averaged at the end (K = 1 for fixed)
  shared = jnp.zeros((1, batch, blocks))
  draws_shared = step_draws if z_policy in ("scheduled", "parallel_only") else 1
  if latent and z_policy != "per_step":
    posterior = bound_proposal(model, params, x0, proposal)
    keys = (
      z_key[None] if draws_shared == 1 else jax.random.split(jax.random.fold_in(z_key, nfe), draws_shared)
    )
    z = jax.vmap(lambda k: networks.sample_gaussian(posterior, k))(keys)  # [K, batch, (blocks,) d]

    def weight(z_k):  # log p(z_k) - log q(z_k | x0)
      return networks.prior_log_prob(z_k) - networks.gaussian_log_prob(posterior, z_k)

    shared = jax.vmap(weight)(z)
    shared = shared.reshape(draws_shared, batch, blocks)
    if z_policy != "fixed":  # a z that no step uses is not paid for
      shared = jnp.where(jnp.any(parallel), shared, 0.0)
  rank = reveal_ranks(order_key, batch, blocks, size)
  still_masked = counts[:, :, None, None]

  def step(j, carry):
    log_w, shared = carry  # [batch, blocks] of the fresh z's and the unlatent terms; [K, batch, blocks]
    masked = rank < still_masked[j]  # the first `still_masked` tokens of each block's order
    revealed = (masked & ~(rank < still_masked[j + 1])).reshape(batch, length)
    masked = masked.reshape(batch, length)
    t = jnp.full((batch, blocks) if blocks > 1 else (batch,), step_time(j, nfe, model.denoiser.time_input))
    x_t = jnp.where(masked, model.vocab_size, x0)

    def lik(z_k):
      return _revealed_log_lik(model, params, x_t, t, z_k, x0, revealed, blocks, temperature)

    def with_shared_z():
      return log_w, shared + jax.vmap(lik)(z)

    def with_fresh_z():
      r = _step_proposal(model, params, x0, masked, masked & ~revealed, proposal)

      def one_draw(k):
        z_k = networks.sample_gaussian(r, k)
        correction = networks.prior_log_prob(z_k) - networks.gaussian_log_prob(r, z_k)
        return lik(z_k) + correction.reshape(batch, blocks)

      draws = jax.vmap(one_draw)(jax.random.split(jax.random.fold_in(z_key, j), step_draws))
      return log_w + jax.nn.logsumexp(draws, axis=0) - math.log(step_draws), shared

    def without_z():
      return log_w + lik(jnp.zeros_like(z[0])), shared

    if not latent:
      return log_w + lik(None), shared
    if z_policy == "fixed":
      return with_shared_z()
    if z_policy == "per_step":
      return with_fresh_z()
    return jax.lax.cond(parallel[j], with_shared_z, with_fresh_z if z_policy == "scheduled" else without_z)

  log_w, shared = jax.lax.fori_loop(0, nfe, step, (jnp.zeros((batch, blocks)), shared))
  log_w = log_w + jax.nn.logsumexp(shared, axis=0) - math.log(shared.shape[0])
  return log_w if per_block else jnp.sum(log_w, axis=-1)


def iwae_bound(log_weights: jax.Array) -> jax.Array:
  """-log (1/K sum_k exp(log_w_k)) from [K, batch, ...] log-weights: [batch, ...]. Valid for any K >= 1.

  For a block model the weights are per block ([K, batch, blocks]): each block's conditional
  likelihood p(x0_b | x0_<b) is bounded separately and the bounds add up over blocks.
  """
  k = log_weights.shape[0]
  return -(jax.nn.logsumexp(log_weights, axis=0) - math.log(k))
