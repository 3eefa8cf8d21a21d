"""Markdown tables from results dicts: the cells and rows that every task's report shares.

A column is a results key; a value is printed with its standard error when the results hold
`<key>_se`. Columns are those present in the results: nothing is typed in.
"""

import numpy as np


def cell(result: dict, column: str) -> str:
  """One cell: '-' when absent, accuracies to 0.1, everything else to 0.001, with ' ± s.e.'."""
  if column not in result:
    return "-"
  value = f"{result[column]:.1f}" if column.startswith("acc") else f"{result[column]:.3f}"
  if column + "_se" in result:
    value += f" ± {result[column + '_se']:.3f}"
  return value


def keys(results: dict[str, dict]) -> set[str]:
  """Every key that any of the results has."""
  return set().union(*(r.keys() for r in results.values()))


def nfe_order(key: str) -> tuple[str, int]:
  """Sort key of a result name: its text before '@nfe', then N as a number (nfe8 before nfe16)."""
  head, _, tail = key.partition("@nfe")
  return head, int("".join(c for c in tail if c.isdigit()) or 0)


def seed_groups(results: dict[str, dict]) -> dict[tuple, list[dict]]:
  """The runs grouped by (dataset, block size, method, steps), in the order they come: runs that
  differ only in their seed share a group."""
  groups: dict[tuple, list[dict]] = {}
  for result in results.values():
    key = (
      result.get("dataset", "?"),
      result.get("block_size", 0),
      result.get("method", "?"),
      result.get("steps", "?"),
    )
    groups.setdefault(key, []).append(result)
  return groups


def seed_cell(group: list[dict], column: str) -> str:
  """One run's `cell`, or for several seeds the mean over them ± their standard deviation (the value
  alone where every seed has the same, like a set's entropy)."""
  values = [r[column] for r in group if column in r]
  if len(group) == 1 or not values:
    return cell(group[0], column)
  digits = 1 if column.startswith("acc") else 3
  mean = sum(values) / len(values)
  if all(v == values[0] for v in values):
    return f"{mean:.{digits}f}"
  spread = (sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5
  return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def run_table(results: dict[str, dict], columns: list[str], headers: list[str]) -> str:
  """A row per run: dataset (with its block size), method and steps, then the columns' cells. Runs
  that differ only in their seed share a row (`seed_groups`), with a `seeds` column: the mean over
  the seeds ± their standard deviation."""
  groups = seed_groups(results)
  several = any(len(group) > 1 for group in groups.values())
  head = ["dataset", "method", "steps"] + (["seeds"] if several else [])
  lines = ["| " + " | ".join(head + headers) + " |", "|" + "---|" * (len(head) + len(columns))]
  for (dataset, block_size, method, steps), group in groups.items():
    if block_size:
      dataset += f", block {block_size}"
    cells = [dataset, method, str(steps)] + ([str(len(group))] if several else [])
    lines.append("| " + " | ".join(cells + [seed_cell(group, c) for c in columns]) + " |")
  return "\n".join(lines)


def likelihood_table(results: dict[str, dict]) -> str:
  """Every bound (bits per token ± s.e.), the entropy where known, and the training loss."""
  present = keys(results)
  bounds = sorted(k for k in present if k.endswith("bits_per_token") and k != "entropy_bits_per_token")
  columns = bounds + [k for k in ("entropy_bits_per_token", "loss") if k in present]
  headers = [c.replace("_bits_per_token", "") for c in columns]
  headers[-1] = "loss (nats/token, not a bound)" if columns and columns[-1] == "loss" else headers[-1]
  several = [group for group in seed_groups(results).values() if len(group) > 1]
  note = ""
  if several:
    largest = max(r.get(c + "_se", 0.0) for group in several for r in group for c in bounds)
    note = (
      "\n\nRows over several seeds: the mean ± the standard deviation over the seeds (the largest"
      f" standard error of one run's bound in those rows: {largest:.3f})"
    )
  return (
    "Likelihood: upper bounds on NLL in bits per token ± standard error\n\n"
    + run_table(results, columns, headers)
    + note
    + bound_legend(results)
  )


def bound_legend(results: dict[str, dict]) -> str:
  """Which sampler each run's bounds belong to (`bound_sampler`, with `bound_notes` on how it differs
  from the run's own sampler), one line per distinct description: '' when no run names one."""
  groups: dict[str, list[str]] = {}
  for result in results.values():
    if "bound_sampler" in result:
      text = result["bound_sampler"] + (f" ({result['bound_notes']})" if result.get("bound_notes") else "")
      dataset = result.get("dataset", "?") + (
        f" (block {result['block_size']})" if result.get("block_size") else ""
      )
      name = f"{dataset} {result.get('method', '?')}"
      if name not in groups.setdefault(text, []):  # one name for the seeds of a row
        groups[text].append(name)
  if not groups:
    return ""
  lines = [f"- {', '.join(runs)}: {text}" for text, runs in groups.items()]
  return (
    "\n\nEach bound is that of the sampler named here (iwae: one token a step; nelbo@nfeN: N steps):\n"
    + "\n".join(lines)
  )


def paired_difference(a, b) -> tuple[float, float, int]:
  """Mean of b - a over the items both define (NaN: undefined), the half-width of its 95% interval
  (normal approximation to the paired difference) and the number of items paired."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"a paired difference needs as many items on both sides, got {a.shape} and {b.shape}")
  diff = (b - a)[~(np.isnan(a) | np.isnan(b))]
  half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
  return float(diff.mean()) if len(diff) else float("nan"), float(half), len(diff)
