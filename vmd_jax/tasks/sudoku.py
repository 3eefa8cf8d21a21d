"""Sudoku, clue-conditioned: the share of held-out puzzles solved, per decoder order and NFE.

Evaluation: for each order in eval.decoders and each NFE the share of the first eval.num_samples test
puzzles solved (`acc@<decoder>@nfe<N>`, with s.e.); sudoku_solved.npz holds the per-puzzle outcomes (for
paired comparisons between methods) and sudoku_grids.png a few grids of the first decoder at the
smallest NFE. The report gives, for an MDM and a VMD run, the paired difference with its 95% interval.
"""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from vmd_jax import evaluation, samplers, tables
from vmd_jax.data import sudoku
from vmd_jax.errors import ConfigError
from vmd_jax.tasks import base


def solve_puzzles(model, params, config, nfe: int, order: str, tokens, given, key) -> samplers.SampleResult:
  """Complete puzzles (solutions tokens [N, L] with the clue cells given [N, L]) with the nfe-step
  sampler of `order`; the non-clue cells start masked. Returns host arrays [N, L]."""
  sample = evaluation.sampler(model, config, nfe, order=order)
  parts = []
  for start in range(0, len(tokens), config.eval.batch_size):
    stop = start + config.eval.batch_size
    x_init = np.where(given[start:stop], tokens[start:stop], model.vocab_size).astype(np.int32)
    parts.append(jax.device_get(sample(params, jax.random.fold_in(key, start), jnp.asarray(x_init))))
  return samplers.SampleResult(*(np.concatenate(arrays) for arrays in zip(*parts, strict=True)))


def plot_sudoku(puzzles, grids, reveal_step, nfe: int, title: str, path: str) -> None:
  """A row of solved grids (digits [n, 81], 0 = blank in puzzles) with each filled cell coloured by the
  sampler step that revealed it; clues are white, wrong digits are red."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cmap = plt.get_cmap("viridis", nfe)
  fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.6), squeeze=False)
  for ax, puzzle, grid, steps in zip(axes[0], puzzles, grids, reveal_step, strict=True):
    colours = np.ones((9, 9, 4))
    filled = puzzle == 0
    colours.reshape(81, 4)[filled] = cmap(steps[filled] / max(nfe - 1, 1))
    ax.imshow(colours, alpha=0.55)
    solved = bool(sudoku.is_valid_solution(grid, puzzle))
    for cell in range(81):
      r, c = divmod(cell, 9)
      wrong = filled[cell] and not _digit_consistent(grid, cell)
      colour, weight = ("red" if wrong else "black"), ("normal" if filled[cell] else "bold")
      ax.text(c, r, str(grid[cell]), ha="center", va="center", fontsize=9, color=colour, weight=weight)
    for k in range(10):
      width = 2.0 if k % 3 == 0 else 0.5
      ax.axhline(k - 0.5, color="black", lw=width)
      ax.axvline(k - 0.5, color="black", lw=width)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("solved" if solved else "not solved", fontsize=10)
  fig.suptitle(f"{title}: colour = step that revealed the cell (0..{nfe - 1}); bold = clue")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _digit_consistent(grid, cell: int) -> bool:
  """Whether grid[cell]'s digit appears nowhere else in its row, column or box."""
  r, c = divmod(cell, 9)
  g = np.asarray(grid).reshape(9, 9)
  box = g[3 * (r // 3) : 3 * (r // 3) + 3, 3 * (c // 3) : 3 * (c // 3) + 3]
  digit = g[r, c]
  return (g[r] == digit).sum() == 1 and (g[:, c] == digit).sum() == 1 and (box == digit).sum() == 1


def _sudoku_columns(results: dict[str, dict]) -> tuple[list[str], list[int]]:
  keys = tables.keys(results)
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


class Sudoku(base.Task):
  """Puzzles solved by confidence-ordered decoding, for each decoder and NFE."""

  name = "sudoku"
  datasets = ("sudoku", "sudoku_file")

  def add_defaults(self, config) -> None:
    config.data.clues = 30  # clues left in each generated puzzle (17..80)
    config.data.difficulty = "singles"  # singles (solvable by singles) | beyond_singles | any
    config.data.base_train = 10_000  # distinct base puzzles behind the train split's symmetry copies
    config.eval.decoders = ("margin", "top_prob")  # the orders tabulated (the first one is drawn)

  def check_config(self, config) -> None:
    super().check_config(config)
    if config.model.block_size:
      raise ConfigError(
        f"model.block_size={config.model.block_size}: the sudoku task has no block diffusion (use 0)"
      )
    decoders = tuple(config.eval.decoders)
    if not decoders or any(d not in samplers.ORDERS for d in decoders):
      raise ConfigError(f"eval.decoders={decoders}: each must be one of {sorted(samplers.ORDERS)}")

  def evaluate(self, run, key) -> dict:
    """Every unit a permutation and the clues kept counts as solved."""
    config, model, dataset = run.config, run.model, run.dataset
    params = run.eval_params()
    n = min(config.eval.num_samples, len(dataset.test))
    tokens, given = dataset.test[:n], dataset.test_given[:n]
    puzzles = np.where(given, tokens + 1, 0)  # digits, 0 = blank
    results, solved_by_key = {"n_test": int(n), "steps": run.step}, {}
    for order in config.eval.decoders:
      for nfe in config.eval.nfes:
        out = solve_puzzles(model, params, config, nfe, order, tokens, given, jax.random.fold_in(key, nfe))
        solved = sudoku.is_valid_solution(out.tokens + 1, puzzles)  # [n]
        name = f"acc@{order}@nfe{nfe}"
        solved_by_key[name] = solved
        results[name] = 100.0 * float(solved.mean())
        results[name + "_se"] = 100.0 * float(solved.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        if jax.process_index() == 0 and order == config.eval.decoders[0] and nfe == min(config.eval.nfes):
          shown = slice(0, min(4, n))
          plot_sudoku(
            puzzles[shown],
            out.tokens[shown] + 1,
            out.reveal_step[shown],
            nfe,
            f"{config.objective.name}, {order}, NFE = {nfe}",
            os.path.join(run.workdir, "sudoku_grids.png"),
          )
    if jax.process_index() == 0:
      np.savez(os.path.join(run.workdir, "sudoku_solved.npz"), **solved_by_key)
    return results

  def solve(self, model, puzzles, nfe: int, order: str, seed: int) -> np.ndarray:
    """Digits [N, 81] (0 = blank) -> completed grids [N, 81]: the clues kept, the blanks filled by the
    nfe-step sampler with decoder `order`."""
    puzzles = np.asarray(puzzles)
    if puzzles.ndim != 2 or puzzles.shape[1] != sudoku.LENGTH or puzzles.min() < 0 or puzzles.max() > 9:
      raise ConfigError(f"puzzles must be digits 0..9 (0 = blank) of shape [N, 81], got {puzzles.shape}")
    given = puzzles > 0
    tokens = np.where(given, puzzles - 1, 0).astype(np.int32)
    key = jax.random.PRNGKey(seed)
    out = solve_puzzles(model.network, model.params, model.config, nfe, order, tokens, given, key)
    return out.tokens + 1

  def table(self, runs) -> str:
    results = {name: result for name, (result, _) in runs.items()}
    text = sudoku_table(results)
    by_method = {}
    for result, workdir in runs.values():
      by_method.setdefault(result.get("method"), []).append(workdir)
    if len(by_method.get("mdm", [])) == 1 and len(by_method.get("vmd", [])) == 1:
      solved = {}
      for method in ("mdm", "vmd"):
        with np.load(os.path.join(by_method[method][0], "sudoku_solved.npz")) as f:
          solved[method] = dict(f)
      text += "\n\n" + sudoku_difference_table(solved["mdm"], solved["vmd"], "MDM", "VMD")
    return text


TASK = base.register(Sudoku())
