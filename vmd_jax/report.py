"""Tables from results.json files: `python -m vmd_jax.report [--figures=OUT] [--split=S]
[--reference=METHOD] DIR [DIR ...]` prints markdown tables (and draws each task's figures into OUT).
--split=validation reads the evaluations on the validation split (results_validation.json, written
with eval.split=validation). --reference pairs the other Sudoku runs against the run whose method
(label) it names, instead of against MDM: a control against the run it controls.

Each DIR is a run's workdir (holding results.json) or a compare workdir (whose runs are its
subdirectories). The runs are grouped by the task their results name, and each task prints its own
tables (vmd_jax/tasks/<task>.py, `table`): synthetic sets, sample quality and likelihood; Sudoku, the
share of puzzles solved and the paired VMD - MDM difference; text, the bounds in bits per character.
"""

import json
import os
import sys

from vmd_jax import tasks
from vmd_jax.api import results_name


def run_directories(directories: list[str], split: str = "test") -> dict[str, str]:
  """{run name: run workdir} for run workdirs (holding results.json, or results_<split>.json) and for
  compare workdirs, whose runs are their subdirectories holding it."""
  name = results_name(split)
  runs = {}
  for directory in directories:
    if os.path.exists(os.path.join(directory, name)):
      runs[os.path.basename(os.path.normpath(directory))] = directory
      continue
    subs = sorted(d for d in os.listdir(directory) if os.path.exists(os.path.join(directory, d, name)))
    if not subs:
      raise FileNotFoundError(f"{directory} holds no {name}, in itself or in a subdirectory")
    runs.update({sub: os.path.join(directory, sub) for sub in subs})
  return runs


def load(directories: list[str], split: str = "test") -> dict[str, tuple[dict, str]]:
  """{run name: (results, workdir)} from run workdirs and compare workdirs."""
  runs = {}
  for name, directory in run_directories(directories, split).items():
    with open(os.path.join(directory, results_name(split)), encoding="utf-8") as f:
      runs[name] = (json.load(f), directory)
  return runs


def main(
  directories: list[str], figures: str | None = None, split: str = "test", reference: str | None = None
) -> str:
  """The tables of the runs in directories (their evaluations on `split`), a group per task in the
  order the runs come; with figures, each task's figures are drawn into that directory too. With
  reference (a run's method label), tasks that pair runs (Sudoku) pair the others against it instead
  of against MDM."""
  by_task: dict[str, dict] = {}
  for name, (results, directory) in load(directories, split).items():
    if "task" not in results:
      raise ValueError(f"{directory}/{results_name(split)} names no task: evaluate it again with --mode=eval")
    by_task.setdefault(results["task"], {})[name] = (results, directory)
  if figures:
    os.makedirs(figures, exist_ok=True)
    for task, runs in by_task.items():
      tasks.get(task).figures(runs, figures)
  if reference is not None:
    unpaired = sorted(task for task in by_task if not tasks.get(task).pairs_runs)
    if unpaired:
      raise ValueError(f"--reference: the tables of {unpaired} pair no runs")
    return "\n\n".join(tasks.get(task).table(runs, reference) for task, runs in by_task.items())
  return "\n\n".join(tasks.get(task).table(runs) for task, runs in by_task.items())


if __name__ == "__main__":
  args = sys.argv[1:]
  options = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.startswith("--") and "=" in a}
  unknown = sorted(set(options) - {"--figures", "--split", "--reference"})
  unknown += [a for a in args if a.startswith("--") and "=" not in a]
  usage = "[--figures=OUT] [--split=S] [--reference=METHOD] DIR [DIR ...]"
  if unknown:
    sys.exit(f"report: unknown option(s) {unknown}; usage: {usage}")
  directories = [a for a in args if not a.startswith("--")]
  try:
    split, reference = options.get("--split", "test"), options.get("--reference")
    print(main(directories, options.get("--figures"), split, reference))
  except ValueError as error:
    sys.exit(f"report: {error}")
