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
  for name in ("num_samples", "batch_size", "bound_examples", "bound_draws"):
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


def likelihood_bounds(model, params, config, tokens: np.ndarray, key) -> dict[str, float]:
  """Valid NLL bounds on test tokens [N, length], in bits per token with standard errors.

  nelbo: the continuous-time bound (a) with z ~ q(z | x0); nelbo@nfe{N}: the finite-step bound (b) of
  the N-step random-order sampler with z fixed and sampled token values; iwae{K}: the importance-
  weighted bound over K draws of (z, reveal order) of the one-token-a-step model. For a block model
  every bound is a sum over blocks (N counts the steps of all blocks; IWAE weights each block's
  conditional likelihood separately). Parameters are arguments of the jitted functions, never
  constants baked into them.
  """
  e, length = config.eval, tokens.shape[1]
  blocks = objectives.num_blocks(model, length)
  schedule = get_schedule(config.objective.schedule, config.objective.eps)
  batch = max(1, e.batch_size // max(e.bound_draws, e.iwae_k, 1))
  results = {}
  draws_key, path_key, iwae_key = jax.random.split(key, 3)

  @jax.jit
  def draws(params, x0, k):
    return objectives.nelbo_draws(model, params, x0, k, schedule, e.bound_draws, e.bound_proposal)

  per_seq = _batched(draws, params, tokens, batch, draws_key).mean(axis=0)
  results["nelbo_bits_per_token"], results["nelbo_bits_per_token_se"] = _mean_se(per_seq, length)

  @functools.partial(jax.jit, static_argnums=(3, 4))
  def log_weights(params, x0, k, nfe, per_block=False):
    return objectives.trajectory_log_weights(
      model, params, x0, k, schedule, nfe // blocks, per_block, e.bound_proposal
    )

  for nfe in e.nfes:
    path_fn = functools.partial(log_weights, nfe=nfe)
    per_seq = -_batched(path_fn, params, tokens, batch, jax.random.fold_in(path_key, nfe))
    name = f"nelbo@nfe{nfe}_bits_per_token"
    results[name], results[name + "_se"] = _mean_se(per_seq, length)
  if e.iwae_k > 0:
    per_seq = one_token_bound(model, params, config, tokens, iwae_key, e.iwae_k)
    name = f"iwae{e.iwae_k}_bits_per_token"
    results[name], results[name + "_se"] = _mean_se(per_seq, length)
  return results


def one_token_bound(
  model, params, config, tokens: np.ndarray, key, num_draws: int, importance_weighted: bool = True
) -> np.ndarray:
  """A valid upper bound on -log p(x0) per sequence of tokens [N, length], in nats: [N].

  Over num_draws draws of (z ~ q(z | x0), a uniformly random reveal order) of the one-token-a-step
  sampler with z fixed (per block for a block model): importance-weighted, -log (1/K sum_k w_k), or
  else the mean of -log w_k. A block model's bound is the sum of its blocks' bounds.
  """
  e, length = config.eval, tokens.shape[1]
  blocks = objectives.num_blocks(model, length)
  schedule = get_schedule(config.objective.schedule, config.objective.eps)
  batch = max(1, e.batch_size // max(e.bound_draws, e.iwae_k, num_draws, 1))

  @jax.jit
  def bound(params, x0, k):
    def log_weights(kk):
      return objectives.trajectory_log_weights(
        model, params, x0, kk, schedule, length // blocks, True, e.bound_proposal
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
    return objectives.loss_fn(model, params, {"tokens": x0}, k, settings, final_step)[0][None]

  return float(np.mean(_batched(batch_loss, params, tokens, config.eval.batch_size, key)))


def write_samples(workdir: str, nfe: int, samples: np.ndarray, decode=None) -> str:
  """Save samples [N, L] as workdir/samples_nfe{nfe}.npy and, given decode (tokens [L] -> text), as
  samples_nfe{nfe}.txt too. Returns the path of the .npy file."""
  path = os.path.join(workdir, f"samples_nfe{nfe}.npy")
  np.save(path, samples)
  if decode is not None:
    with open(os.path.join(workdir, f"samples_nfe{nfe}.txt"), "w", encoding="utf-8") as f:
      for i, row in enumerate(samples):
        f.write(f"--- sample {i}, NFE {nfe} ---\n{decode(row)}\n")
  return path


def common_results(run, key) -> dict[str, Any]:
  """What every task reports: the bounds and the training loss on the first eval.bound_examples test
  sequences, the step, and the sample and example counts."""
  tokens = run.dataset.test[: run.config.eval.bound_examples]
  params = run.eval_params()
  results = likelihood_bounds(run.model, params, run.config, tokens, jax.random.fold_in(key, 7))
  results["loss"] = objective_loss(
    run.model, params, run.config, tokens, jax.random.fold_in(key, 8), run.step
  )
  results["steps"] = run.step
  results["num_samples"] = run.config.eval.num_samples
  results["bound_examples"] = int(len(tokens))
  return results
