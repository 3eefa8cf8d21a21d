"""Sudoku, clue-conditioned: the share of held-out puzzles solved, per puzzle set, decoder and NFE.

Evaluation, on eval.split (test: the easy `test` and hard `test_hard` splits; validation: their
validation twins): for each set, each order in eval.decoders and each NFE, the share of the first
eval.num_samples puzzles solved (`acc<set>@<decoder>@nfe<N>`, set "" easy or "_hard", with s.e.) and the
share of valid rows, columns and boxes in the grids left unsolved (`units<set>@...`). sudoku_solved.npz
holds the per-puzzle outcomes (for paired comparisons between methods) and sudoku_grids[_hard].png a few
grids of the first decoder at the smallest NFE; on the validation split these files, like the results,
carry a `_validation` suffix, so a test evaluation is never overwritten. The report gives every latent
method's paired difference from an MDM run with its 95% interval, and figures() draws % solved
against NFE.
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


# evaluation set -> the prefix of its results keys ("acc<prefix>@<decoder>@nfe<N>"); per eval.split,
# the splits they read. A puzzle file's held-out share is the "easy" set (the tables call it "file").
SETS = {"easy": "", "hard": "_hard"}
SET_SPLITS = {"test": {"easy": "test", "hard": "test_hard"}}
SET_SPLITS["validation"] = {"easy": "validation", "hard": "validation_hard"}


def _solved_name(split: str) -> str:
  return f"sudoku_solved{base.split_suffix(split)}.npz"


def _cells(results: dict[str, dict], metric: str = "acc"):
  """(set, decoder, nfe) of every `<metric><prefix>@<decoder>@nfe<N>` key in results, sorted."""
  prefixes = {metric + prefix: name for name, prefix in SETS.items()}
  cells = set()
  for key in tables.keys(results):
    parts = key.split("@")
    if len(parts) == 3 and parts[0] in prefixes and parts[2].startswith("nfe") and not key.endswith("_se"):
      cells.add((prefixes[parts[0]], parts[1], int(parts[2][3:])))
  order = list(SETS)
  return sorted(cells, key=lambda c: (order.index(c[0]), c[1], c[2]))


def sudoku_table(results: dict[str, dict]) -> str:
  """Markdown: % of held-out puzzles solved ± s.e., a row per (run, puzzle set, decoder), a column per
  NFE; then the % of rows, columns and boxes that are valid in the grids left unsolved."""
  cells = _cells(results)
  nfes = sorted({nfe for _, _, nfe in cells})
  rows = sorted({(name, decoder) for name, decoder, _ in cells}, key=lambda r: (list(SETS).index(r[0]), r[1]))
  head = "| method | puzzles | decoder | steps | n | " + " | ".join(f"NFE {n}" for n in nfes) + " |"
  rule = "|" + "---|" * (5 + len(nfes))
  parts = []
  for metric, title in (("acc", "% solved"), ("units", "% valid units in unsolved grids")):
    lines = [title, "", head, rule]
    for result in results.values():
      for name, decoder in rows:
        prefix = SETS[name]
        n = result.get("n_test" + prefix, "?")
        shown = "file" if name == "easy" and result.get("dataset") == "sudoku_file" else name
        cells_ = [result.get("method", "?"), shown, decoder, str(result.get("steps", "?")), str(n)]
        for nfe in nfes:
          key = f"{metric}{prefix}@{decoder}@nfe{nfe}"
          value = result.get(key)
          if value is None:
            cells_.append("-")
          elif metric == "acc":
            cells_.append(f"{value:.1f} ± {result[key + '_se']:.1f}")
          else:
            cells_.append("-" if math.isnan(value) else f"{value:.1f}")
        lines.append("| " + " | ".join(cells_) + " |")
    parts.append("\n".join(lines))
  return "\n\n".join(parts)


def paired_difference(solved_a, solved_b) -> tuple[float, float]:
  """Mean of (b - a) over the same puzzles, in points of %, and the half-width of its 95% interval
  (tables.paired_difference of the outcomes)."""
  diff, half, _ = tables.paired_difference(solved_a, solved_b)
  return 100.0 * diff, 100.0 * half


def _outcome(diff: float, half: float, name_a: str, name_b: str) -> str:
  if abs(diff) <= half:
    return "within the interval"
  return f"{name_b} better" if diff > 0 else f"{name_a} better"


def sudoku_difference_table(solved_a: dict, solved_b: dict, name_a: str, name_b: str) -> str:
  """Markdown: the paired difference name_b - name_a in % solved, with its 95% interval, for every
  puzzle set, decoder and NFE both runs evaluated (solved_*: {acc<prefix>@<decoder>@nfe<N>: bool [n]})."""
  lines = [
    f"| puzzles | decoder | NFE | {name_a} | {name_b} | {name_b} - {name_a} (95% CI) | outcome |",
    "|---|---|---|---|---|---|---|",
  ]
  both = {k: None for k in set(solved_a) & set(solved_b)}
  for name, decoder, nfe in _cells({"a": both}):
    key = f"acc{SETS[name]}@{decoder}@nfe{nfe}"
    a, b = solved_a[key], solved_b[key]
    if len(a) != len(b):
      raise ValueError(f"{key}: the runs evaluated different numbers of puzzles ({len(a)}, {len(b)})")
    diff, half = paired_difference(a, b)
    lines.append(
      f"| {name} | {decoder} | {nfe} | {100 * np.mean(a):.1f} | {100 * np.mean(b):.1f} | "
      f"{diff:+.1f} ± {half:.1f} | {_outcome(diff, half, name_a, name_b)} |"
    )
  return "\n".join(lines)


def plot_accuracy(results: dict[str, dict], path: str) -> None:
  """% solved against NFE: a panel per puzzle set, a line per (run, decoder), 95% intervals as bars."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cells = _cells(results)
  names = [name for name in SETS if any(c[0] == name for c in cells)]
  fig, axes = plt.subplots(1, len(names), figsize=(5.0 * len(names), 3.8), squeeze=False)
  styles = {"margin": "-", "top_prob": "--", "random": ":"}
  for ax, name in zip(axes[0], names, strict=True):
    prefix = SETS[name]
    for run, result in results.items():
      for decoder in sorted({d for s, d, _ in cells if s == name}):
        nfes = sorted(
          n for s, d, n in cells if s == name and d == decoder and f"acc{prefix}@{d}@nfe{n}" in result
        )
        if not nfes:
          continue
        keys = [f"acc{prefix}@{decoder}@nfe{n}" for n in nfes]
        ax.errorbar(
          nfes,
          [result[k] for k in keys],
          yerr=[1.96 * result[k + "_se"] for k in keys],
          ls=styles.get(decoder, "-."),
          marker="o",
          ms=4,
          capsize=2,
          label=f"{result.get('method', run)}, {decoder}",
        )
    n = next((r.get("n_test" + prefix) for r in results.values() if r.get("n_test" + prefix)), "?")
    ax.set(xscale="log", xlabel="NFE (sampler steps)", ylabel="% solved", ylim=(0, 100))
    ax.set_title(f"{name} puzzles (n = {n})")
    nfe_ticks = sorted({c[2] for c in cells})
    ax.set_xticks(nfe_ticks, [str(t) for t in nfe_ticks])
    ax.set_xticks([], minor=True)  # the log axis's own minor labels (6x10^0, ...) would crowd the NFEs
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


class Sudoku(base.Task):
  """Puzzles solved by confidence-ordered decoding, for each decoder and NFE."""

  name = "sudoku"
  datasets = ("sudoku", "sudoku_file")

  def add_defaults(self, config) -> None:
    config.data.clues = 30  # clues left in each generated puzzle (17..80)
    config.data.difficulty = "singles"  # singles (solvable by singles) | beyond_singles | any
    config.data.base_train = 10_000  # distinct base puzzles behind the train split's symmetry copies
    # the hard side: this share of the training base puzzles are hard (beyond singles, a clue count
    # drawn from hard_clues), and a hard test set of num_hard_test base puzzles; num_validation easy
    # (and hard) puzzles held out from base puzzles of their own, for choosing recipes
    config.data.hard_fraction = 0.0
    config.data.hard_clues = (24, 26)
    config.data.num_hard_test = 0
    config.data.num_validation = 0
    config.eval.decoders = ("margin", "top_prob")  # the orders tabulated (the first one is drawn)
    config.eval.split = "test"  # the puzzles evaluated: test (test, test_hard) | validation

  def check_config(self, config) -> None:
    super().check_config(config)
    if config.model.block_size:
      raise ConfigError(
        f"model.block_size={config.model.block_size}: the sudoku task has no block diffusion (use 0)"
      )
    decoders = tuple(config.eval.decoders)
    if not decoders or any(d not in samplers.ORDERS for d in decoders):
      raise ConfigError(f"eval.decoders={decoders}: each must be one of {sorted(samplers.ORDERS)}")
    if config.eval.split not in SET_SPLITS:
      raise ConfigError(f"eval.split={config.eval.split!r}: choose one of {sorted(SET_SPLITS)}")

  def eval_sets(self, config, dataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{set name: (tokens, given) [n, 81]} of eval.split: the easy set and, where the data has one, the
    hard set; the first eval.num_samples of each."""
    arrays = {"test": {"tokens": dataset.test, "given": dataset.test_given}, **dataset.splits}
    sets = {}
    for name, split in SET_SPLITS[config.eval.split].items():
      if split in arrays:
        n = min(config.eval.num_samples, len(arrays[split]["tokens"]))
        sets[name] = (arrays[split]["tokens"][:n], arrays[split]["given"][:n])
    if "easy" not in sets:
      raise ConfigError(
        f"eval.split={config.eval.split!r}: the dataset has no {SET_SPLITS[config.eval.split]['easy']!r}"
        " split (set data.num_validation for a generated one)"
      )
    return sets

  def evaluate(self, run, key) -> dict:
    """Every unit a permutation and the clues kept counts as solved; units@... is the % of the 27 units
    that are valid in the grids left unsolved (NaN when all were solved)."""
    config, model = run.config, run.model
    params = run.eval_params()
    results, solved_by_key = {"steps": run.step, "eval_split": config.eval.split}, {}
    for set_name, (tokens, given) in self.eval_sets(config, run.dataset).items():
      prefix, n = SETS[set_name], len(tokens)
      results["n_test" + prefix] = int(n)
      puzzles = np.where(given, tokens + 1, 0)  # digits, 0 = blank
      for order in config.eval.decoders:
        for nfe in config.eval.nfes:
          out = solve_puzzles(model, params, config, nfe, order, tokens, given, jax.random.fold_in(key, nfe))
          solved = sudoku.is_valid_solution(out.tokens + 1, puzzles)  # [n]
          name = f"acc{prefix}@{order}@nfe{nfe}"
          solved_by_key[name] = solved
          results[name] = 100.0 * float(solved.mean())
          results[name + "_se"] = 100.0 * float(solved.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
          units = sudoku.valid_units(out.tokens[~solved] + 1)  # [unsolved, 27]
          results[f"units{prefix}@{order}@nfe{nfe}"] = 100.0 * float(units.mean()) if units.size else math.nan
          first = order == config.eval.decoders[0] and nfe == min(config.eval.nfes)
          if jax.process_index() == 0 and first:
            shown = slice(0, min(4, n))
            plot_sudoku(
              puzzles[shown],
              out.tokens[shown] + 1,
              out.reveal_step[shown],
              nfe,
              f"{config.label or config.objective.name} ({set_name}), {order}, NFE = {nfe}",
              os.path.join(run.workdir, f"sudoku_grids{prefix}{base.split_suffix(config.eval.split)}.png"),
            )
    if jax.process_index() == 0:
      np.savez(os.path.join(run.workdir, _solved_name(config.eval.split)), **solved_by_key)
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

  pairs_runs = True

  def table(self, runs, reference: str | None = None) -> str:
    """The tables of every run, then each other method's paired difference from the one run whose
    method is `reference` (default mdm; without such a run, the tables alone). A named reference that
    no single run has is an error."""
    results = {name: result for name, (result, _) in runs.items()}
    text = sudoku_table(results)
    by_method = {}
    for result, workdir in runs.values():
      by_method.setdefault(result.get("method"), []).append(workdir)
    base_method = "mdm" if reference is None else reference
    if len(by_method.get(base_method, [])) != 1:
      if reference is None:
        return text
      raise ValueError(
        f"reference {reference!r} must be the method of exactly one run; the runs' methods: "
        f"{sorted(str(m) for m in by_method)}"
      )
    split = next(iter(runs.values()))[0].get("eval_split", "test")
    with np.load(os.path.join(by_method[base_method][0], _solved_name(split))) as f:
      base_solved = dict(f)
    base_name = str(base_method).upper()
    for method, workdirs in by_method.items():  # each other method of one run against the reference
      if method == base_method or len(workdirs) != 1:
        continue
      with np.load(os.path.join(workdirs[0], _solved_name(split))) as f:
        solved = dict(f)
      text += "\n\n" + sudoku_difference_table(base_solved, solved, base_name, str(method).upper())
    return text

  def figures(self, runs, directory: str) -> list[str]:
    """sudoku_nfe.png: % solved against NFE for every run, decoder and puzzle set."""
    results = {name: result for name, (result, _) in runs.items()}
    if not _cells(results):
      return []
    path = os.path.join(directory, "sudoku_nfe.png")
    plot_accuracy(results, path)
    return [path]


TASK = base.register(Sudoku())
