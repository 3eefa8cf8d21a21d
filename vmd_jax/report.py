"""Tables from results.json files: `python -m vmd_jax.report DIR [DIR ...]` prints a markdown table.

Each DIR is a run's workdir (holding results.json) or a compare workdir (holding comparison.json).
The columns are the synthetic metrics present in the results; nothing is typed in by hand.
"""

import json
import os
import sys


def _columns(results: dict[str, dict]) -> list[str]:
  keys = set().union(*(r.keys() for r in results.values()))
  nfes = sorted({int(k.split("@nfe")[1]) for k in keys if k.startswith("acc@nfe")})
  columns = [f"acc@nfe{n}" for n in nfes] + [f"kl@nfe{n}" for n in nfes]
  return columns + [k for k in ("nelbo_bits_per_token", "entropy_bits_per_token", "loss") if k in keys]


def _cell(result: dict, column: str) -> str:
  if column not in result:
    return "-"
  value = f"{result[column]:.3f}" if not column.startswith("acc") else f"{result[column]:.1f}"
  if column + "_se" in result:
    value += f" ± {result[column + '_se']:.3f}"
  return value


def comparison_table(results: dict[str, dict]) -> str:
  """Markdown table, one row per run: dataset, method, steps, then acc (%), KL (nats), bounds (bits)."""
  columns = _columns(results)
  lines = [
    "| dataset | method | steps | " + " | ".join(columns) + " |",
    "|" + "---|" * (3 + len(columns)),
  ]
  for result in results.values():
    cells = [result.get("dataset", "?"), result.get("method", "?"), str(result.get("steps", "?"))]
    lines.append("| " + " | ".join(cells + [_cell(result, c) for c in columns]) + " |")
  return "\n".join(lines)


def load(directories: list[str]) -> dict[str, dict]:
  """{run name: results} from run workdirs and compare workdirs."""
  results = {}
  for directory in directories:
    comparison = os.path.join(directory, "comparison.json")
    if os.path.exists(comparison):
      with open(comparison, encoding="utf-8") as f:
        results.update(json.load(f))
    else:
      with open(os.path.join(directory, "results.json"), encoding="utf-8") as f:
        results[os.path.basename(os.path.normpath(directory))] = json.load(f)
  return results


if __name__ == "__main__":
  print(comparison_table(load(sys.argv[1:])))
