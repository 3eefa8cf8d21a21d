"""Tables from results.json files: `python -m vmd_jax.report DIR [DIR ...]` prints markdown tables.

Each DIR is a run's workdir (holding results.json) or a compare workdir (holding comparison.json).
Two tables: sample quality (accuracy and KL at each NFE) and likelihood (every bound, the entropy of
the set, and the training loss). The columns are those present in the results; nothing is typed in.
"""

import json
import os
import sys


def _nfes(results: dict[str, dict]) -> list[int]:
  keys = set().union(*(r.keys() for r in results.values()))
  return sorted({int(k.split("@nfe")[1]) for k in keys if k.startswith("acc@nfe")})


def _bound_columns(results: dict[str, dict]) -> list[str]:
  keys = set().union(*(r.keys() for r in results.values()))
  bounds = sorted(k for k in keys if k.endswith("bits_per_token") and k != "entropy_bits_per_token")
  return bounds + [k for k in ("entropy_bits_per_token", "loss") if k in keys]


def _cell(result: dict, column: str) -> str:
  if column not in result:
    return "-"
  value = f"{result[column]:.1f}" if column.startswith("acc") else f"{result[column]:.3f}"
  if column + "_se" in result:
    value += f" ± {result[column + '_se']:.3f}"
  return value


def _table(results: dict[str, dict], columns: list[str], headers: list[str]) -> str:
  lines = ["| dataset | method | steps | " + " | ".join(headers) + " |", "|" + "---|" * (3 + len(columns))]
  for result in results.values():
    cells = [result.get("dataset", "?"), result.get("method", "?"), str(result.get("steps", "?"))]
    lines.append("| " + " | ".join(cells + [_cell(result, c) for c in columns]) + " |")
  return "\n".join(lines)


def comparison_table(results: dict[str, dict]) -> str:
  """Markdown: acc (%) and KL (nats) per NFE; then bounds (bits per token ± s.e.), entropy and loss."""
  nfes = _nfes(results)
  quality = [f"acc@nfe{n}" for n in nfes] + [f"kl@nfe{n}" for n in nfes]
  bounds = _bound_columns(results)
  headers = [c.replace("_bits_per_token", "") for c in bounds]
  headers[-1] = "loss (nats/token, not a bound)" if bounds and bounds[-1] == "loss" else headers[-1]
  return (
    "Samples: acc (% inside the support) and KL (nats)\n\n"
    + _table(results, quality, quality)
    + "\n\nLikelihood: upper bounds on NLL in bits per token ± standard error\n\n"
    + _table(results, bounds, headers)
  )


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
