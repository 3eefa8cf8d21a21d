"""The Python API: train a config, load a trained workdir, then sample, score sequences and solve puzzles.

    import vmd_jax
    model = vmd_jax.train(config, "runs/d1_vmd")     # or vmd_jax.load("runs/d1_vmd")
    samples = model.sample(1000, nfe=1)              # int32 [1000, length]
    bound = model.nll_bound(samples)                 # bound.nats: [1000], bound.estimator: its name

The command line (vmd_jax.main) and the notebook are thin users of these functions.
"""

import json
import os
import time
from typing import NamedTuple

import jax
import ml_collections
import numpy as np

from vmd_jax import checkpoints, distributed, evaluation, objectives, tasks
from vmd_jax.data import pipeline
from vmd_jax.errors import CheckpointError, ConfigError
from vmd_jax.trainer import Run
from vmd_jax.validation import validate


def prepare(config) -> pipeline.Dataset:
  """Check the config, join the other processes (config.jax_distributed), and prepare and read its
  dataset; eval.nfes left empty is filled in from the data's length, and every NFE is checked against
  it. Nothing is written but the prepared data."""
  validate(config)
  distributed.initialize(config)
  dataset = pipeline.load(config.data)
  tasks.fit_to_data(config, dataset.length)
  return dataset


def write_json(path: str, payload) -> None:
  """Write payload as indented JSON (process 0 only), creating the folder."""
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(payload, f, indent=2, sort_keys=True)


def results_name(split: str = "test") -> str:
  """The file a run's evaluation on `split` is written to: results.json for the test split (the one
  `load`, the report and the launch scripts read), results_<split>.json for another (eval.split)."""
  return f"results{tasks.base.split_suffix(split)}.json"


def evaluate(run: Run, extra: dict | None = None) -> dict:
  """Evaluate a run with its task and write workdir/results.json (results_<split>.json when the
  task's eval.split is not the test split): the results dict."""
  results = tasks.evaluate(run)
  c = run.config
  if extra is None and (seconds := _train_time(run.workdir)) is not None:
    extra = {"train_seconds": seconds}  # evaluated again: the training time the record keeps
  results.update(
    {
      "task": c.task,
      "method": c.label or c.objective.name,
      "objective": c.objective.name,
      "dataset": results.get("dataset", c.data.name),  # a task may name a parameterised set more precisely
      "vocab_size": run.dataset.vocab_size,
      "length": run.dataset.length,
      "block_size": c.model.block_size,
      **(extra or {}),
    }
  )
  write_json(os.path.join(run.workdir, results_name(c.eval.get("split", "test"))), results)
  return results


class NLLBound(NamedTuple):
  """A valid upper bound on -log p(x) of each sequence, in nats, and the estimator that gave it."""

  nats: np.ndarray  # [N] float64
  estimator: str


class Model:
  """A trained model: its config, network, evaluation parameters and workdir.

  `sample`, `nll_bound` and (for Sudoku) `solve` run on the devices of this process. `results` holds
  the evaluation results when the model comes from `train` (or results.json when loaded).
  """

  def __init__(self, run: Run, results: dict | None = None):
    self.run, self.results = run, results
    self.config, self.network, self.workdir = run.config, run.model, run.workdir
    self.params = run.eval_params()
    self.length = run.dataset.length

  @property
  def step(self) -> int:
    """Train steps taken."""
    return self.run.step

  @property
  def dataset(self) -> pipeline.Dataset:
    """The run's dataset (read, and prepared if needed, at the first use after `load`)."""
    if self.run.dataset.train.shape[0] == 0:
      self.run.dataset = pipeline.load(self.config.data)
    return self.run.dataset

  def decode(self, tokens) -> str:
    """Text of one token sequence [length], for datasets of text (ConfigError otherwise)."""
    if self.dataset.decode is None:
      raise ConfigError(f"dataset {self.config.data.name!r} has no text decoding")
    return self.dataset.decode(np.asarray(tokens))

  def sample(self, num: int, nfe: int, *, prompt=None, given=None, seed: int = 0, **options) -> np.ndarray:
    """num samples with the nfe-step sampler of config.eval, any option of samplers.SamplerOptions
    replaced by keyword (order='margin', z_policy='per_step', temperature=0.8, ...).

    prompt: token ids [P] or [num, P] that every sample starts with; given: token ids [num, length]
    with -1 where the sampler generates (clues, infilling). The given tokens are kept. Returns int32
    [num, length].
    """
    x_init = np.full((num, self.length), self.network.vocab_size, np.int32)
    if prompt is not None:
      prompt = np.broadcast_to(np.asarray(prompt, np.int32), (num, np.shape(prompt)[-1]))
      x_init[:, : prompt.shape[1]] = prompt
    if given is not None:
      given = np.asarray(given)
      if given.shape != x_init.shape:
        raise ConfigError(f"given has shape {given.shape}, expected {x_init.shape}")
      x_init = np.where(given >= 0, given, x_init).astype(np.int32)
    key = jax.random.PRNGKey(seed)
    return evaluation.generate(
      self.network, self.params, self.config, nfe, num, self.length, key, x_init, **options
    )

  def nll_bound(self, tokens, *, num_draws: int = 16, importance_weighted: bool = True, seed: int = 0):
    """A valid upper bound on -log p(x) in nats for each sequence of tokens [N, length]: NLLBound.

    The bound is of the one-token-a-step version of the config's sampler (random order, sampled
    values; z fixed per sequence or block, or fresh at every step, as eval.z_policy says; see
    evaluation.bounded_sampler): importance-weighted over num_draws draws (of (z, reveal order), or of z
    at each step), or their plain average. The estimator's name says which. Use it to score sequences,
    as a loglikelihood() for evaluation harnesses.
    """
    tokens = np.asarray(tokens, np.int32)
    if tokens.ndim != 2 or tokens.shape[1] != self.length:
      raise ConfigError(f"tokens have shape {tokens.shape}, expected [N, {self.length}]")
    if tokens.min() < 0 or tokens.max() >= self.network.vocab_size:
      raise ConfigError(f"tokens must be in 0..{self.network.vocab_size - 1}")
    blocks = objectives.num_blocks(self.network, self.length)
    has_latent = self.network.latent_dim > 0
    options = evaluation.bounded_sampler(
      evaluation.sampler_options(self.config, self.network), has_latent, blocks
    )[0]
    nats = evaluation.one_token_bound(
      self.network,
      self.params,
      self.config,
      tokens,
      jax.random.PRNGKey(seed),
      num_draws,
      importance_weighted,
      options,
    )
    kind = f"iwae{num_draws}" if importance_weighted else f"elbo{num_draws}"
    sampler = evaluation.describe_sampler(options, has_latent, blocks)
    return NLLBound(nats.astype(np.float64), f"{kind}: one token a step, {sampler}")

  def solve(self, puzzles, nfe: int = 20, order: str = "margin", seed: int = 0) -> np.ndarray:
    """Fill in puzzles with the task's solver (Sudoku: digits [N, 81], 0 = blank): digits [N, 81]."""
    return tasks.get(self.config.task).solve(self, puzzles, nfe, order, seed)


def compare(models: dict[str, Model], directory: str) -> tuple[str, list[str]]:
  """The tables of trained models of one task side by side, and its comparison figures drawn into
  directory (for the synthetic sets, the one-step joint histograms): (markdown, figure paths)."""
  runs = {name: (model.results, model.workdir) for name, model in models.items()}
  task_names = {model.config.task for model in models.values()}
  if len(task_names) != 1 or any(results is None for results, _ in runs.values()):
    raise ConfigError("compare takes evaluated models (from train, or loaded with results) of one task")
  task = tasks.get(task_names.pop())
  return task.table(runs), task.figures(runs, directory)


def train(config, workdir: str, evaluate_after: bool = True) -> Model | None:
  """Train config in workdir (resuming from its checkpoint), evaluate it (results.json) unless told
  not to, and return the Model; None when SIGTERM stopped training (the same call resumes)."""
  run = Run(config, workdir, prepare(config))
  try:
    start, start_step = time.perf_counter(), run.step
    finished = run.train()
    seconds = _record_train_time(workdir, time.perf_counter() - start, start_step, run.step)
    if not finished:
      return None
    extra = {"trained_steps": run.step - start_step}
    if seconds is not None:
      extra["train_seconds"] = seconds
    return Model(run, evaluate(run, extra) if evaluate_after else None)
  finally:
    run.close()


TRAIN_TIME = "train_time.json"  # in a workdir: the wall seconds of training, summed over resumes


def _record_train_time(workdir: str, seconds: float, start_step: int, step: int) -> float | None:
  """Add this call's training seconds to workdir's record (a run started from step 0 starts it
  afresh) and return the total: the training time of the checkpoint, preemptions and resumes
  included, which results carry as train_seconds also when evaluated again (--mode=eval). None for
  a call that trained nothing on a checkpoint of an earlier release, which kept no record."""
  before = _train_time(workdir) if start_step > 0 else 0.0
  if step == start_step:
    return before
  total = round(seconds + (before or 0.0), 1)
  write_json(os.path.join(workdir, TRAIN_TIME), {"train_seconds": total, "step": step})
  return total


def _train_time(workdir: str) -> float | None:
  """The training seconds recorded in workdir, or None (a run trained by an earlier release)."""
  path = os.path.join(workdir, TRAIN_TIME)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return float(json.load(f)["train_seconds"])


def _config_from_record(record: dict) -> ml_collections.ConfigDict:
  """A config of the recorded task with the recorded values (lists back to tuples, as in the schema)."""
  config = tasks.base_config(record["task"])

  def plain(value):
    return tuple(value) if isinstance(value, list) else value

  for key, value in record.items():
    if isinstance(value, dict):
      for field, v in value.items():
        if field in config[key]:
          config[key][field] = plain(v)
    elif key in config:
      config[key] = plain(value)
  return config


def load(workdir: str, config=None) -> Model:
  """The trained model of workdir's latest checkpoint, with the config it was trained with (or
  `config`, which must then match the checkpoint except in data.seq_length: CheckpointError names the
  fields that differ). The model is for evaluating and sampling; `vmd_jax.train` resumes training."""
  meta = checkpoints.Checkpointer(workdir).latest_meta()
  if meta is None:
    raise CheckpointError(f"{workdir} has no readable checkpoint: train first")
  if "config" not in meta or "data_shape" not in meta:
    raise CheckpointError(
      f"the checkpoint in {workdir} was written by an earlier release, without its config and data shape: "
      "evaluate or sample it with the command line, or train again"
    )
  if config is None:
    config = _config_from_record(meta["config"])
  validate(config)
  shape = meta["data_shape"]
  empty = np.zeros((0, shape["length"]), np.int32)
  stub = pipeline.Dataset(config.data.name, empty, empty, shape["vocab_size"])
  run = Run(config, workdir, stub, evaluate_only=True)
  run.close()
  results_path = os.path.join(workdir, "results.json")
  results = None
  if os.path.exists(results_path):
    with open(results_path, encoding="utf-8") as f:
      results = json.load(f)
  return Model(run, results)
