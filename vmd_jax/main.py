"""Command line: `python -m vmd_jax.main --config=configs/<file>.py[:<arg>] --workdir=DIR [--mode=...]`.

train (default): train to config.train.steps (resuming from DIR's checkpoint if any), evaluate, and
  write DIR/results.json (results_validation.json for a task's eval.split=validation); train_only:
  train without evaluating (evaluate later with eval); eval: evaluate the latest checkpoint; sample:
  write samples at each eval NFE; prepare: only generate (or convert) the dataset, so that runs started
  side by side find it ready.
A compare config (configs/compare.py, the default, or configs/sudoku.py:compare) trains and evaluates
each of its runs in DIR/<run> (or, with --mode=eval, evaluates their checkpoints), prints its task's
tables and draws its figures. The terminal gets the progress lines and the tables; the results go to
the files. Problems with the input (flags, config files, config values, data files, checkpoints) are
reported as one line on stderr with exit status 2, before anything is written; so is a non-finite
loss, which stops training with the last good checkpoint kept. SIGTERM (a preemption) saves a
checkpoint and exits with status 3 (PREEMPTED_STATUS), so that a script or a job that goes on to the
next command sees the run unfinished; the same command resumes.

With several processes (config.jax_distributed) every process runs this same command: each trains on
its own share of every batch, and each evaluates on its own devices with the same seeds, so that only
process 0 needs to write results, samples and pictures.
"""

import importlib.util
import os
import sys

import jax
import tensorflow_datasets as tfds
from absl import app, flags, logging
from ml_collections import config_flags

from vmd_jax import api, distributed, evaluation, tasks
from vmd_jax.errors import CheckpointError, ConfigError, VMDError
from vmd_jax.trainer import Run
from vmd_jax.validation import validate

DEFAULT_CONFIG = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "compare.py"
)

config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Experiment config file[:arg].", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results and pictures.")
flags.DEFINE_enum(
  "mode", "train", ["train", "train_only", "eval", "sample", "prepare"], "What to do with the config."
)
FLAGS = flags.FLAGS
PREEMPTED_STATUS = 3  # the exit status after SIGTERM stopped training: run the same command to resume


class Preempted(Exception):
  """SIGTERM stopped training after saving a checkpoint; the trainer has said so."""


def _print(text: str) -> None:
  if jax.process_index() == 0:
    print(text, flush=True)


def _restored_run(config, workdir: str, mode: str) -> Run:
  """The run of workdir's checkpoint (CheckpointError when there is none)."""
  run = Run(config, workdir, api.prepare(config), evaluate_only=True)
  if run.checkpointer.latest_step() is None:
    run.close()
    raise CheckpointError(f"--mode={mode} needs a checkpoint, and {workdir} has none: train first")
  return run


def _sample(config, workdir: str) -> None:
  run = _restored_run(config, workdir, "sample")
  try:
    model = api.Model(run)
    for nfe in config.eval.nfes:
      samples = model.sample(config.eval.num_samples, nfe, seed=config.eval.seed)
      if jax.process_index() == 0:
        path = evaluation.write_samples(workdir, nfe, samples, run.dataset.decode)
        first = repr(run.dataset.decode(samples[0])) if run.dataset.decode else samples[:3].tolist()
        print(f"NFE {nfe}: {len(samples)} samples -> {path}; first: {first}", flush=True)
  finally:
    run.close()


def run_single(config, workdir: str, mode: str) -> dict | None:
  """Train (and evaluate), evaluate, sample or prepare one config in workdir. Returns the results of
  train and eval (an empty dict for train_only), None when sampling or preparing; raises Preempted when
  SIGTERM stopped training."""
  if mode == "prepare":
    dataset = api.prepare(config)
    _print(f"{dataset.name}: train {dataset.train.shape}, test {dataset.test.shape}")
    return None
  if mode == "sample":
    return _sample(config, workdir)
  if mode in ("train", "train_only"):
    model = api.train(config, workdir, evaluate_after=mode == "train")
    if model is None:
      raise Preempted(workdir)
    return model.results if mode == "train" else {}
  run = _restored_run(config, workdir, mode)
  try:
    return api.evaluate(run)
  finally:
    run.close()


def run_compare(config, workdir: str, mode: str = "train") -> None:
  """Train (mode 'train') or only evaluate (mode 'eval') every run of a compare config, or only
  train them (mode 'train_only') or prepare their datasets (mode 'prepare'); then, unless only trained
  or prepared, print the task's tables and draw its figures."""
  for sub in config.runs.values():
    validate(sub)
  task_names = {sub.task for sub in config.runs.values()}
  if len(task_names) != 1:
    raise ConfigError(f"the runs of a compare config must share one task, not {sorted(task_names)}")
  task = tasks.get(task_names.pop())
  distributed.initialize(config)
  runs = {}
  for name, sub in config.runs.items():
    if mode != "prepare":
      _print(f"=== {name} ===")
    run_dir = os.path.join(workdir, name)
    results = run_single(sub, run_dir, mode)  # Preempted: the same command resumes this run and the rest
    runs[name] = (results, run_dir)
  if mode in ("prepare", "train_only"):
    return
  api.write_json(os.path.join(workdir, "comparison.json"), {name: r for name, (r, _) in runs.items()})
  if jax.process_index() == 0:
    print(task.table(runs), flush=True)
    task.figures(runs, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.workdir:
    raise ConfigError("--workdir is required")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step of their work at INFO
    tfds.display_progress_bar(False)
  config = FLAGS.config
  if config.get("task") == "compare":
    if FLAGS.mode == "sample":
      raise ConfigError(
        "a compare config supports --mode=train, eval and prepare; sample its runs one by one"
      )
    run_compare(config, FLAGS.workdir, FLAGS.mode)
    return
  results = run_single(config, FLAGS.workdir, FLAGS.mode)
  if results:  # None: sampled or prepared; {}: trained only
    name = os.path.basename(os.path.normpath(FLAGS.workdir))
    _print(tasks.get(config.task).table({name: (results, FLAGS.workdir)}))


def _one_line(error: BaseException) -> str:
  text = " ".join(str(error).split())
  return text or type(error).__name__


def _config_field_missing(config, name: str) -> bool:
  node = config
  for part in name.split("."):
    if not hasattr(node, "keys") or part not in node:
      return True
    node = node[part]
  return False


def _explain(argv: list[str], error: Exception) -> str:
  """One line naming what in the command is wrong: the config file, an unknown field, or the flag."""
  given = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
  config_arg = given[-1] if given else DEFAULT_CONFIG
  path, _, arg = config_arg.partition(":")
  if not os.path.isfile(path):
    return f"--config={config_arg}: no such config file {path!r}"
  try:
    spec = importlib.util.spec_from_file_location("vmd_jax_cli_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
  except Exception as e:  # noqa: BLE001 - the config file itself fails: that is the problem to report
    return f"--config={config_arg}: {type(e).__name__}: {_one_line(e)}"
  for flag in argv:
    name = flag[len("--config.") :].split("=", 1)[0] if flag.startswith("--config.") else None
    if name and _config_field_missing(config, name):
      return f"--config.{name}: {path} has no field {name!r}"
  return _one_line(error)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, the config file loaded and its overrides applied, that reports a bad flag,
  config file or override as one line with exit status 2."""
  try:
    rest = FLAGS(argv)
    FLAGS.config.get("task")  # a config file is loaded lazily: load it here, among the input checks
    return rest
  except VMDError:
    raise
  except Exception as e:  # noqa: BLE001 - everything here comes from the command line
    print(f"error: {_explain(argv, e)}", file=sys.stderr)
    sys.exit(2)


def command_status(argv: list[str]) -> int:
  """Run one command line in this process (absl's flags are global: one command at a time) and
  return its exit status, with the one-line error on stderr for input problems. For tests and
  scripts; `cli` is the entry point."""
  saved, sys.argv = sys.argv, list(argv)  # config_flags reads its overrides from sys.argv
  for name in [name for name in FLAGS if name.startswith("config.")]:  # a previous command's overrides
    delattr(FLAGS, name)
  FLAGS.unparse_flags()
  try:
    main(parse_flags(argv))
  except SystemExit as e:
    return e.code if isinstance(e.code, int) else 1
  except Preempted:
    return PREEMPTED_STATUS
  except VMDError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  finally:
    sys.argv = saved
  return 0


def cli() -> None:
  """Entry point that turns input errors into one line on stderr and exit status 2."""
  try:
    app.run(main, flags_parser=parse_flags)
  except Preempted:
    sys.exit(PREEMPTED_STATUS)
  except VMDError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  cli()
