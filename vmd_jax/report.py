"""Tables from results.json files: `python -m vmd_jax.report [--figures=OUT] DIR [DIR ...]` prints
markdown tables (and draws each task's figures into OUT).

Each DIR is a run's workdir (holding results.json) or a compare workdir (whose runs are its
subdirectories). The runs are grouped by the task their results name, and each task prints its own
tables (vmd_jax/tasks/<task>.py, `table`): synthetic sets, sample quality and likelihood; Sudoku, the
share of puzzles solved and the paired VMD - MDM difference; text, the bounds in bits per character.
"""

import json
import os
import sys

from vmd_jax import tasks


def run_directories(directories: list[str]) -> dict[str, str]:
  """{run name: run workdir} for run workdirs (holding results.json) and for compare workdirs, whose
  runs are their subdirectories holding results.json."""
  runs = {}
  for directory in directories:
    if os.path.exists(os.path.join(directory, "results.json")):
      runs[os.path.basename(os.path.normpath(directory))] = directory
      continue
    subs = sorted(
      d for d in os.listdir(directory) if os.path.exists(os.path.join(directory, d, "results.json"))
    )
    if not subs:
      raise FileNotFoundError(f"{directory} holds no results.json, in itself or in a subdirectory")
    runs.update({sub: os.path.join(directory, sub) for sub in subs})
  return runs


def load(directories: list[str]) -> dict[str, tuple[dict, str]]:
  """{run name: (results, workdir)} from run workdirs and compare workdirs."""
  runs = {}
  for name, directory in run_directories(directories).items():
    with open(os.path.join(directory, "results.json"), encoding="utf-8") as f:
      runs[name] = (json.load(f), directory)
  return runs


def main(directories: list[str], figures: str | None = None) -> str:
  """The tables of the runs in directories, a group per task in the order the runs come; with
  figures, each task's figures are drawn into that directory too."""
  by_task: dict[str, dict] = {}
  for name, (results, directory) in load(directories).items():
    if "task" not in results:
      raise ValueError(f"{directory}/results.json names no task: evaluate it again with --mode=eval")
    by_task.setdefault(results["task"], {})[name] = (results, directory)
  if figures:
    os.makedirs(figures, exist_ok=True)
    for task, runs in by_task.items():
      tasks.get(task).figures(runs, figures)
  return "\n\n".join(tasks.get(task).table(runs) for task, runs in by_task.items())


if __name__ == "__main__":
  args = sys.argv[1:]
  out = next((a.split("=", 1)[1] for a in args if a.startswith("--figures=")), None)
  print(main([a for a in args if not a.startswith("--figures=")], out))
