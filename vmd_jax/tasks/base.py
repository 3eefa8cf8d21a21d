"""The interface every task implements, and the registry that the rest of the library dispatches through.

A task is what a run is for: its datasets, the config fields and checks of its own, its evaluation
(the results dict written to results.json), its rows in the report tables and its figures. Training is
the same for every task. Nothing outside vmd_jax/tasks/ asks which task a run belongs to: it calls
`get(config.task)` and the methods below.
"""

from vmd_jax.errors import ConfigError


class Task:
  """Base class of a task; subclasses set `name` and `datasets` and override what they need.

  runs, where a method takes it, maps a run's name to (results dict, workdir), for the runs of this
  task that a report or a comparison shows together.
  """

  name: str = ""
  datasets: tuple[str, ...] = ()  # the data.name values this task accepts

  def add_defaults(self, config) -> None:
    """Add this task's own config fields, with their defaults, to a base config (in place)."""

  def check_config(self, config) -> None:
    """Raise ConfigError, naming the field, for a config this task cannot run."""
    if config.data.name not in self.datasets:
      raise ConfigError(
        f"task={self.name!r} and data.name={config.data.name!r}: the {self.name} task takes the "
        f"datasets {', '.join(self.datasets)}"
      )

  def default_nfes(self, length: int) -> tuple[int, ...]:
    """The NFEs evaluated when eval.nfes is empty, for data of this length."""
    return tuple(sorted({1, length}))

  def evaluate(self, run, key) -> dict:
    """Evaluate a trained trainer.Run with PRNG key `key`: the flat results dict (also writes the
    run's samples and pictures into run.workdir, on process 0)."""
    raise NotImplementedError

  def solve(self, model, puzzles, nfe: int, order: str, seed: int):
    """Complete puzzles with a trained api.Model (tasks that pose puzzles only)."""
    del model, puzzles, nfe, order, seed
    raise ConfigError(f"the {self.name} task has no puzzles to solve")

  # whether table() takes `reference`: the method that the other runs are paired against
  pairs_runs = False

  def table(self, runs: dict[str, tuple[dict, str]]) -> str:
    """The markdown tables of these runs."""
    raise NotImplementedError

  def figures(self, runs: dict[str, tuple[dict, str]], directory: str) -> list[str]:
    """Draw the figures that compare these runs into `directory`; returns their paths."""
    del runs, directory
    return []


REGISTRY: dict[str, Task] = {}


def split_suffix(split: str) -> str:
  """The suffix of an evaluation's file names (results, per-item outcomes, pictures): none for the
  test split, _<split> for another (eval.split), so that a validation evaluation never overwrites the
  test split's files."""
  return "" if split == "test" else f"_{split}"


def register(task: Task) -> Task:
  """Add a task to the registry under its name."""
  if task.name in REGISTRY:
    raise ValueError(f"task {task.name!r} is registered twice")
  REGISTRY[task.name] = task
  return task


def get(name: str) -> Task:
  """The registered task of this name; ConfigError naming the choices otherwise."""
  if name not in REGISTRY:
    raise ConfigError(f"task={name!r}: choose one of {sorted(REGISTRY)}")
  return REGISTRY[name]
