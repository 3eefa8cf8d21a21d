"""Checking a whole config before anything runs: each section by the module that reads it.

objectives checks config.objective (its registry of objectives and the schedules'), model config.model
(dtypes included), trainer config.train, evaluation config.eval (through the samplers' options), and
the task registry config.task, then the task itself its datasets and its own fields. Checks that need
the data (lengths, NFEs) or the devices (batch against device count) happen once those are known.
"""

from vmd_jax import evaluation, model, objectives, tasks, trainer
from vmd_jax.errors import ConfigError


def validate(config) -> None:
  """Raise ConfigError, naming the field, for values no run could use."""
  task = tasks.get(config.task)
  objectives.check_config(config.objective)
  has_latent = objectives.needs_latent(config.objective.name)
  model.check_config(config.model, has_latent)
  if config.model.time_input == "end" and config.objective.name != "stepwise":
    raise ConfigError(
      "model.time_input='end': only the stepwise objective trains a denoiser on the time a step ends to"
    )
  trainer.check_config(config.train)
  evaluation.check_config(config.eval, config.model.latent_dim > 0)
  task.check_config(config)
