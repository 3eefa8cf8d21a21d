"""Evaluation: valid likelihood bounds, samples, and the synthetic tasks' accuracy and KL.

Every likelihood figure here is a valid upper bound on the model's NLL (design note §3), in bits per
token, with its standard error across test sequences. The training objective is reported separately
as `loss`. Tasks are looked up in EVALUATORS by config.task.
"""

import functools
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vmd_jax import objectives, samplers
from vmd_jax.data import synthetic
from vmd_jax.errors import ConfigError
from vmd_jax.schedules import get_schedule

LN2 = math.log(2.0)


def denoise_fn(model):
  """The pure denoiser (params, x_t, t, z) -> logits [batch, length, vocab] the samplers call."""
  return lambda params, x_t, t, z: model.apply(params, x_t, t, z, method="denoise")


def block_fns(model) -> samplers.BlockModelFns:
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


def token_rule(eval_config, model) -> str:
  """'auto' resolves to argmax given z for latent models (the paper's VMD sampler), sample for MDM."""
  if eval_config.token_rule == "auto":
    return "argmax" if model.latent_dim > 0 else "sample"
  return eval_config.token_rule


def check_nfes(nfes, length: int, blocks: int = 1) -> None:
  """Each evaluated NFE must be in 1..length and, for a block model, a multiple of the block count."""
  bad = [n for n in nfes if not 1 <= n <= length or n % blocks]
  if bad:
    raise ConfigError(
      f"eval.nfes {tuple(nfes)}: each must be in 1..{length} (the sequence length)"
      + (f" and a multiple of the {blocks} blocks (NFE counts the steps of all blocks)" if blocks > 1 else "")
    )


def sampler(model, config, nfe: int, order: str | None = None, length: int | None = None):
  """The jitted nfe-step sampler (params, key, x_init) -> SampleResult that config.eval describes
  (with its order replaced by `order` when given). For a block model with several blocks in `length`
  tokens it is the block sampler, with nfe / blocks steps per block."""
  e = config.eval
  options = dict(
    mask_id=model.vocab_size,
    schedule=get_schedule(config.objective.schedule, config.objective.eps),
    order=e.order if order is None else order,
    token_rule=token_rule(e, model),
    temperature=e.temperature,
    gumbel_scale=e.gumbel_scale,
    latent_dim=model.latent_dim,
    z_policy=e.z_policy,
    remask_eta=e.remask_eta,
  )
  blocks = 1 if length is None else objectives.num_blocks(model, length)
  if blocks == 1:
    return samplers.make_sampler(denoise_fn(model), nfe=nfe, **options)
  check_nfes([nfe], length, blocks)
  return samplers.make_block_sampler(
    block_fns(model),
    block_size=model.block_size,
    nfe_per_block=nfe // blocks,
    block_z=e.block_z,
    cached=e.kv_cache,
    **options,
  )


def generate(model, params, config, nfe: int, num: int, length: int, key) -> np.ndarray:
  """num unconditional samples with an nfe-step sampler: int32 [num, length]."""
  e = config.eval
  sample = sampler(model, config, nfe, length=length)
  out = []
  for start in range(0, num, e.batch_size):
    rows = min(e.batch_size, num - start)
    x_init = jnp.full((rows, length), model.vocab_size, jnp.int32)
    out.append(np.asarray(sample(params, jax.random.fold_in(key, start), x_init).tokens))
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

    @jax.jit
    def iwae(params, x0, k):
      keys = jax.random.split(k, e.iwae_k)
      log_w = jax.lax.map(lambda kk: log_weights(params, x0, kk, length, True), keys)
      return jnp.sum(objectives.iwae_bound(log_w), axis=-1)

    per_seq = _batched(iwae, params, tokens, batch, iwae_key)
    name = f"iwae{e.iwae_k}_bits_per_token"
    results[name], results[name + "_se"] = _mean_se(per_seq, length)
  return results


def objective_loss(model, params, config, tokens: np.ndarray, key, final_step: int) -> float:
  """The optimised objective (nats per token) on test tokens: a training loss, not a bound."""
  settings = objectives.settings_from_config(config.objective)

  @jax.jit
  def batch_loss(params, x0, k):
    return objectives.loss_fn(model, params, {"tokens": x0}, k, settings, final_step)[0][None]

  return float(np.mean(_batched(batch_loss, params, tokens, config.eval.batch_size, key)))


def support_metrics(samples: np.ndarray, dist: synthetic.Distribution, smoothing: float) -> dict[str, float]:
  """Acc (% of samples inside the data support) and KL(p_data || smoothed empirical frequencies), nats.

  The model frequency of each support sequence is (count + smoothing) / (n + smoothing * V^L): every
  one of the V^L possible sequences gets the same pseudo-count, so a model that never produces a
  support sequence gets a large but finite KL.
  """
  index = synthetic.support_index(dist, samples)
  counts = np.bincount(index[index >= 0], minlength=len(dist.probs)).astype(np.float64)
  num_sequences = float(dist.vocab_size) ** samples.shape[1]
  q = (counts + smoothing) / (len(samples) + smoothing * num_sequences)
  kl = float(np.sum(dist.probs * (np.log(dist.probs) - np.log(q))))
  return {"acc": 100.0 * float(np.mean(index >= 0)), "kl": kl}


def plot_joint(samples_by_title: dict[str, np.ndarray], vocab_size: int, path: str) -> None:
  """Side-by-side heat maps of the joint frequency of the first two positions of each sample set."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  joints = {}
  for title, samples in samples_by_title.items():
    joint = np.zeros((vocab_size, vocab_size))  # joint: [x1, x2] frequencies
    np.add.at(joint, (samples[:, 0], samples[:, 1]), 1.0 / len(samples))
    joints[title] = joint
  vmax = max(joint.max() for joint in joints.values())  # one colour scale, so panels compare
  fig, axes = plt.subplots(1, len(joints), figsize=(4 * len(joints), 3.6), squeeze=False)
  for ax, (title, joint) in zip(axes[0], joints.items(), strict=True):
    image = ax.imshow(joint, cmap="viridis", origin="lower", vmin=0.0, vmax=vmax)
    ax.set_xlabel("x2")
    ax.set_ylabel("x1")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def evaluate_synthetic(run, key) -> tuple[dict[str, Any], np.ndarray]:
  """Acc and KL at each NFE, bounds, the entropy of the set, and the one-step joint histogram PNG."""
  config, model, dataset = run.config, run.model, run.dataset
  params = run.eval_params()
  results = {"entropy_bits_per_token": synthetic.entropy_nats(dataset.distribution) / (dataset.length * LN2)}
  one_step = None
  for nfe in config.eval.nfes:
    samples = generate(
      model, params, config, nfe, config.eval.num_samples, dataset.length, jax.random.fold_in(key, nfe)
    )
    metrics = support_metrics(samples, dataset.distribution, config.eval.kl_smoothing)
    results[f"acc@nfe{nfe}"], results[f"kl@nfe{nfe}"] = metrics["acc"], metrics["kl"]
    one_step = samples if nfe == 1 else one_step
  if one_step is not None and jax.process_index() == 0:
    plot_joint(
      {f"{config.objective.name}, NFE = 1": one_step},
      dataset.vocab_size,
      os.path.join(run.workdir, "joint_nfe1.png"),
    )
  results.update(_common(run, key))
  return results, one_step


def evaluate_sequences(run, key) -> tuple[dict[str, Any], None]:
  """Bounds on the held-out split and samples at each NFE, saved as workdir/samples_nfe{N}.npy."""
  config, model, dataset = run.config, run.model, run.dataset
  params = run.eval_params()
  results = {}
  for nfe in config.eval.nfes:
    samples = generate(
      model, params, config, nfe, config.eval.num_samples, dataset.length, jax.random.fold_in(key, nfe)
    )
    if jax.process_index() == 0:
      write_samples(run.workdir, nfe, samples)
  results.update(_common(run, key))
  return results, None


def evaluate_text(run, key) -> tuple[dict[str, Any], None]:
  """Bounds in bits per token (per character for character-level corpora) and perplexity, and samples.

  bpc_bound is the continuous-time bound (nelbo) and ppl_bound = 2 ** bpc_bound, both valid upper
  bounds; the finite-NFE and IWAE bounds are reported under their own names. For each NFE,
  eval.num_samples samples are written to workdir/samples_nfe{N}.txt (decoded) and .npy, and the
  sampler's speed as samples_tokens_per_s@nfe{N} (compilation excluded). With eval.prompt_length = P
  each sample continues the first P tokens of a test sequence, which stay as they are.
  """
  config, model, dataset = run.config, run.model, run.dataset
  num, length = config.eval.num_samples, dataset.length
  if config.eval.prompt_length >= length:
    raise ConfigError(f"eval.prompt_length={config.eval.prompt_length}: must be below the length {length}")
  params = run.eval_params()
  results = _common(run, key)
  results["bpc_bound"] = results["nelbo_bits_per_token"]
  results["bpc_bound_se"] = results["nelbo_bits_per_token_se"]
  results["ppl_bound"] = 2.0 ** results["bpc_bound"]
  for nfe in config.eval.nfes:
    sample = sampler(model, config, nfe, length=length)
    rows = min(config.eval.batch_size, num)
    prompts = dataset.test[np.arange(num) % len(dataset.test), : config.eval.prompt_length]
    x_init = np.full((num, length), model.vocab_size, np.int32)
    x_init[:, : prompts.shape[1]] = prompts
    compiled = sample.lower(params, key, jnp.asarray(x_init[:rows])).compile()
    parts, start_time = [], time.perf_counter()
    for start in range(0, num, rows):
      batch = x_init[start : start + rows]
      batch = np.concatenate([batch, x_init[: rows - len(batch)]])  # the compiled batch shape
      out = compiled(params, jax.random.fold_in(key, start), jnp.asarray(batch)).tokens
      parts.append(np.asarray(out))
    seconds = time.perf_counter() - start_time
    samples = np.concatenate(parts)[:num]
    results[f"samples_tokens_per_s@nfe{nfe}"] = float(len(parts) * rows * length / seconds)
    if jax.process_index() == 0:
      write_samples(run.workdir, nfe, samples, dataset.decode)
  return results, None


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


def _common(run, key) -> dict[str, Any]:
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


def solve_puzzles(model, params, config, nfe: int, order: str, tokens, given, key) -> samplers.SampleResult:
  """Complete puzzles (solutions tokens [N, L] with the clue cells given [N, L]) with the nfe-step
  sampler of `order`; the non-clue cells start masked. Returns host arrays [N, L]."""
  sample = sampler(model, config, nfe, order)
  parts = []
  for start in range(0, len(tokens), config.eval.batch_size):
    stop = start + config.eval.batch_size
    x_init = np.where(given[start:stop], tokens[start:stop], model.vocab_size).astype(np.int32)
    parts.append(jax.device_get(sample(params, jax.random.fold_in(key, start), jnp.asarray(x_init))))
  return samplers.SampleResult(*(np.concatenate(arrays) for arrays in zip(*parts, strict=True)))


def plot_sudoku(puzzles, grids, reveal_step, nfe: int, title: str, path: str) -> None:
  """A row of solved grids (digits [n, 81], 0 = blank in puzzles) with each filled cell coloured by the
  sampler step that revealed it; clues are white, wrong digits are red."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from vmd_jax.data import sudoku

  cmap = plt.get_cmap("viridis", nfe)
  fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.6), squeeze=False)
  for ax, puzzle, grid, steps in zip(axes[0], puzzles, grids, reveal_step, strict=True):
    colours = np.ones((9, 9, 4))
    filled = puzzle == 0
    colours.reshape(81, 4)[filled] = cmap(steps[filled] / max(nfe - 1, 1))
    ax.imshow(colours, alpha=0.55)
    solved = bool(sudoku.is_valid_solution(grid, puzzle))
    for cell in range(81):
      r, c = divmod(cell, 9)
      wrong = filled[cell] and not _digit_consistent(grid, cell)
      colour, weight = ("red" if wrong else "black"), ("normal" if filled[cell] else "bold")
      ax.text(c, r, str(grid[cell]), ha="center", va="center", fontsize=9, color=colour, weight=weight)
    for k in range(10):
      width = 2.0 if k % 3 == 0 else 0.5
      ax.axhline(k - 0.5, color="black", lw=width)
      ax.axvline(k - 0.5, color="black", lw=width)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("solved" if solved else "not solved", fontsize=10)
  fig.suptitle(f"{title}: colour = step that revealed the cell (0..{nfe - 1}); bold = clue")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _digit_consistent(grid, cell: int) -> bool:
  """Whether grid[cell]'s digit appears nowhere else in its row, column or box."""
  r, c = divmod(cell, 9)
  g = np.asarray(grid).reshape(9, 9)
  box = g[3 * (r // 3) : 3 * (r // 3) + 3, 3 * (c // 3) : 3 * (c // 3) + 3]
  digit = g[r, c]
  return (g[r] == digit).sum() == 1 and (g[:, c] == digit).sum() == 1 and (box == digit).sum() == 1


def evaluate_sudoku(run, key) -> tuple[dict[str, Any], None]:
  """Share of held-out puzzles solved (every unit a permutation, clues kept) for each decoder order in
  config.eval.decoders and NFE in config.eval.nfes, on the first eval.num_samples test puzzles.

  Writes workdir/sudoku_solved.npz (per-puzzle booleans, for paired comparisons between methods) and
  workdir/sudoku_grids.png (a few grids of the first decoder at the smallest NFE).
  """
  from vmd_jax.data import sudoku

  config, model, dataset = run.config, run.model, run.dataset
  params = run.eval_params()
  n = min(config.eval.num_samples, len(dataset.test))
  tokens, given = dataset.test[:n], dataset.test_given[:n]
  puzzles = np.where(given, tokens + 1, 0)  # digits, 0 = blank
  results, solved_by_key = {"n_test": int(n), "steps": run.step}, {}
  for order in config.eval.decoders:
    for nfe in config.eval.nfes:
      out = solve_puzzles(model, params, config, nfe, order, tokens, given, jax.random.fold_in(key, nfe))
      solved = sudoku.is_valid_solution(out.tokens + 1, puzzles)  # [n]
      name = f"acc@{order}@nfe{nfe}"
      solved_by_key[name] = solved
      results[name] = 100.0 * float(solved.mean())
      results[name + "_se"] = 100.0 * float(solved.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
      if jax.process_index() == 0 and order == config.eval.decoders[0] and nfe == min(config.eval.nfes):
        shown = slice(0, min(4, n))
        plot_sudoku(
          puzzles[shown],
          out.tokens[shown] + 1,
          out.reveal_step[shown],
          nfe,
          f"{config.objective.name}, {order}, NFE = {nfe}",
          os.path.join(run.workdir, "sudoku_grids.png"),
        )
  if jax.process_index() == 0:
    np.savez(os.path.join(run.workdir, "sudoku_solved.npz"), **solved_by_key)
  return results, None


EVALUATORS = {
  "synthetic": evaluate_synthetic,
  "sequences": evaluate_sequences,
  "sudoku": evaluate_sudoku,
  "text": evaluate_text,
}


def evaluate(run) -> tuple[dict[str, Any], np.ndarray | None]:
  """Run the config's evaluation suite: (flat results dict, one-step samples or None)."""
  if run.config.task not in EVALUATORS:
    raise ConfigError(f"unknown task {run.config.task!r}: choose one of {sorted(EVALUATORS)}")
  check_nfes(run.config.eval.nfes, run.dataset.length, objectives.num_blocks(run.model, run.dataset.length))
  return EVALUATORS[run.config.task](run, jax.random.PRNGKey(run.config.eval.seed))
