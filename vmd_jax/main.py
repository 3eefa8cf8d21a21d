"""Command line: `python -m vmd_jax.main --config=configs/<file>.py[:<arg>] --workdir=DIR [--mode=...]`.

train (default): train to config.train.steps (resuming from DIR's checkpoint if any), evaluate, and
  write DIR/results.json; eval: evaluate the latest checkpoint; sample: write samples at each eval NFE;
  prepare: only generate (or convert) the dataset, so that runs started side by side find it ready.
A compare config (configs/compare.py, the default, or configs/sudoku.py:compare) trains and evaluates
each of its runs in DIR/<run> (or, with --mode=eval, evaluates their checkpoints) and prints the VMD
against MDM comparison. Problems with the input (config values, data files,
checkpoints) are reported as one line on stderr with exit status 2, before anything is written; so is
a non-finite loss, which stops training with the last good checkpoint kept. SIGTERM (a preemption)
saves a checkpoint and exits with status 0; the same command resumes.

With several processes (config.jax_distributed) every process runs this same command: each trains on
its own share of every batch, and each evaluates on its own devices with the same seeds, so that only
process 0 needs to write results, samples and pictures.
"""

import json
import os
import sys
import time

import jax
import tensorflow_datasets as tfds
from absl import app, flags, logging
from ml_collections import config_flags

from vmd_jax import distributed, evaluation, report
from vmd_jax.data import pipeline
from vmd_jax.defaults import validate
from vmd_jax.errors import CheckpointError, VMDError
from vmd_jax.trainer import Run

DEFAULT_CONFIG = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "compare.py"
)

config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Experiment config file[:arg].", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results and pictures.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "sample", "prepare"], "What to do with the config.")
FLAGS = flags.FLAGS


def _load(config, workdir: str) -> Run:
  """Validate the config, load the data and build (or restore) the run; nothing is written."""
  validate(config)
  distributed.initialize(config)
  dataset = pipeline.load(config.data)
  evaluation.check_nfes(config.eval.nfes, dataset.length)
  return Run(config, workdir, dataset)


def _write_json(path: str, payload) -> None:
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(payload, f, indent=2, sort_keys=True)


def evaluate_and_save(run: Run, extra=None):
  """Evaluate a run and write workdir/results.json; returns (results, one-step samples or None)."""
  results, one_step = evaluation.evaluate(run)
  results.update(
    {
      "method": run.config.objective.name,
      "dataset": run.config.data.name,
      "vocab_size": run.dataset.vocab_size,
      "length": run.dataset.length,
      "block_size": run.config.model.block_size,
      **(extra or {}),
    }
  )
  _write_json(os.path.join(run.workdir, "results.json"), results)
  return results, one_step


def _prepare(config) -> None:
  validate(config)
  distributed.initialize(config)
  dataset = pipeline.load(config.data)
  if jax.process_index() == 0:
    print(f"{dataset.name}: train {dataset.train.shape}, test {dataset.test.shape}", flush=True)


def run_single(config, workdir: str, mode: str):
  """Train, evaluate or sample one config in workdir; returns (results, one-step samples), or None when
  sampling, preparing, or when a preemption stopped training."""
  if mode == "prepare":
    return _prepare(config)
  run = _load(config, workdir)
  try:
    if mode != "train" and run.checkpointer.latest_step() is None:
      raise CheckpointError(f"--mode={mode} needs a checkpoint, and {workdir} has none: train first")
    if mode == "sample":
      return _sample(run)
    extra = {}
    if mode == "train":
      start, start_step = time.perf_counter(), run.step
      if not run.train():
        return None
      extra = {"train_seconds": round(time.perf_counter() - start, 1), "trained_steps": run.step - start_step}
    results, one_step = evaluate_and_save(run, extra)
    if jax.process_index() == 0:
      print(json.dumps(results, indent=2, sort_keys=True), flush=True)
      if config.task == "sudoku":
        print(report.sudoku_table({config.objective.name: results}), flush=True)
    return results, one_step
  finally:
    run.close()


def _sample(run: Run) -> None:
  key = jax.random.PRNGKey(run.config.eval.seed)
  for nfe in run.config.eval.nfes:
    samples = evaluation.generate(
      run.model, run.eval_params(), run.config, nfe, run.config.eval.num_samples, run.dataset.length, key
    )
    if jax.process_index() == 0:
      path = evaluation.write_samples(run.workdir, nfe, samples, run.dataset.decode)
      first = repr(run.dataset.decode(samples[0])) if run.dataset.decode else samples[:3].tolist()
      print(f"NFE {nfe}: {len(samples)} samples -> {path}; first: {first}", flush=True)


def run_compare(config, workdir: str, mode: str = "train") -> None:
  """Train (mode 'train') or only evaluate (mode 'eval') every run of a compare config, then print the
  comparison and draw it; mode 'prepare' only prepares every run's dataset."""
  for sub in config.runs.values():
    validate(sub)
  distributed.initialize(config)
  if mode == "prepare":
    for sub in config.runs.values():
      _prepare(sub)
    return
  results, one_step = {}, {}
  for name, sub in config.runs.items():
    if jax.process_index() == 0:
      print(f"=== {name} ===", flush=True)
    outcome = run_single(sub, os.path.join(workdir, name), mode)
    if outcome is None:  # preempted: the same command resumes this run and does the rest
      return
    results[name], one_step[name] = outcome
  _write_json(os.path.join(workdir, "comparison.json"), results)
  if jax.process_index() == 0 and all(sub.task == "sudoku" for sub in config.runs.values()):
    print(report.main([workdir]), flush=True)
    return
  if jax.process_index() == 0:
    print(report.comparison_table(results), flush=True)
    for dataset in sorted({r["dataset"] for r in results.values()}):
      panels = {
        f"{name.split('_')[-1].upper()}, NFE = 1": one_step[name]
        for name in results
        if results[name]["dataset"] == dataset and one_step[name] is not None
      }
      if panels:
        path = os.path.join(workdir, f"joint_nfe1_{dataset}.png")
        vocab_size = next(r["vocab_size"] for r in results.values() if r["dataset"] == dataset)
        evaluation.plot_joint(panels, vocab_size, path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step of their work at INFO
    tfds.display_progress_bar(False)
  config = FLAGS.config
  if config.get("task") == "compare":
    if FLAGS.mode == "sample":
      raise app.UsageError(
        "a compare config supports --mode=train, eval and prepare; sample its runs one by one"
      )
    run_compare(config, FLAGS.workdir, FLAGS.mode)
  else:
    run_single(config, FLAGS.workdir, FLAGS.mode)


def cli() -> None:
  """Entry point that turns input errors into one line on stderr and exit status 2."""
  try:
    app.run(main)
  except VMDError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  cli()
