"""Evaluation shared by every task: samples, valid likelihood bounds and the training loss on test data.

Every likelihood figure here is a valid upper bound on the model's NLL (design note §3), in bits per
token, with its standard error across test sequences. The training objective is reported separately
as `loss`. What each task adds (accuracy, KL, puzzles solved, text samples) lives in vmd_jax/tasks/.
"""

import functools
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vmd_jax import model as model_lib
from vmd_jax import objectives, samplers
from vmd_jax.errors import ConfigError
from vmd_jax.schedules import get_schedule

LN2 = math.log(2.0)


def check_config(eval_config, has_latent: bool) -> None:
  """Raise ConfigError, naming the field, for eval options no evaluation could use. The NFEs are
  checked against the data's length once it is known (`tasks.fit_to_data`); empty, they follow it."""
  e = eval_config
  samplers.SamplerOptions.from_config(e, has_latent)
  if e.bound_proposal not in objectives.PROPOSALS:
    raise ConfigError(f"eval.bound_proposal={e.bound_proposal!r}: choose one of {list(objectives.PROPOSALS)}")
  for name in ("num_samples", "batch_size", "bound_examples", "bound_draws", "step_draws"):
    if e[name] <= 0:
      raise ConfigError(f"eval.{name}={e[name]}: must be positive")
  if e.iwae_k < 0:
    raise ConfigError(f"eval.iwae_k={e.iwae_k}: must be >= 0")


def sampler_options(config, model) -> samplers.SamplerOptions:
  """The SamplerOptions of config.eval for this model (token_rule 'auto' resolved by its latent)."""
  return samplers.SamplerOptions.from_config(config.eval, model.latent_dim > 0)


def sampler(model, config, nfe: int, length: int | None = None, **changes):
  """The jitted nfe-step sampler (params, key, x_init) -> SampleResult that config.eval describes, with
  any sampler option replaced by `changes` (e.g. order='margin'); the block sampler for a block model
  with several blocks in `length` tokens."""
  options = sampler_options(config, model).replace(**changes)
  schedule = get_schedule(config.objective.schedule, config.objective.eps)
  return model_lib.sampler(model, schedule, options, nfe, length)


def generate(model, params, config, nfe: int, num: int, length: int, key, x_init=None, **changes):
  """num samples with the nfe-step sampler of config.eval (any option replaced by `changes`), in
  batches of eval.batch_size: int32 [num, length]. x_init [num, length] holds given tokens and the mask
  id where to generate; None: every position is generated."""
  sample = sampler(model, config, nfe, length, **changes)
  if x_init is None:
    x_init = np.full((num, length), model.vocab_size, np.int32)
  rows = config.eval.batch_size
  out = [
    np.asarray(
      sample(params, jax.random.fold_in(key, start), jnp.asarray(x_init[start : start + rows])).tokens
    )
    for start in range(0, num, rows)
  ]
  return np.concatenate(out)


def _mean_se(per_sequence: np.ndarray, length: int) -> tuple[float, float]:
  """Mean and standard error across sequences, converted from nats per sequence to bits per token."""
  scale = 1.0 / (length * LN2)
  se = per_sequence.std(ddof=1) / math.sqrt(len(per_sequence)) if len(per_sequence) > 1 else float("nan")
  return float(per_sequence.mean() * scale), float(se * scale)


def _batched(fn, params, tokens: np.ndarray, batch_size: int, key) -> np.ndarray:
  """Apply fn(params, x0, key) -> [..., batch] over row batches of tokens; join along the last axis."""
  parts = [
    np.asarray(fn(params, jnp.asarray(tokens[i : i + batch_size]), jax.random.fold_in(key, i)))
    for i in range(0, len(tokens), batch_size)
  ]
  return np.concatenate(parts, axis=-1)


def bounded_sampler(
  options: samplers.SamplerOptions, has_latent: bool, blocks: int
) -> tuple[samplers.SamplerOptions, tuple[str, ...]]:
  """The sampler that the bounds describe, and why it differs from `options` (the eval sampler).

  A bound is implemented for random-order samplers with sampled token values at any temperature,
  without remasking, with z fixed per sequence (a fresh z_b per block), fresh at every step,
  scheduled (fixed at the steps that reveal several tokens, fresh at the others) or parallel_only
  (fixed there, z = 0 at the others). For
  other settings the bounds are of the nearest such sampler, and a note says what was changed: argmax
  values have no likelihood (their sampled version at temperature 1 is bounded); confidence orders,
  remasking and one z shared by all blocks have no bound here. Gumbel noise on random scores leaves
  the order uniform, so it changes nothing.
  """
  notes, changes = [], {"gumbel_scale": 0.0, "kv_cache": True}
  if options.token_rule != "sample":  # argmax, argmax_parallel, argmax_confident
    notes.append(
      f"{options.token_rule} token values have no likelihood: bounds of sampled values at temperature 1"
    )
    changes.update(token_rule="sample", temperature=1.0)
  if options.order != "random":
    notes.append(f"no bound for order={options.order}: bounds of the random order")
    changes["order"] = "random"
  if options.remask_eta > 0:
    notes.append(f"no bound for remask_eta={options.remask_eta:g}: bounds without remasking")
    changes["remask_eta"] = 0.0
  if not has_latent:
    changes.update(z_policy="fixed", block_z="fresh")
  elif blocks > 1 and options.block_z == "shared" and options.z_policy != "per_step":
    notes.append("no bound for block_z=shared: bounds of a fresh z_b per block")
    changes["block_z"] = "fresh"
  return options.replace(**changes), tuple(notes)


def describe_sampler(options: samplers.SamplerOptions, has_latent: bool, blocks: int) -> str:
  """The sampler a bound belongs to, in words (options as returned by `bounded_sampler`)."""
  parts = ["random order", f"sampled tokens at temperature {options.temperature:g}"]
  if has_latent and options.z_policy == "per_step":
    parts.append("a fresh z at every step")
  elif has_latent and options.z_policy == "scheduled":
    parts.append("z fixed at the steps that reveal several tokens, fresh at the others")
  elif has_latent and options.z_policy == "parallel_only":
    parts.append("z fixed at the steps that reveal several tokens, z = 0 at the others")
  elif has_latent:
    parts.append("z fixed per block (a fresh z_b per block)" if blocks > 1 else "z fixed per sequence")
  return ", ".join(parts)


def likelihood_bounds(model, params, config, tokens: np.ndarray, key) -> dict[str, Any]:
  """Valid NLL bounds on test tokens [N, length], in bits per token with standard errors, each of the
  sampler that results["bound_sampler"] names (`bounded_sampler`; results["bound_notes"] says how it
  differs from the eval sampler).

  iwae{K} (the headline): the importance-weighted bound of the one-token-a-step sampler (NFE = length)
  over K paths, each (z, reveal order) with z fixed, or an order with eval.step_draws draws of z per
  step with a fresh z per step (`one_token_bound`); nelbo@nfe{N}: the bound (-E log w) of the N-step
  sampler, one path per sequence (with a fresh z per step, each step importance-weights
  eval.step_draws draws of z; one draw is the E_r[...] + KL(r || p) form). Both have finite variance.
  With eval.continuous_bound, also nelbo: the continuous-time bound (NFE -> infinity, z fixed only) at
  eps = 0, whose variance is infinite under the linear schedule (its `_se` is then no standard error).
  For a block model every bound is a sum over blocks (N counts the steps of all blocks; IWAE weights
  each block's conditional likelihood separately). Parameters are arguments of the jitted functions,
  never constants baked into them.
  """
  e, length = config.eval, tokens.shape[1]
  blocks, latent = objectives.num_blocks(model, length), model.latent_dim > 0
  options, notes = bounded_sampler(sampler_options(config, model), latent, blocks)
  schedule = get_schedule(config.objective.schedule, config.objective.eps)  # the sampler's own
  batch = max(1, e.batch_size // max(e.bound_draws, e.iwae_k, 1))
  results: dict[str, Any] = {"bound_sampler": describe_sampler(options, latent, blocks)}
  draws_key, path_key, iwae_key = jax.random.split(key, 3)

  @functools.partial(jax.jit, static_argnums=(3,))
  def log_weights(params, x0, k, nfe):
    return objectives.trajectory_log_weights(
      model,
      params,
      x0,
      k,
      schedule,
      nfe // blocks,
      False,
      e.bound_proposal,
      options.z_policy,
      options.temperature,
      e.step_draws if options.z_policy != "fixed" else 1,
    )

  if e.iwae_k > 0:
    per_seq = one_token_bound(model, params, config, tokens, iwae_key, e.iwae_k, options=options)
    name = f"iwae{e.iwae_k}_bits_per_token"
    results[name], results[name + "_se"] = _mean_se(per_seq, length)
  for nfe in e.nfes:
    path_fn = functools.partial(log_weights, nfe=nfe)
    per_seq = -_batched(path_fn, params, tokens, batch, jax.random.fold_in(path_key, nfe))
    name = f"nelbo@nfe{nfe}_bits_per_token"
    results[name], results[name + "_se"] = _mean_se(per_seq, length)
  if e.continuous_bound and (options.z_policy != "fixed" or options.temperature != 1.0):
    notes += ("no continuous-time bound for this sampler",)
  elif e.continuous_bound:
    exact = get_schedule(config.objective.schedule, 0.0)  # alpha(1) = 0: every token is paid for

    @jax.jit
    def draws(params, x0, k):
      return objectives.nelbo_draws(model, params, x0, k, exact, e.bound_draws, e.bound_proposal)

    per_seq = _batched(draws, params, tokens, batch, draws_key).mean(axis=0)
    results["nelbo_bits_per_token"], results["nelbo_bits_per_token_se"] = _mean_se(per_seq, length)
  if notes:
    results["bound_notes"] = "; ".join(notes)
  return results


def one_token_bound(
  model,
  params,
  config,
  tokens: np.ndarray,
  key,
  num_draws: int,
  importance_weighted: bool = True,
  options: samplers.SamplerOptions | None = None,
) -> np.ndarray:
  """A valid upper bound on -log p(x0) per sequence of tokens [N, length], in nats: [N].

  The bound is of the one-token-a-step sampler that `options` (default: `bounded_sampler` of the
  config's eval sampler) describes, over num_draws draws of a path: importance-weighted,
  -log (1/K sum_k w_k), or else the mean of -log w_k. z fixed: a path is (z ~ q(z | x0), a uniformly
  random reveal order). A fresh z per step: a path is an order, and its w averages eval.step_draws
  draws of z at every step when importance-weighted (one otherwise). A block model's bound is the sum
  of its blocks'.
  """
  e, length = config.eval, tokens.shape[1]
  blocks = objectives.num_blocks(model, length)
  if options is None:
    options = bounded_sampler(sampler_options(config, model), model.latent_dim > 0, blocks)[0]
  schedule = get_schedule(config.objective.schedule, config.objective.eps)
  batch = max(1, e.batch_size // max(e.bound_draws, e.iwae_k * e.step_draws, num_draws * e.step_draws, 1))
  # (bounded_sampler sets z_policy 'fixed' for a model without a latent)
  step_draws = e.step_draws if options.z_policy != "fixed" and importance_weighted else 1

  @jax.jit
  def bound(params, x0, k):
    def log_weights(kk):
      return objectives.trajectory_log_weights(
        model,
        params,
        x0,
        kk,
        schedule,
        length // blocks,
        True,
        e.bound_proposal,
        options.z_policy,
        options.temperature,
        step_draws,
      )

    log_w = jax.lax.map(log_weights, jax.random.split(k, num_draws))  # [K, batch, blocks]
    per_block = objectives.iwae_bound(log_w) if importance_weighted else -jnp.mean(log_w, axis=0)
    return jnp.sum(per_block, axis=-1)

  return _batched(bound, params, tokens, batch, key)


def objective_loss(model, params, config, tokens: np.ndarray, key, final_step: int) -> float:
  """The optimised objective (nats per token) on test tokens: a training loss, not a bound."""
  settings = objectives.settings_from_config(config.objective)

  @jax.jit
  def batch_loss(params, x0, k):
    return objectives.loss_fn(model, params, {"tokens": x0}, k, settings, final_step, train=False)[0][None]

  return float(np.mean(_batched(batch_loss, params, tokens, config.eval.batch_size, key)))


def write_samples(workdir: str, nfe: int, samples: np.ndarray, decode=None, suffix: str = "") -> str:
  """Save samples [N, L] as workdir/samples_nfe{nfe}{suffix}.npy and, given decode (tokens [L] ->
  text), as samples_nfe{nfe}{suffix}.txt too. Returns the path of the .npy file."""
  path = os.path.join(workdir, f"samples_nfe{nfe}{suffix}.npy")
  np.save(path, samples)
  if decode is not None:
    with open(os.path.join(workdir, f"samples_nfe{nfe}{suffix}.txt"), "w", encoding="utf-8") as f:
      for i, row in enumerate(samples):
        f.write(f"--- sample {i}, NFE {nfe} ---\n{decode(row)}\n")
  return path


def common_results(run, key, sequences: np.ndarray | None = None) -> dict[str, Any]:
  """What every task reports: the bounds and the training loss on the first eval.bound_examples
  sequences [N, L] (default: the test split's), the step, and the sample and example counts."""
  sequences = run.dataset.test if sequences is None else sequences
  tokens = sequences[: run.config.eval.bound_examples]
  params = run.eval_params()
  results = likelihood_bounds(run.model, params, run.config, tokens, jax.random.fold_in(key, 7))
  results["loss"] = objective_loss(
    run.model, params, run.config, tokens, jax.random.fold_in(key, 8), run.step
  )
  results["steps"] = run.step
  results["num_samples"] = run.config.eval.num_samples
  results["bound_examples"] = int(len(tokens))
  return results
