"""Tasks: what a run is for, one module each, registered by name (see base.Task for the interface).

synthetic: the paper's token sets against their exact distributions; sequences: a user's .npy token
arrays; sudoku: clue-conditioned puzzle solving; text: text8 or a user's corpus with block diffusion.

Adding a task: write vmd_jax/tasks/<name>.py with a base.Task subclass (its name, the data.name values it
takes, its config fields, checks, evaluation and table), register it with `base.register`, import it
below, and add configs/<name>.py whose get_config starts from `base_config("<name>")`.
"""

import jax

from vmd_jax import defaults
from vmd_jax.model import check_length, check_nfes
from vmd_jax.tasks import base, sequences, sudoku, synthetic, text  # noqa: F401 - each registers itself
from vmd_jax.tasks.base import REGISTRY, Task, get


def base_config(task: str):
  """The library defaults (vmd_jax/defaults.py) with the task's own fields added and config.task set."""
  config = defaults.base_config()
  config.task = task
  get(task).add_defaults(config)
  return config


def fit_to_data(config, length: int) -> None:
  """Fill in, in place, eval.nfes from the task's default for the data's length when it is empty,
  and the stepwise objective's nfes from eval.nfes (each once under objective.step_draw 'step', whose
  draws already favour the larger T; otherwise each but the largest listed twice); check the model and
  every NFE against the length and the block count (ConfigError)."""
  if not config.eval.nfes:
    config.eval.nfes = get(config.task).default_nfes(length)
  blocks = check_length(config.model, length)
  check_nfes(config.eval.nfes, length, blocks)
  if config.objective.name == "stepwise":
    if not config.objective.nfes and config.objective.step_draw == "step":
      config.objective.nfes = tuple(sorted(set(config.eval.nfes)))
    elif not config.objective.nfes:  # the parallel step counts, where z carries the joint, twice as often
      largest = max(config.eval.nfes)
      config.objective.nfes = tuple(
        sorted(n for n in config.eval.nfes for _ in range(1 if n == largest else 2))
      )
    check_nfes(config.objective.nfes, length, blocks, field="objective.nfes")


def evaluate(run) -> dict:
  """Run the config's task evaluation on a trained trainer.Run: the flat results dict."""
  return get(run.config.task).evaluate(run, jax.random.PRNGKey(run.config.eval.seed))


__all__ = ["REGISTRY", "Task", "base_config", "evaluate", "get", "fit_to_data"]
