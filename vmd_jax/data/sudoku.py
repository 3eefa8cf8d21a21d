"""Sudoku: a seeded generator of unique-solution puzzles, the symmetry group, a checker, and file loaders.

A grid is 81 ints in row-major order, digits 1..9 and 0 for a blank. As model data an example is
`tokens` (the solution, digit - 1, so the vocabulary is 0..8 and the mask id is 9) and `given` (the
clue cells, which are never masked and never changed by a sampler).

Generated puzzles (dataset 'sudoku'): base puzzles are made from a random full grid by removing clues in
a random order while the puzzle keeps a unique solution (and, for difficulty 'singles', stays solvable
by naked and hidden singles alone), down to the target clue count; difficulty 'beyond_singles' keeps
only puzzles that singles cannot finish. Each example is a base puzzle under a random element of the
Sudoku symmetry group (digit relabelling, row and column permutations within bands and stacks, band and
stack permutations, transpose), which keeps validity, uniqueness and the techniques needed. Train and
test come from base puzzles of disjoint seed streams, so a test puzzle is never a transformed training
puzzle (barring an astronomically unlikely coincidence of two random puzzles). The hard side (fields
hard_fraction, hard_clues, num_hard_test, num_validation): a share of the training base puzzles, a
'test_hard' split and a 'validation_hard' split are beyond singles with a clue count drawn from
hard_clues (removal stops there, or earlier where no clue can go); 'validation' holds puzzles like
'test'. Each split has a seed stream of its own.

Files (dataset 'sudoku_file', data.path): the format of Shah et al. 2024 (rows of 325 integers: the
number of givens, then 81 quadruples (row, col, value, strategy) with the givens first), as .npy or text,
or CSV rows 'puzzle,solution' of two 81-character strings ('0' or '.' for a blank; a header is allowed).
"""

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from vmd_jax.data.sequences import content_hash, split_sizes
from vmd_jax.data.synthetic import config_int, prepare_offline
from vmd_jax.errors import ConfigError, DataError

VOCAB_SIZE = 9  # digits 1..9 as tokens 0..8
LENGTH = 81
DIFFICULTIES = ("singles", "beyond_singles", "any")
_CHUNK = 100_000  # examples expanded at a time

_ALL = 0x1FF  # candidate bitmask: bit d-1 set when digit d is possible
_ROWS = [[9 * r + c for c in range(9)] for r in range(9)]
_COLS = [[9 * r + c for r in range(9)] for c in range(9)]
_BOXES = [
  [9 * (3 * br + r) + 3 * bc + c for r in range(3) for c in range(3)] for br in range(3) for bc in range(3)
]
_UNITS = _ROWS + _COLS + _BOXES
_PEERS = [sorted({p for unit in _UNITS if cell in unit for p in unit} - {cell}) for cell in range(81)]
_BIT_DIGIT = {1 << (d - 1): d for d in range(1, 10)}


# ----------------------------------------------------------------------------------------------------
# Solving: candidate bitmasks, propagation by singles, and counting solutions.


def _candidates(grid) -> list[int] | None:
  """Candidate bitmasks [81] of a grid with the givens placed, or None if two givens clash."""
  cands = [_ALL] * 81
  for cell, digit in enumerate(grid):
    if digit:
      bit = 1 << (int(digit) - 1)
      if not cands[cell] & bit:
        return None
      cands[cell] = bit
      for peer in _PEERS[cell]:
        cands[peer] &= ~bit
  return cands


def _propagate(cands: list[int]) -> bool:
  """Apply naked and hidden singles in place until nothing changes; False on a contradiction."""
  done = [False] * 81
  changed = True
  while changed:
    changed = False
    for cell in range(81):
      mask = cands[cell]
      if mask == 0:
        return False
      if not done[cell] and mask & (mask - 1) == 0:  # a single candidate: remove it from the peers
        done[cell] = True
        for peer in _PEERS[cell]:
          if cands[peer] & mask:
            cands[peer] &= ~mask
            if cands[peer] == 0:
              return False
            changed = True
    for unit in _UNITS:
      once = twice = 0
      for cell in unit:
        twice |= once & cands[cell]
        once |= cands[cell]
      if once != _ALL:
        return False  # some digit has no place in this unit
      hidden = once & ~twice  # digits with exactly one place in the unit
      if hidden:
        for cell in unit:
          mask = cands[cell] & hidden
          if mask and cands[cell] != mask:
            if mask & (mask - 1):
              return False  # two digits that each have only this cell
            cands[cell] = mask
            changed = True
  return True


def _solved(cands: list[int]) -> bool:
  return all(mask & (mask - 1) == 0 for mask in cands)


def _to_grid(cands: list[int]) -> np.ndarray:
  return np.array([_BIT_DIGIT[mask] for mask in cands], dtype=np.int8)


def _search(cands: list[int], limit: int, rng: np.random.Generator | None, found: list) -> None:
  """Depth-first search appending solutions (as candidate lists) to found, up to limit of them."""
  if not _propagate(cands):
    return
  open_cells = [(bin(mask).count("1"), cell) for cell, mask in enumerate(cands) if mask & (mask - 1)]
  if not open_cells:
    found.append(cands)
    return
  _, cell = min(open_cells)
  bits = [bit for bit in _BIT_DIGIT if cands[cell] & bit]
  if rng is not None:
    rng.shuffle(bits)
  for bit in bits:
    branch = list(cands)
    branch[cell] = bit
    _search(branch, limit, rng, found)
    if len(found) >= limit:
      return


def count_solutions(grid, limit: int = 2) -> int:
  """The number of completions of grid [81] (0 = blank), counted up to limit."""
  cands = _candidates(grid)
  if cands is None:
    return 0
  found: list = []
  _search(cands, limit, None, found)
  return len(found)


def solve(grid) -> np.ndarray | None:
  """A completion of grid [81] int8, or None when it has none."""
  cands = _candidates(grid)
  found: list = []
  if cands is not None:
    _search(cands, 1, None, found)
  return _to_grid(found[0]) if found else None


def solvable_by_singles(grid) -> bool:
  """Whether naked and hidden singles alone complete the grid (which also makes the solution unique)."""
  cands = _candidates(grid)
  return cands is not None and _propagate(cands) and _solved(cands)


def is_valid_solution(solution, puzzle=None) -> np.ndarray:
  """The checker: whether each grid [..., 81] has every row, column and box a permutation of 1..9 and
  keeps the clues of puzzle [..., 81] (0 = blank) when one is given. Returns bool [...]."""
  grids = np.asarray(solution).reshape(-1, 81).astype(np.int64)
  ok = np.ones(len(grids), bool)
  for unit in _UNITS:
    values = np.sort(grids[:, unit], axis=1)
    ok &= np.all(values == np.arange(1, 10), axis=1)
  if puzzle is not None:
    clues = np.broadcast_to(np.asarray(puzzle).reshape(-1, 81), grids.shape)
    ok &= np.all((clues == 0) | (clues == grids), axis=1)
  return ok.reshape(np.shape(solution)[:-1])


def valid_units(grids) -> np.ndarray:
  """Which of the 27 units (rows, then columns, then boxes) of each grid [..., 81] are a permutation of
  1..9: bool [..., 27]."""
  flat = np.asarray(grids).reshape(-1, 81).astype(np.int64)
  ok = np.stack([np.all(np.sort(flat[:, unit], axis=1) == np.arange(1, 10), axis=1) for unit in _UNITS], 1)
  return ok.reshape(np.shape(grids)[:-1] + (27,))


# ----------------------------------------------------------------------------------------------------
# Generation.


def random_solution(rng: np.random.Generator) -> np.ndarray:
  """A uniformly seeded random full grid [81] int8 (randomised depth-first search)."""
  found: list = []
  _search([_ALL] * 81, 1, rng, found)
  return _to_grid(found[0])


def make_puzzle(rng: np.random.Generator, clues: int, difficulty: str) -> tuple[np.ndarray, np.ndarray]:
  """(puzzle, solution), each [81] int8: a unique-solution puzzle with at least `clues` clues.

  Clues are removed in a random order while the puzzle stays unique (and singles-solvable for
  'singles'); removal stops at `clues`. 'beyond_singles' retries until singles cannot finish it.
  """
  if difficulty not in DIFFICULTIES:
    raise ConfigError(f"data.difficulty={difficulty!r}: choose one of {', '.join(DIFFICULTIES)}")
  if not 17 <= clues <= 80:
    raise ConfigError(f"data.clues={clues}: must be in 17..80 (no 9x9 Sudoku is unique below 17)")
  keep = solvable_by_singles if difficulty == "singles" else lambda grid: count_solutions(grid) == 1
  while True:
    solution = random_solution(rng)
    puzzle = solution.copy()
    remaining = 81
    for cell in rng.permutation(81):
      if remaining == clues:
        break
      digit, puzzle[cell] = puzzle[cell], 0
      if keep(puzzle):
        remaining -= 1
      else:
        puzzle[cell] = digit
    if difficulty != "beyond_singles" or not solvable_by_singles(puzzle):
      return puzzle, solution


def random_symmetries(rng: np.random.Generator, num: int) -> dict[str, np.ndarray]:
  """num random elements of the Sudoku symmetry group: rows [num, 9] and cols [num, 9] (a permutation
  of bands then of rows within each band; likewise stacks and columns), digits [num, 10] (0 fixed)
  and transpose [num] bool."""

  def lines():
    bands = np.argsort(rng.random((num, 3)), axis=1)  # [num, 3]
    within = np.argsort(rng.random((num, 3, 3)), axis=2)  # [num, band, 3]
    return (3 * bands[:, :, None] + np.take_along_axis(within, bands[:, :, None], axis=1)).reshape(num, 9)

  rows, cols = lines(), lines()
  digits = np.concatenate([np.zeros((num, 1), np.int64), 1 + np.argsort(rng.random((num, 9)), axis=1)], 1)
  return {"rows": rows, "cols": cols, "digits": digits, "transpose": rng.random(num) < 0.5}


def apply_symmetries(grids: np.ndarray, sym: dict[str, np.ndarray]) -> np.ndarray:
  """grids [num, 81] (0 = blank) under the symmetries sym (from random_symmetries): [num, 81]."""
  num = len(grids)
  g = grids.reshape(num, 9, 9)
  g = np.where(sym["transpose"][:, None, None], g.transpose(0, 2, 1), g)
  g = np.take_along_axis(g, sym["rows"][:, :, None], axis=1)
  g = np.take_along_axis(g, sym["cols"][:, None, :], axis=2)
  g = np.take_along_axis(sym["digits"], g.reshape(num, 81).astype(np.int64), axis=1)
  return g.astype(grids.dtype)


def make_base_puzzles(num: int, clues, difficulty: str, seed: int, stream: int):
  """num base puzzles and solutions [num, 81] int8 from the seed stream (seed, stream). clues: the
  target clue count, or (low, high) to draw each puzzle's target uniformly from low..high."""
  rng = np.random.default_rng([seed, stream])
  low, high = (clues, clues) if np.ndim(clues) == 0 else (int(clues[0]), int(clues[1]))
  # a single target draws nothing, so the puzzles of a fixed clue count are those of earlier releases
  targets = np.full(num, low) if low == high else rng.integers(low, high + 1, size=num)
  pairs = [make_puzzle(rng, int(target), difficulty) for target in targets]
  if not pairs:
    return np.zeros((0, LENGTH), np.int8), np.zeros((0, LENGTH), np.int8)
  return np.stack([p for p, _ in pairs]), np.stack([s for _, s in pairs])


def expand(puzzles: np.ndarray, solutions: np.ndarray, base: np.ndarray, rng: np.random.Generator):
  """Examples base puzzle base[i] under a fresh random symmetry each: (puzzles, solutions), each
  [len(base), 81] int8."""
  sym = random_symmetries(rng, len(base))
  return apply_symmetries(puzzles[base], sym), apply_symmetries(solutions[base], sym)


# ----------------------------------------------------------------------------------------------------
# Files.


def _grid_string(text: str, what: str, line: int) -> np.ndarray:
  text = text.strip()
  if len(text) != 81 or any(ch not in "0123456789." for ch in text):
    raise DataError(f"line {line}: the {what} must be 81 characters of 0-9 or '.', got {text[:90]!r}")
  return np.array([0 if ch == "." else int(ch) for ch in text], dtype=np.int8)


def read_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(puzzles, solutions) [N, 81] int8 from rows 'puzzle,solution'; a first row that is not two grids
  (a header) is skipped."""
  puzzles, solutions = [], []
  with open(path, encoding="utf-8") as f:
    for number, row in enumerate(f, start=1):
      if not row.strip():
        continue
      fields = row.strip().split(",")
      if number == 1 and not fields[0].strip()[:1].isdigit() and fields[0].strip()[:1] != ".":
        continue  # header
      if len(fields) != 2:
        raise DataError(f"{path} line {number}: expected 'puzzle,solution', got {len(fields)} fields")
      puzzles.append(_grid_string(fields[0], "puzzle", number))
      solutions.append(_grid_string(fields[1], "solution", number))
  if not puzzles:
    raise DataError(f"{path}: no puzzles found")
  return np.stack(puzzles), np.stack(solutions)


def read_puzzles(path: str) -> np.ndarray:
  """Puzzles [N, 81] int8 (digits, 0 = blank) from a text or CSV file of one grid per line (81
  characters of 0-9 or '.'); further comma-separated fields (a solution) and a header are ignored."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"data file not found: {path}")
  puzzles = []
  with open(path, encoding="utf-8") as f:
    for number, row in enumerate(f, start=1):
      first = row.strip().split(",")[0].strip()
      if not first or (number == 1 and not first[:1].isdigit() and first[:1] != "."):
        continue  # blank line or header
      puzzles.append(_grid_string(first, "puzzle", number))
  if not puzzles:
    raise DataError(f"{path}: no puzzles found")
  return np.stack(puzzles)


def _read_shah_rows(path: str) -> np.ndarray:
  if path.endswith(".npy"):
    try:
      rows = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
      raise DataError(f"cannot read {path} as a .npy array: {e}") from None
  else:
    try:
      rows = np.loadtxt(path, delimiter="," if path.endswith(".csv") else None, dtype=np.int64, ndmin=2)
    except ValueError as e:
      raise DataError(f"cannot read {path} as rows of integers: {str(e).splitlines()[0]}") from None
  if rows.ndim != 2 or rows.shape[1] != 325 or not np.issubdtype(rows.dtype, np.integer):
    raise DataError(f"{path}: expected integer rows of 325 numbers (Shah et al. format), got {rows.shape}")
  return rows.astype(np.int64)


def read_shah(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(puzzles, solutions) [N, 81] int8 from rows [givens, (row, col, value, strategy) x 81].

  Rows and columns may be numbered from 0 or from 1 (detected from the file); the strategy column is
  not needed and is ignored.
  """
  rows = _read_shah_rows(path)
  cells = rows[:, 1:].reshape(len(rows), 81, 4)  # [N, 81, (row, col, value, strategy)]
  base = 1 if cells[:, :, :2].min() == 1 else 0
  r, c, v = cells[:, :, 0] - base, cells[:, :, 1] - base, cells[:, :, 2]
  if r.min() < 0 or r.max() > 8 or c.min() < 0 or c.max() > 8 or v.min() < 1 or v.max() > 9:
    raise DataError(f"{path}: rows/columns must be in 0..8 or 1..9 and values in 1..9")
  index = 9 * r + c  # [N, 81]
  if np.any(np.sort(index, axis=1) != np.arange(81)):
    raise DataError(f"{path}: a row does not list each of the 81 cells exactly once")
  givens = rows[:, 0]
  if givens.min() < 0 or givens.max() > 81:
    raise DataError(f"{path}: the number of givens must be in 0..81")
  solutions = np.zeros((len(rows), 81), np.int8)
  np.put_along_axis(solutions, index, v.astype(np.int8), axis=1)
  is_given = np.arange(81)[None, :] < givens[:, None]  # the givens are listed first
  puzzles = np.zeros_like(solutions)
  np.put_along_axis(puzzles, index, np.where(is_given, v, 0).astype(np.int8), axis=1)
  return puzzles, solutions


def read_file(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(puzzles, solutions) from a Shah-format (.npy or text of 325-int rows) or 'puzzle,solution' CSV
  file, checked: every solution valid and keeping its puzzle's clues."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"data file not found: {path}")
  if path.endswith(".npy"):
    puzzles, solutions = read_shah(path)
  else:
    with open(path, encoding="utf-8") as f:
      first = f.readline()
    two_grids = len(first.split(",")) == 2
    puzzles, solutions = read_csv(path) if two_grids else read_shah(path)
  bad = np.flatnonzero(~is_valid_solution(solutions, puzzles))
  if len(bad):
    raise DataError(f"{path}: puzzle {bad[0]} (0-based) has a solution that is not a valid completion")
  if len(puzzles) < 2:
    raise DataError(f"{path}: need at least 2 puzzles (train and test), got {len(puzzles)}")
  return puzzles, solutions


# ----------------------------------------------------------------------------------------------------
# tfds builders.


def _features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict(
    {
      "tokens": tfds.features.Tensor(shape=(LENGTH,), dtype=np.int32),  # solution digit - 1
      "given": tfds.features.Tensor(shape=(LENGTH,), dtype=np.bool_),  # clue cells
    }
  )


def _examples(puzzles: np.ndarray, solutions: np.ndarray, offset: int = 0):
  for i, (puzzle, solution) in enumerate(zip(puzzles, solutions, strict=True)):
    yield offset + i, {"tokens": solution.astype(np.int32) - 1, "given": puzzle > 0}


@dataclasses.dataclass(eq=False, kw_only=True)
class GeneratedConfig(tfds.core.BuilderConfig):
  """How many puzzles, from how many base puzzles, with how many clues and which difficulty; and the
  hard side: the share of training base puzzles that are hard, the hard clue range, the size of the
  hard test set and of each validation set."""

  num_train: int
  num_test: int
  base_train: int
  clues: int
  difficulty: str
  seed: int
  hard_fraction: float = 0.0
  hard_clues: tuple[int, int] = (24, 26)
  num_hard_test: int = 0
  num_validation: int = 0


# split -> (seed stream of its base puzzles, whether its puzzles are hard). Every split draws its base
# puzzles from its own stream, so no held-out puzzle is a transformed training puzzle; the training
# split's hard base puzzles come from stream 5.
_SPLITS = {"train": (0, False), "test": (1, False), "validation": (2, False), "test_hard": (3, True)}
_SPLITS["validation_hard"] = (4, True)
_HARD_TRAIN_STREAM = 5


def _has_hard(cfg: GeneratedConfig) -> bool:
  return cfg.hard_fraction > 0 or cfg.num_hard_test > 0


class _SudokuBuilder(tfds.core.GeneratorBasedBuilder):
  """What both Sudoku builders share: the version and the example features."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=_features())


class SudokuGenerated(_SudokuBuilder):
  """Seeded unique-solution puzzles: 'train' (base_train base puzzles, each expanded by random
  symmetries; a hard_fraction share of them hard) and 'test' (num_test further base puzzles, one
  random symmetry each); with num_hard_test, 'test_hard' (hard base puzzles: difficulty beyond_singles,
  hard_clues clues); with num_validation, 'validation' (and 'validation_hard' when there is a hard
  side) for choosing recipes without the test sets."""

  BUILDER_CONFIG_CLASS = GeneratedConfig

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    cfg = self.builder_config
    sizes = {"train": cfg.num_train, "test": cfg.num_test, "test_hard": cfg.num_hard_test}
    sizes["validation"] = cfg.num_validation
    sizes["validation_hard"] = cfg.num_validation if _has_hard(cfg) else 0
    return {split: self._generate_examples(split=split) for split, num in sizes.items() if num > 0}

  def _bases(self, split: str):
    cfg = self.builder_config
    stream, hard = _SPLITS[split]
    if hard:
      return make_base_puzzles(
        cfg.num_hard_test if split == "test_hard" else cfg.num_validation,
        tuple(cfg.hard_clues),
        "beyond_singles",
        cfg.seed,
        stream,
      )
    if split != "train":
      return make_base_puzzles(
        cfg.num_test if split == "test" else cfg.num_validation, cfg.clues, cfg.difficulty, cfg.seed, stream
      )
    num_hard = int(round(cfg.hard_fraction * cfg.base_train))
    puzzles, solutions = make_base_puzzles(cfg.base_train - num_hard, cfg.clues, cfg.difficulty, cfg.seed, 0)
    if num_hard:
      hard_clues = tuple(cfg.hard_clues)
      hard = make_base_puzzles(num_hard, hard_clues, "beyond_singles", cfg.seed, _HARD_TRAIN_STREAM)
      puzzles, solutions = np.concatenate([puzzles, hard[0]]), np.concatenate([solutions, hard[1]])
    return puzzles, solutions

  def _generate_examples(self, split: str):
    cfg = self.builder_config
    puzzles, solutions = self._bases(split)
    num = cfg.num_train if split == "train" else len(puzzles)  # a held-out base puzzle appears once
    bases, stream = len(puzzles), _SPLITS[split][0]
    for start in range(0, num, _CHUNK):
      base = np.arange(start, min(num, start + _CHUNK)) % bases  # example i expands base i % bases
      rng = np.random.default_rng([cfg.seed, stream, start])
      yield from _examples(*expand(puzzles, solutions, base, rng), offset=start)


@dataclasses.dataclass(eq=False, kw_only=True)
class FileConfig(tfds.core.BuilderConfig):
  """Which file, how much of it to hold out for test, and the split seed."""

  path: str
  test_fraction: float
  seed: int


class SudokuFile(_SudokuBuilder):
  """The puzzles of a local Shah-format or CSV file, split by a seeded permutation."""

  BUILDER_CONFIG_CLASS = FileConfig

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    cfg = self.builder_config
    puzzles, solutions = read_file(cfg.path)
    num_train, _ = split_sizes(len(puzzles), cfg.test_fraction)
    order = np.random.default_rng(cfg.seed).permutation(len(puzzles))
    train, test = np.sort(order[:num_train]), np.sort(order[num_train:])
    return {
      "train": self._generate_examples(puzzles=puzzles[train], solutions=solutions[train]),
      "test": self._generate_examples(puzzles=puzzles[test], solutions=solutions[test]),
    }

  def _generate_examples(self, puzzles: np.ndarray, solutions: np.ndarray):
    yield from _examples(puzzles, solutions)


def prepare(data_config) -> tfds.core.GeneratorBasedBuilder:
  """The prepared builder for data.name 'sudoku' (generated) or 'sudoku_file' (data.path), written into
  data.data_dir (None: the tfds default) unless already there. Every parameter is in the config name."""
  d = data_config
  seed = config_int("seed", d.seed, minimum=0)
  if d.name == "sudoku_file":
    if not d.path:
      raise DataError("dataset 'sudoku_file' needs data.path: a Shah-format (.npy or text) or CSV file")
    if not 0.0 < d.test_fraction < 1.0:  # also rejects NaN
      raise ConfigError(f"data.test_fraction must be in (0, 1), got {d.test_fraction!r}")
    path = os.path.abspath(os.fspath(d.path))
    read_file(path)  # reports a malformed file as one line before any tfds work
    config = FileConfig(
      name=f"h{content_hash(path)}_t{float(d.test_fraction)}_s{seed}",
      path=path,
      test_fraction=float(d.test_fraction),
      seed=seed,
    )
    builder = SudokuFile(config=config, data_dir=d.data_dir, file_format="array_record")
    return prepare_offline(builder)
  num_train = config_int("num_train", d.num_train, minimum=1)
  num_test = config_int("num_test", d.num_test, minimum=1)
  base_train = config_int("base_train", d.base_train, minimum=1)
  clues = config_int("clues", d.clues, minimum=17)
  if clues > 80:
    raise ConfigError(f"data.clues={clues}: must be in 17..80")
  if d.difficulty not in DIFFICULTIES:
    raise ConfigError(f"data.difficulty={d.difficulty!r}: choose one of {', '.join(DIFFICULTIES)}")
  hard_fraction = float(d.get("hard_fraction", 0.0))
  if not 0.0 <= hard_fraction <= 1.0:  # also rejects NaN
    raise ConfigError(f"data.hard_fraction must be in [0, 1], got {d.get('hard_fraction')!r}")
  hard_clues = tuple(d.get("hard_clues", (24, 26)))
  if len(hard_clues) != 2 or not 17 <= int(hard_clues[0]) <= int(hard_clues[1]) <= 80:
    raise ConfigError(f"data.hard_clues={hard_clues!r}: must be (low, high) with 17 <= low <= high <= 80")
  hard_clues = (int(hard_clues[0]), int(hard_clues[1]))
  num_hard_test = config_int("num_hard_test", d.get("num_hard_test", 0), minimum=0)
  num_validation = config_int("num_validation", d.get("num_validation", 0), minimum=0)
  name = f"{d.difficulty}_c{clues}_b{base_train}_n{num_train}_{num_test}_s{seed}"
  if hard_fraction > 0 or num_hard_test > 0 or num_validation > 0:  # earlier releases' names otherwise
    name += f"_h{hard_fraction:g}_c{hard_clues[0]}-{hard_clues[1]}_t{num_hard_test}_v{num_validation}"
  config = GeneratedConfig(
    name=name,
    num_train=num_train,
    num_test=num_test,
    base_train=min(base_train, num_train),
    clues=clues,
    difficulty=d.difficulty,
    seed=seed,
    hard_fraction=hard_fraction,
    hard_clues=hard_clues,
    num_hard_test=num_hard_test,
    num_validation=num_validation,
  )
  return prepare_offline(SudokuGenerated(config=config, data_dir=d.data_dir, file_format="array_record"))
