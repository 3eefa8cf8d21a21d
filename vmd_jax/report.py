"""Tables from results.json files: `python -m vmd_jax.report DIR [DIR ...]` prints markdown tables.

Each DIR is a run's workdir (holding results.json) or a compare workdir (whose runs are its
subdirectories). Synthetic runs: two tables, sample quality (accuracy and KL at each NFE) and likelihood
(every bound, the entropy of the set, and the training loss). Sudoku runs: % of held-out puzzles solved
per decoder and NFE, and for an MDM and a VMD run the paired difference with its 95% interval. Text
runs: the bounds in bits per token and perplexity. The columns are those present in the results;
nothing is typed in.
"""

import json
import math
import os
import sys

import numpy as np


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
    dataset = result.get("dataset", "?")
    if result.get("block_size"):
      dataset += f", block {result['block_size']}"
    cells = [dataset, result.get("method", "?"), str(result.get("steps", "?"))]
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


def _sudoku_columns(results: dict[str, dict]) -> tuple[list[str], list[int]]:
  keys = set().union(*(r.keys() for r in results.values()))
  cells = [k.split("@") for k in keys if k.startswith("acc@") and k.count("@") == 2 and not k.endswith("_se")]
  decoders = sorted({decoder for _, decoder, _ in cells})
  nfes = sorted({int(nfe[3:]) for _, _, nfe in cells})
  return decoders, nfes


def sudoku_table(results: dict[str, dict]) -> str:
  """Markdown: % of held-out puzzles solved ± s.e., a row per (run, decoder), a column per NFE."""
  decoders, nfes = _sudoku_columns(results)
  lines = [
    "| method | decoder | steps | n_test | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
    "|" + "---|" * (4 + len(nfes)),
  ]
  for result in results.values():
    for decoder in decoders:
      cells = [
        result.get("method", "?"),
        decoder,
        str(result.get("steps", "?")),
        str(result.get("n_test", "?")),
      ]
      for nfe in nfes:
        key = f"acc@{decoder}@nfe{nfe}"
        cells.append(f"{result[key]:.1f} ± {result[key + '_se']:.1f}" if key in result else "-")
      lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def paired_difference(solved_a, solved_b) -> tuple[float, float]:
  """Mean of (b - a) over the same puzzles, in points of %, and the half-width of its 95% interval
  (normal approximation to the paired difference)."""
  diff = np.asarray(solved_b, float) - np.asarray(solved_a, float)  # [n] in {-1, 0, 1}
  half = 1.96 * diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
  return 100.0 * float(diff.mean()), 100.0 * float(half)


def _outcome(diff: float, half: float, name_a: str, name_b: str) -> str:
  if abs(diff) <= half:
    return "within the interval"
  return f"{name_b} better" if diff > 0 else f"{name_a} better"


def sudoku_difference_table(solved_a: dict, solved_b: dict, name_a: str, name_b: str) -> str:
  """Markdown: the paired difference name_b - name_a in % solved, with its 95% interval, for every
  decoder and NFE both runs evaluated (solved_*: {acc@<decoder>@nfe<N>: bool [n]})."""
  lines = [
    f"| decoder | NFE | {name_a} | {name_b} | {name_b} - {name_a} (95% CI) | outcome |",
    "|---|---|---|---|---|---|",
  ]
  keys = sorted(set(solved_a) & set(solved_b), key=lambda k: (k.split("@")[1], int(k.split("@nfe")[1])))
  for key in keys:
    a, b = solved_a[key], solved_b[key]
    if len(a) != len(b):
      raise ValueError(f"{key}: the runs evaluated different numbers of puzzles ({len(a)}, {len(b)})")
    diff, half = paired_difference(a, b)
    _, decoder, nfe = key.split("@")
    lines.append(
      f"| {decoder} | {nfe[3:]} | {100 * np.mean(a):.1f} | {100 * np.mean(b):.1f} | "
      f"{diff:+.1f} ± {half:.1f} | {_outcome(diff, half, name_a, name_b)} |"
    )
  return "\n".join(lines)


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


def load(directories: list[str]) -> dict[str, dict]:
  """{run name: results} from run workdirs and compare workdirs."""
  results = {}
  for name, directory in run_directories(directories).items():
    with open(os.path.join(directory, "results.json"), encoding="utf-8") as f:
      results[name] = json.load(f)
  return results


def _nfe_order(key: str) -> tuple[str, int]:
  """Sort key of a result name: its text before '@nfe', then N as a number (nfe8 before nfe16)."""
  head, _, tail = key.partition("@nfe")
  return head, int("".join(c for c in tail if c.isdigit()) or 0)


def text_table(results: dict[str, dict]) -> str:
  """Markdown: per text run, the bits-per-token bounds ± s.e. (bpc_bound first), the perplexity bound,
  the training loss and the sampler's tokens/s at NFE = length (one token a step)."""
  keys = set().union(*(r.keys() for r in results.values()))
  others = [k for k in keys if k.endswith("bits_per_token") and k != "nelbo_bits_per_token"]
  bounds = ["bpc_bound"] + sorted(others, key=_nfe_order)
  headers = [b.replace("_bits_per_token", "") for b in bounds]
  headers += ["ppl_bound", "loss (nats/token, not a bound)", "tokens/s, NFE = length"]
  lines = ["| method | block | steps | " + " | ".join(headers) + " |", "|" + "---|" * (3 + len(headers))]
  for result in results.values():
    cells = [result.get("method", "?"), str(result.get("block_size", 0)), str(result.get("steps", "?"))]
    cells += [_cell(result, c) for c in bounds + ["ppl_bound", "loss"]]
    speed = result.get(f"samples_tokens_per_s@nfe{result.get('length')}")
    cells.append("-" if speed is None else f"{speed:.0f}")
    lines.append("| " + " | ".join(cells) + " |")
  return (
    "Text: upper bounds on NLL in bits per token (per character at character level) ± standard error\n\n"
    + "\n".join(lines)
  )


def main(directories: list[str]) -> str:
  """The tables for the runs in directories: Sudoku accuracy (with the paired VMD - MDM difference
  when both runs of one comparison are there), the text bounds, or the synthetic sample and likelihood
  tables."""
  results = load(directories)
  if all("bpc_bound" in r for r in results.values()):
    return text_table(results)
  if not all("n_test" in r for r in results.values()):
    return comparison_table(results)
  text = sudoku_table(results)
  dirs = run_directories(directories)
  if {"mdm", "vmd"} <= set(dirs):
    solved = {}
    for name in ("mdm", "vmd"):
      with np.load(os.path.join(dirs[name], "sudoku_solved.npz")) as f:
        solved[name] = dict(f)
    text += "\n\n" + sudoku_difference_table(solved["mdm"], solved["vmd"], "MDM", "VMD")
  return text


if __name__ == "__main__":
  print(main(sys.argv[1:]))
