"""Sudoku: generator, symmetry group, checker, file loaders, clue-conditioned training and decoding."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config, run_in_process, shrink

from vmd_jax import model as model_lib
from vmd_jax import objectives, report
from vmd_jax.data import pipeline, sudoku
from vmd_jax.errors import DataError
from vmd_jax.schedules import get_schedule, remaining_masked
from vmd_jax.tasks import sudoku as sudoku_task


@pytest.fixture(scope="module")
def base():
  """Six singles-solvable 30-clue base puzzles and their solutions [6, 81]."""
  return sudoku.make_base_puzzles(6, 30, "singles", seed=3, stream=0)


def _brute_force_valid(grid) -> bool:
  g = np.asarray(grid).reshape(9, 9)
  units = list(g) + list(g.T) + [g[r : r + 3, c : c + 3].ravel() for r in (0, 3, 6) for c in (0, 3, 6)]
  return all(sorted(unit.tolist()) == list(range(1, 10)) for unit in units)


def test_generator_is_deterministic_and_unique(base):
  puzzles, solutions = base
  again = sudoku.make_base_puzzles(6, 30, "singles", seed=3, stream=0)
  np.testing.assert_array_equal(again[0], puzzles)
  np.testing.assert_array_equal(again[1], solutions)
  other = sudoku.make_base_puzzles(6, 30, "singles", seed=3, stream=1)
  assert not np.array_equal(other[1], solutions)
  for puzzle, solution in zip(puzzles, solutions, strict=True):
    assert (puzzle > 0).sum() == 30
    assert _brute_force_valid(solution)
    assert np.all((puzzle == 0) | (puzzle == solution))
    assert sudoku.count_solutions(puzzle) == 1
    assert sudoku.solvable_by_singles(puzzle)


@pytest.mark.parametrize("difficulty", ["beyond_singles", "any"])
def test_harder_difficulties_are_unique(difficulty):
  puzzles, solutions = sudoku.make_base_puzzles(3, 24, difficulty, seed=5, stream=0)
  for puzzle, solution in zip(puzzles, solutions, strict=True):
    assert sudoku.count_solutions(puzzle, limit=3) == 1
    np.testing.assert_array_equal(sudoku.solve(puzzle), solution)
    if difficulty == "beyond_singles":
      assert not sudoku.solvable_by_singles(puzzle)


def test_count_solutions_sees_several_completions(base):
  puzzle = base[0][0].copy()
  puzzle[:] = 0  # the empty grid has very many completions
  assert sudoku.count_solutions(puzzle, limit=5) == 5
  clash = base[0][0].copy()
  cell = int(np.flatnonzero(clash)[0])
  row = cell // 9
  other = next(c for c in range(9 * row, 9 * row + 9) if c != cell)
  clash[other] = clash[cell]  # the same digit twice in a row
  assert sudoku.count_solutions(clash) == 0


def test_symmetries_keep_validity_uniqueness_and_difficulty(base):
  puzzles, solutions = base
  rng = np.random.default_rng(0)
  index = np.repeat(np.arange(len(puzzles)), 4)
  new_puzzles, new_solutions = sudoku.expand(puzzles, solutions, index, rng)
  assert not np.array_equal(new_solutions, solutions[index])
  for puzzle, solution, old in zip(new_puzzles, new_solutions, puzzles[index], strict=True):
    assert _brute_force_valid(solution)
    assert (puzzle > 0).sum() == (old > 0).sum()
    assert sudoku.count_solutions(puzzle) == 1
    np.testing.assert_array_equal(sudoku.solve(puzzle), solution)
    assert sudoku.solvable_by_singles(puzzle)


def test_each_symmetry_generator_is_a_grid_symmetry(base):
  """Transpose, a band swap, a row swap within a band and a digit relabelling, one at a time."""
  solution = base[1][:1]
  identity = {
    "rows": np.arange(9)[None],
    "cols": np.arange(9)[None],
    "digits": np.arange(10)[None],
    "transpose": np.array([False]),
  }
  changes = [
    {"transpose": np.array([True])},
    {"rows": np.array([[3, 4, 5, 0, 1, 2, 6, 7, 8]])},
    {"cols": np.array([[0, 2, 1, 3, 4, 5, 6, 7, 8]])},
    {"digits": np.array([[0, 2, 1, 3, 4, 5, 6, 7, 8, 9]])},
  ]
  for change in changes:
    out = sudoku.apply_symmetries(solution, {**identity, **change})
    assert not np.array_equal(out, solution)
    assert _brute_force_valid(out[0])
  # A row swap across bands is not a symmetry: it breaks boxes.
  broken = sudoku.apply_symmetries(solution, {**identity, "rows": np.array([[3, 1, 2, 0, 4, 5, 6, 7, 8]])})
  assert not sudoku.is_valid_solution(broken)[0]


def test_checker_rejects_broken_grids(base):
  puzzle, solution = base[0][0], base[1][0]
  assert sudoku.is_valid_solution(solution, puzzle)
  swapped = solution.copy()
  swapped[[0, 1]] = swapped[[1, 0]]  # rows still permutations, two columns broken
  assert not sudoku.is_valid_solution(swapped)
  latin = np.array([(r + c) % 9 + 1 for r in range(9) for c in range(9)])  # rows, columns fine, boxes not
  assert not sudoku.is_valid_solution(latin)
  clue = np.flatnonzero(puzzle)[0]
  d, e = solution[clue], solution[clue] % 9 + 1  # swapping two digits everywhere: a valid grid...
  relabelled = np.where(solution == d, e, np.where(solution == e, d, solution))
  assert sudoku.is_valid_solution(relabelled)
  assert relabelled[clue] != puzzle[clue]  # ...whose digit at a clue cell is not the clue
  assert not sudoku.is_valid_solution(relabelled, puzzle)
  assert not sudoku.is_valid_solution(np.zeros(81, int))
  batch = np.stack([solution, swapped, latin])
  np.testing.assert_array_equal(sudoku.is_valid_solution(batch, puzzle[None]), [True, False, False])


def _shah_rows(puzzles, solutions, rng, one_based: bool) -> np.ndarray:
  """Shah et al. rows: givens first, then the other cells in a random order, strategy ids random."""
  rows = []
  for puzzle, solution in zip(puzzles, solutions, strict=True):
    given = np.flatnonzero(puzzle)
    rest = rng.permutation(np.flatnonzero(puzzle == 0))
    cells = np.concatenate([rng.permutation(given), rest])
    quads = [(c // 9 + one_based, c % 9 + one_based, solution[c], rng.integers(0, 5)) for c in cells]
    rows.append([len(given)] + [v for quad in quads for v in quad])
  return np.array(rows, dtype=np.int64)


@pytest.mark.parametrize("form", ["npy0", "npy1", "text"])
def test_shah_format_round_trips(base, tmp_path, form):
  puzzles, solutions = base
  rows = _shah_rows(puzzles, solutions, np.random.default_rng(1), one_based=form == "npy1")
  path = str(tmp_path / ("shah.npy" if form.startswith("npy") else "shah.txt"))
  if form == "text":
    np.savetxt(path, rows, fmt="%d")
  else:
    np.save(path, rows)
  read_puzzles, read_solutions = sudoku.read_file(path)
  np.testing.assert_array_equal(read_puzzles, puzzles)
  np.testing.assert_array_equal(read_solutions, solutions)


def test_csv_round_trips_and_bad_files_are_one_line_errors(base, tmp_path):
  puzzles, solutions = base
  path = tmp_path / "puzzles.csv"
  lines = ["quizzes,solutions"] + [
    "".join(map(str, p)).replace("0", ".", 3) + "," + "".join(map(str, s))
    for p, s in zip(puzzles, solutions, strict=True)
  ]
  path.write_text("\n".join(lines) + "\n")
  read_puzzles, read_solutions = sudoku.read_file(str(path))
  np.testing.assert_array_equal(read_puzzles, puzzles)
  np.testing.assert_array_equal(read_solutions, solutions)
  wrong = tmp_path / "wrong.csv"
  wrong.write_text(lines[1] + "\n" + lines[2][:-1] + ("1" if lines[2][-1] != "1" else "2") + "\n")
  with pytest.raises(DataError, match="not a valid completion"):
    sudoku.read_file(str(wrong))
  short = tmp_path / "short.npy"
  np.save(short, np.zeros((3, 300), np.int64))
  with pytest.raises(DataError, match="325"):
    sudoku.read_file(str(short))


def test_generated_dataset_splits_and_clue_masks(data_dir):
  config = load_config("sudoku.py", "mdm")
  config.data.data_dir = data_dir
  config.data.num_train, config.data.base_train, config.data.num_test = 60, 12, 8
  config.data.hard_fraction, config.data.num_hard_test, config.data.num_validation = 0.0, 0, 0
  assert "_h" not in sudoku.prepare(config.data).builder_config.name  # earlier releases' data is reused
  dataset = pipeline.load(config.data)
  assert dataset.train.shape == (60, 81) and dataset.test.shape == (8, 81) and not dataset.splits
  assert dataset.vocab_size == 9 and dataset.train.max() <= 8
  for tokens, given in ((dataset.train, dataset.train_given), (dataset.test, dataset.test_given)):
    assert np.all(given.sum(axis=1) == 30)
    assert sudoku.is_valid_solution(tokens + 1).all()
    for row in range(0, len(tokens), 7):
      assert sudoku.count_solutions(np.where(given[row], tokens[row] + 1, 0)) == 1
  train_grids = {row.tobytes() for row in dataset.train}
  assert not any(row.tobytes() in train_grids for row in dataset.test)


def test_generated_dataset_hard_side(data_dir):
  """A hard share of training, a hard test set and validation sets, each from base puzzles of its own."""
  config = load_config("sudoku.py", "mdm")
  config.data.data_dir = data_dir
  config.data.num_train, config.data.base_train, config.data.num_test = 40, 8, 5
  config.data.hard_fraction, config.data.num_hard_test, config.data.num_validation = 0.5, 6, 4
  dataset = pipeline.load(config.data)
  assert sorted(dataset.splits) == ["test_hard", "validation", "validation_hard"]
  assert dataset.splits["test_hard"]["tokens"].shape == (6, 81)
  assert dataset.splits["validation"]["tokens"].shape == (4, 81)

  def puzzles(tokens, given):
    return np.where(given, tokens + 1, 0)

  def hard(puzzle) -> bool:
    return sudoku.count_solutions(puzzle) == 1 and not sudoku.solvable_by_singles(puzzle)

  train = puzzles(dataset.train, dataset.train_given)
  is_hard = np.array([hard(p) for p in train])
  assert is_hard.sum() == 20  # examples expand base puzzles in turn: 4 of the 8 are hard
  assert np.all((train[is_hard] > 0).sum(axis=1) >= 24) and np.all((train[~is_hard] > 0).sum(axis=1) == 30)
  for split, want_hard in (("test_hard", True), ("validation_hard", True), ("validation", False)):
    arrays = dataset.splits[split]
    assert sudoku.is_valid_solution(arrays["tokens"] + 1).all()
    for p in puzzles(arrays["tokens"], arrays["given"]):
      assert hard(p) == want_hard and ((p > 0).sum() >= 24 if want_hard else (p > 0).sum() == 30)
  grids = {"train": dataset.train, "test": dataset.test}
  grids.update({split: arrays["tokens"] for split, arrays in dataset.splits.items()})
  seen: dict[bytes, str] = {}
  for split, tokens in grids.items():  # no solution grid in two splits
    for row in {row.tobytes() for row in tokens}:
      assert seen.setdefault(row, split) == split


def _tiny_model(method: str, data_dir: str):
  config = shrink(load_config("sudoku.py", method), data_dir)
  config.data.num_train, config.data.base_train, config.data.num_test = 60, 12, 8
  config.data.hard_fraction, config.data.num_hard_test, config.data.num_validation = 0.0, 0, 0
  dataset = pipeline.load(config.data)
  model = model_lib.build_model(config, dataset.vocab_size, dataset.length)
  params = jax.jit(model.init)(
    jax.random.PRNGKey(0), jnp.zeros((1, 81), jnp.int32), jnp.ones((1, 81), bool), jnp.ones((1,))
  )
  return config, dataset, model, params


@pytest.mark.parametrize("method", ["mdm", "vmd"])
def test_decoding_keeps_clues_and_follows_the_schedule(method, data_dir):
  config, dataset, model, params = _tiny_model(method, data_dir)
  tokens, given = dataset.test, dataset.test_given
  blanks = (~given).sum(axis=1)
  schedule = get_schedule(config.objective.schedule, config.objective.eps)
  for order in ("top_prob", "margin"):
    for nfe in (5, 10):
      config.eval.gumbel_scale = 0.5 if nfe == 10 else 0.0
      out = sudoku_task.solve_puzzles(
        model, params, config, nfe, order, tokens, given, jax.random.PRNGKey(nfe)
      )
      np.testing.assert_array_equal(out.tokens[given], tokens[given])
      assert np.all(out.reveal_step[given] == -1) and np.all(out.reveal_step[~given] >= 0)
      assert out.tokens.min() >= 0 and out.tokens.max() <= 8
      expected = -np.diff(
        np.asarray(remaining_masked(schedule, jnp.asarray(blanks), nfe)), axis=0
      )  # [nfe, n]
      counts = np.stack([(out.reveal_step == j).sum(axis=1) for j in range(nfe)])
      np.testing.assert_array_equal(counts, expected)


def test_loss_covers_only_blank_cells(data_dir):
  """Changing the logits' targets at clue cells cannot change the loss; at a blank cell it can."""
  config, dataset, model, params = _tiny_model("mdm", data_dir)
  settings = objectives.settings_from_config(config.objective)
  tokens, given = jnp.asarray(dataset.train[:8]), jnp.asarray(dataset.train_given[:8])
  key = jax.random.PRNGKey(4)

  def loss(tokens):
    return float(objectives.loss_fn(model, params, {"tokens": tokens, "given": given}, key, settings, 0)[0])

  # Clue cells are never masked, so the masked set (drawn from the key) is the same for any values there.
  clue_changed = jnp.where(given, (tokens + 1) % 9, tokens)
  assert loss(clue_changed) == pytest.approx(loss(tokens), rel=1e-6)
  blank_changed = jnp.where(given, tokens, (tokens + 1) % 9)
  assert loss(blank_changed) != pytest.approx(loss(tokens), rel=1e-6)
  masked = objectives.mask_tokens(key, tokens, jnp.zeros(8), get_schedule("linear", 1e-4), given)
  assert not np.any(np.asarray(masked & given))


def test_paired_difference_interval():
  rng = np.random.default_rng(0)
  a = rng.random(4000) < 0.5
  b = a | (rng.random(4000) < 0.2)  # b solves everything a does and more
  diff, half = sudoku_task.paired_difference(a, b)
  assert diff == pytest.approx(100 * (b.mean() - a.mean()))
  assert 0 < half < diff
  same, half_same = sudoku_task.paired_difference(a, a)
  assert same == 0 and half_same == 0


def test_report_compares_runs_puzzle_by_puzzle(tmp_path):
  rng = np.random.default_rng(1)
  mdm = {
    "acc@margin@nfe5": rng.random(500) < 0.2,
    "acc@margin@nfe10": rng.random(500) < 0.6,
    "acc_hard@margin@nfe5": rng.random(300) < 0.1,
  }
  vmd = {
    "acc@margin@nfe5": mdm["acc@margin@nfe5"] | (rng.random(500) < 0.3),
    "acc@margin@nfe10": mdm["acc@margin@nfe10"],
    "acc_hard@margin@nfe5": mdm["acc_hard@margin@nfe5"] & (rng.random(300) < 0.2),
  }
  for name, solved in (("mdm", mdm), ("vmd+", vmd)):
    (tmp_path / name).mkdir()
    np.savez(tmp_path / name / "sudoku_solved.npz", **solved)
    results = {"task": "sudoku", "method": name, "n_test": 500, "n_test_hard": 300, "steps": 7}
    results.update({k: 100 * v.mean() for k, v in solved.items()})
    results.update({k + "_se": 1.0 for k in solved})
    results.update({k.replace("acc", "units"): 50.0 for k in solved})
    (tmp_path / name / "results.json").write_text(json.dumps(results))
  figures = tmp_path / "figures"
  text = report.main([str(tmp_path)], str(figures))
  assert "| mdm | easy | margin | 7 | 500 |" in text and "| vmd+ | hard | margin | 7 | 300 |" in text
  assert "% valid units in unsolved grids" in text and "| 50.0 |" in text
  rows = {
    tuple(cell.strip() for cell in line.split("|")[1:4]): line
    for line in text.splitlines()
    if line.startswith(("| easy | margin |", "| hard | margin |"))
  }
  assert rows["easy", "margin", "5"].endswith("| VMD+ better |")
  assert rows["easy", "margin", "10"].endswith("| within the interval |")
  assert rows["hard", "margin", "5"].endswith("| MDM better |")
  gain = 100 * (vmd["acc@margin@nfe5"].mean() - mdm["acc@margin@nfe5"].mean())
  assert f"+{gain:.1f} ±" in rows["easy", "margin", "5"]
  assert os.path.getsize(figures / "sudoku_nfe.png") > 0
  # a control against the run it controls: the same pairs, the other way round
  swapped = report.main([str(tmp_path)], reference="vmd+")
  assert "| puzzles | decoder | NFE | VMD+ | MDM | MDM - VMD+ (95% CI) | outcome |" in swapped
  flipped = {
    tuple(cell.strip() for cell in line.split("|")[1:4]): line
    for line in swapped.splitlines()
    if line.startswith(("| easy | margin |", "| hard | margin |"))
  }
  assert f"| -{gain:.1f} ± " in flipped["easy", "margin", "5"]
  assert flipped["easy", "margin", "5"].endswith("| VMD+ better |")
  assert flipped["hard", "margin", "5"].endswith("| MDM better |")
  with pytest.raises(ValueError, match="exactly one run"):
    report.main([str(tmp_path)], reference="vmd")


def test_valid_units_against_brute_force(base):
  rng = np.random.default_rng(6)
  grids = np.repeat(base[1], 4, axis=0)  # [24, 81] valid solutions
  for grid in grids[6:]:
    cells = rng.choice(81, size=rng.integers(1, 4), replace=False)
    grid[cells] = rng.integers(0, 10, size=len(cells))  # broken digits, or blanks
  got = sudoku.valid_units(grids)
  for grid, units in zip(grids, got, strict=True):
    g = grid.reshape(9, 9)
    cells = list(g) + list(g.T) + [g[r : r + 3, c : c + 3].ravel() for r in (0, 3, 6) for c in (0, 3, 6)]
    expected = [sorted(unit.tolist()) == list(range(1, 10)) for unit in cells]
    np.testing.assert_array_equal(units, expected)
    assert units.all() == sudoku.is_valid_solution(grid)
  assert not got[6:].all(axis=1).all() and got[:6].all()


def test_fixed_clue_count_draws_the_puzzles_of_earlier_releases():
  old = sudoku.make_base_puzzles(3, 30, "singles", seed=2, stream=1)
  again = sudoku.make_base_puzzles(3, (30, 30), "singles", seed=2, stream=1)
  np.testing.assert_array_equal(old[0], again[0])
  ranged = sudoku.make_base_puzzles(12, (24, 26), "beyond_singles", seed=2, stream=1)[0]
  clues = (ranged > 0).sum(axis=1)
  assert clues.min() >= 24 and len(set(clues.tolist())) > 1


def test_shah_file_through_the_cli(base, tmp_path, data_dir, capsys):
  """Train and evaluate a tiny VMD on a Shah-format file written here; results.json has the table."""
  puzzles, solutions = sudoku.expand(*base, np.arange(40) % 6, np.random.default_rng(2))
  path = str(tmp_path / "shah_small.npy")
  np.save(path, _shah_rows(puzzles, solutions, np.random.default_rng(3), one_based=False))
  workdir = tmp_path / "run"
  prepared = run_in_process(
    workdir,
    "configs/sudoku.py:vmd",
    "--config.data.name=sudoku_file",
    f"--config.data.path={path}",
    "--config.data.test_fraction=0.25",
    "--mode=prepare",
    data_dir=data_dir,
  )
  assert prepared.returncode == 0 and "train (30, 81), test (10, 81)" in prepared.stdout, prepared.stderr
  assert not workdir.exists()  # preparing writes data only
  flags = [
    "--config.data.name=sudoku_file",
    f"--config.data.path={path}",
    "--config.data.test_fraction=0.25",
    "--config.train.steps=2",
    "--config.eval.nfes=(5,10)",
    "--config.eval.num_samples=10",
  ]
  out = run_in_process(workdir, "configs/sudoku.py:vmd", *flags, data_dir=data_dir)
  assert out.returncode == 0, out.stderr[-2000:]
  results = json.loads((workdir / "results.json").read_text())
  assert results["n_test"] == 10 and results["dataset"] == "sudoku_file"
  with np.load(workdir / "sudoku_solved.npz") as solved:
    for decoder in ("top_prob", "margin"):
      for nfe in (5, 10):
        key = f"acc@{decoder}@nfe{nfe}"
        assert solved[key].shape == (10,)  # the table's share is that of the per-puzzle outcomes
        np.testing.assert_allclose(results[key], 100.0 * solved[key].mean())
  assert "| vmd | file | margin |" in out.stdout
  assert os.path.getsize(workdir / "sudoku_grids.png") > 0
  bad = tmp_path / "bad.npy"
  np.save(bad, np.zeros((4, 325), np.int64))
  out = run_in_process(
    tmp_path / "bad_run",
    "configs/sudoku.py:vmd",
    "--config.data.name=sudoku_file",
    f"--config.data.path={bad}",
    data_dir=data_dir,
  )
  assert out.returncode == 2 and out.stderr.startswith("error:") and len(out.stderr.strip().splitlines()) == 1


def test_generated_run_evaluates_both_sets_on_the_chosen_split(tmp_path, data_dir):
  """A tiny vmd+ run on generated puzzles: easy and hard sets, from validation or test, with the
  per-puzzle outcomes and the valid-unit share of the unsolved grids."""
  small = [
    "--config.data.num_train=40",
    "--config.data.base_train=8",
    "--config.data.num_test=5",
    "--config.data.num_hard_test=6",
    "--config.data.num_validation=4",
    "--config.train.steps=2",
    "--config.eval.nfes=(5,)",
  ]
  workdir = tmp_path / "run"
  validation = "--config.eval.split=validation"
  out = run_in_process(workdir, "configs/sudoku.py:vmd+", *small, validation, data_dir=data_dir)
  assert out.returncode == 0, out.stderr[-2000:]
  # a validation evaluation has files of its own: results.json stays the test split's
  assert not (workdir / "results.json").exists()
  results = json.loads((workdir / "results_validation.json").read_text())
  assert results["eval_split"] == "validation" and results["n_test"] == 4 and results["n_test_hard"] == 4
  with np.load(workdir / "sudoku_solved_validation.npz") as solved:
    for prefix in ("", "_hard"):
      for decoder in ("margin", "top_prob"):
        key = f"acc{prefix}@{decoder}@nfe5"
        assert solved[key].shape == (4,)
        np.testing.assert_allclose(results[key], 100.0 * solved[key].mean())
        units = results[f"units{prefix}@{decoder}@nfe5"]
        assert np.isnan(units) if solved[key].all() else 0.0 <= units < 100.0
  assert "| vmd+ | hard | margin |" in out.stdout and "% valid units in unsolved grids" in out.stdout
  out = run_in_process(workdir, "configs/sudoku.py:vmd+", *small, "--mode=eval", data_dir=data_dir)
  results = json.loads((workdir / "results.json").read_text())
  assert out.returncode == 0 and results["eval_split"] == "test"
  assert results["n_test"] == 5 and results["n_test_hard"] == 6
  assert json.loads((workdir / "results_validation.json").read_text())["n_test"] == 4
  assert "| vmd+ | easy | margin | 2 | 4 |" in report.main([str(workdir)], split="validation")
  assert "| vmd+ | easy | margin | 2 | 5 |" in report.main([str(workdir)])
  assert os.path.getsize(workdir / "sudoku_grids_hard.png") > 0
