"""Tests of the data layer: exact synthetic distributions, the tfds builders, and batch order."""

import math
import types

import numpy as np
import pytest

from vmd_jax.data import pipeline, sequences, synthetic
from vmd_jax.errors import DataError

pytestmark = pytest.mark.usefixtures("no_network")  # a tfds download attempt fails at once


def _config(data_dir, **overrides):
  fields = dict(
    name="pair",
    p=None,
    num_train=200,
    num_test=50,
    seed=0,
    data_dir=str(data_dir),
    path=None,
    test_fraction=0.25,
    vocab_size=None,
  )
  fields.update(overrides)
  return types.SimpleNamespace(**fields)


def _pair_corr_entropy(p):
  """ln 10 + H(x2 | x1): x2 is x1 + 1 with p + (1 - p)/10, each of the other 9 digits with (1 - p)/10."""
  hit, miss = p + (1 - p) / 10, (1 - p) / 10
  return math.log(10) - hit * math.log(hit) - (9 * miss * math.log(miss) if miss > 0 else 0.0)


# --- exact distributions ---


@pytest.mark.parametrize(
  "name, p, entropy",
  [
    ("pair", None, math.log(10)),
    ("pair_nonuniform", None, -sum((k / 55) * math.log(k / 55) for k in range(1, 11))),
    ("pair_corr", 1.0, math.log(10)),
    ("pair_corr", 0.0, math.log(100)),
    ("pair_corr", 0.3, _pair_corr_entropy(0.3)),
    ("d1", None, math.log(10)),
    ("d2", None, math.log(100)),
    # x1 uniform, then three transitions of entropy H(0.6, 0.3, 0.1) each
    ("markov", None, math.log(10) - 3 * sum(q * math.log(q) for q in (0.6, 0.3, 0.1))),
  ],
)
def test_distribution_normalised_with_closed_form_entropy(name, p, entropy):
  dist = synthetic.distribution(name, p)
  assert dist.sequences.dtype == np.int32 and dist.probs.dtype == np.float64
  assert np.all(dist.probs > 0)
  np.testing.assert_allclose(dist.probs.sum(), 1.0, rtol=1e-12)
  np.testing.assert_allclose(synthetic.entropy_nats(dist), entropy, rtol=1e-12)
  assert len(np.unique(dist.sequences, axis=0)) == len(dist.sequences)
  assert dist.sequences.min() >= 0 and dist.sequences.max() < dist.vocab_size == 10


@pytest.mark.parametrize("length", [1, 2, 5])
def test_markov_chain_is_stationary_with_the_stated_transitions_and_entropy_rate(length):
  """Every position is uniform (the chain starts stationary); each transition x_i -> x_{i+1} is an
  increment of 1, 2 or 3 at 0.6, 0.3, 0.1 whatever came before; H = log V + (L - 1) * rate."""
  dist = synthetic.markov_chain(length)
  np.testing.assert_allclose(dist.probs.sum(), 1.0, rtol=1e-12)
  assert len(np.unique(dist.sequences, axis=0)) == len(dist.sequences) == 10 * 3 ** (length - 1)
  for i in range(length):
    marginal = np.bincount(dist.sequences[:, i], weights=dist.probs, minlength=10)
    np.testing.assert_allclose(marginal, 0.1, rtol=1e-12)
  for i in range(length - 1):
    step = (dist.sequences[:, i + 1] - dist.sequences[:, i]) % 10
    prefixes, which = np.unique(dist.sequences[:, : i + 1], axis=0, return_inverse=True)
    for prefix in range(len(prefixes)):  # the increment's law given the whole past x_1..x_i
      at = which.reshape(-1) == prefix
      law = np.bincount(step[at], weights=dist.probs[at], minlength=4)[1:] / dist.probs[at].sum()
      np.testing.assert_allclose(law, synthetic.MARKOV_PROBS, rtol=1e-12)
  rate = synthetic.markov_entropy_rate()
  np.testing.assert_allclose(synthetic.entropy_nats(dist), math.log(10) + (length - 1) * rate, rtol=1e-12)


def test_distributions_have_the_defining_structure():
  d1 = synthetic.distribution("d1").sequences
  np.testing.assert_array_equal(d1, (d1[:, :1] + np.arange(4)) % 10)
  d2 = synthetic.distribution("d2").sequences
  np.testing.assert_array_equal(d2[:, 1], (d2[:, 0] + 1) % 10)
  np.testing.assert_array_equal(d2[:, 3], (d2[:, 2] + 1) % 10)
  nonuniform = synthetic.distribution("pair_nonuniform")
  np.testing.assert_allclose(nonuniform.probs, (nonuniform.sequences[:, 0] + 1) / 55)
  # pair_corr: x1 is uniform for any p, and p = 1 is exactly 'pair'.
  corr = synthetic.distribution("pair_corr", 0.3)
  np.testing.assert_allclose(np.bincount(corr.sequences[:, 0], weights=corr.probs), np.full(10, 0.1))
  pair, corr1 = synthetic.distribution("pair"), synthetic.distribution("pair_corr", 1.0)
  np.testing.assert_array_equal(pair.sequences, corr1.sequences)
  np.testing.assert_allclose(pair.probs, corr1.probs)


@pytest.mark.parametrize(
  "name, p, message",
  [
    ("nope", None, "unknown synthetic dataset"),
    ("pair_corr", None, "needs p"),
    ("pair_corr", 1.5, "outside"),
    ("pair_corr", -0.1, "outside"),
    ("pair_corr", float("nan"), "outside"),
    ("pair", 0.5, "takes no p"),
  ],
)
def test_distribution_rejects_bad_arguments(name, p, message):
  with pytest.raises(DataError, match=message):
    synthetic.distribution(name, p)


def test_support_index_finds_members_and_rejects_others():
  for name in ("pair", "d1", "d2"):
    dist = synthetic.distribution(name)
    shuffled = np.random.default_rng(0).permutation(len(dist.sequences))
    np.testing.assert_array_equal(synthetic.support_index(dist, dist.sequences[shuffled]), shuffled)
  pair = synthetic.distribution("pair")
  outside = np.array([[0, 0], [1, 0], [9, 1], [10, 0], [0, 10], [-1, 0]])  # 10 is the mask id
  np.testing.assert_array_equal(synthetic.support_index(pair, outside), -np.ones(6))
  mixed = np.array([[3, 4], [3, 5], [9, 0]])
  np.testing.assert_array_equal(synthetic.support_index(pair, mixed), [3, -1, 9])
  with pytest.raises(ValueError):
    synthetic.support_index(pair, np.zeros((2, 3), np.int32))


# --- synthetic builder ---


def test_synthetic_builder_is_deterministic_from_the_seed(tmp_path):
  first = pipeline.load(_config(tmp_path / "a", name="d2"))
  again = pipeline.load(_config(tmp_path / "b", name="d2"))
  np.testing.assert_array_equal(first.train, again.train)
  np.testing.assert_array_equal(first.test, again.test)
  assert first.train.shape == (200, 4) and first.test.shape == (50, 4) and first.train.dtype == np.int32
  assert first.length == 4 and first.vocab_size == 10 and first.name == "d2"
  assert np.all(synthetic.support_index(synthetic.distribution("d2"), first.train) >= 0)
  assert not np.array_equal(first.train[:50], first.test)
  # Same data_dir, another seed: a separate config, so fresh samples rather than the files above.
  other = pipeline.load(_config(tmp_path / "a", name="d2", seed=1))
  assert not np.array_equal(np.sort(first.train, axis=0), np.sort(other.train, axis=0))


def test_runs_preparing_the_same_data_at_once_share_the_files(tmp_path, monkeypatch):
  """Two runs started side by side on data not yet prepared: the one that finishes writing second
  reads the files of the first instead of failing."""
  real, other = synthetic.SyntheticTokens._generate_examples, []

  def generate(self, num, stream):
    if not other:  # while this run writes, the other run prepares the same set and finishes first
      other.append(None)
      other[0] = pipeline.load(_config(tmp_path, name="d2"))
    yield from real(self, num, stream)

  monkeypatch.setattr(synthetic.SyntheticTokens, "_generate_examples", generate)
  mine = pipeline.load(_config(tmp_path, name="d2"))
  np.testing.assert_array_equal(mine.train, other[0].train)
  np.testing.assert_array_equal(mine.test, other[0].test)


@pytest.mark.parametrize(
  "name, p", [("pair_nonuniform", None), ("pair_corr", 0.5), ("d2", None), ("markov", None)]
)
def test_train_frequencies_match_the_distribution(tmp_path, name, p):
  num = 20_000
  data = pipeline.load(_config(tmp_path, name=name, p=p, num_train=num, num_test=num // 10))
  dist = synthetic.distribution(name, p)
  for split in (data.train, data.test):
    index = synthetic.support_index(dist, split)
    assert np.all(index >= 0)
    counts = np.bincount(index, minlength=len(dist.sequences))
    expected = len(split) * dist.probs
    chi2 = np.sum((counts - expected) ** 2 / expected)
    dof = len(dist.sequences) - 1
    assert chi2 < dof + 6 * math.sqrt(2 * dof), (split.shape, chi2, dof)


def test_config_names_separate_parameters(tmp_path):
  names = {
    synthetic.prepare("pair_corr", p, n, 5, s, str(tmp_path)).builder_config.name
    for p, n, s in [(0.5, 10, 0), (0.25, 10, 0), (0.5, 11, 0), (0.5, 10, 1)]
  }
  assert len(names) == 4
  data = pipeline.load(_config(tmp_path, name="pair_corr", p=0.25, num_train=10, num_test=5))
  assert data.train.shape == (10, 2)


def test_load_rejects_unknown_names(tmp_path):
  with pytest.raises(DataError, match="choose one of .*pair_corr.*sequences"):
    pipeline.load(_config(tmp_path, name="mnist"))
  with pytest.raises(DataError, match="needs data.path"):
    pipeline.load(_config(tmp_path, name="sequences"))


# --- user sequences from .npy ---


def test_npy_builder_round_trips_every_row_once(tmp_path):
  rows = np.arange(37 * 5).reshape(37, 5) % 41  # distinct rows (first tokens 5i mod 41), tokens < 41
  path = tmp_path / "tokens.npy"
  np.save(path, rows.astype(np.int64))
  cfg = _config(tmp_path / "tfds", name="sequences", path=str(path), test_fraction=0.1, seed=3)
  data = pipeline.load(cfg)
  assert data.decode is None and data.vocab_size == 41 and data.length == 5
  assert data.train.dtype == np.int32
  assert len(data.test) == 4 and len(data.train) == 33  # test = ceil(0.1 * 37)
  together = np.concatenate([data.train, data.test])
  np.testing.assert_array_equal(np.unique(together, axis=0), np.unique(rows, axis=0))
  assert len(np.unique(together, axis=0)) == 37
  again = pipeline.load(
    _config(tmp_path / "tfds2", name="sequences", path=str(path), test_fraction=0.1, seed=3)
  )
  np.testing.assert_array_equal(data.test, again.test)
  assert pipeline.load(_config(**{**vars(cfg), "vocab_size": 100})).vocab_size == 100


def test_npy_builder_reprepares_a_changed_file(tmp_path):
  path = tmp_path / "tokens.npy"
  np.save(path, np.zeros((4, 3), np.int32))
  first, _ = sequences.prepare(str(path), 0.5, 0, None, str(tmp_path / "tfds"))
  np.save(path, np.ones((4, 3), np.int32))
  second, vocab_size = sequences.prepare(str(path), 0.5, 0, None, str(tmp_path / "tfds"))
  assert first.builder_config.name != second.builder_config.name and vocab_size == 2
  assert pipeline._read_split(second, "train")["tokens"].min() == 1


def _write(path, content):
  if isinstance(content, np.ndarray):
    np.save(path, content)
  elif isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content)


@pytest.mark.parametrize(
  "content, vocab_size, message",
  [
    (None, None, "data file not found"),
    ("1 2 3\n4 5 6\n", None, "is not a .npy file"),
    (b"\x93NUMPY\x01\x00", None, "cannot read .* as a .npy array"),  # truncated header
    (np.arange(5), None, "2-D"),
    (np.zeros((3, 2), np.float32), None, "integer"),
    (np.array([[0, 1], [-1, 2]]), None, "non-negative"),
    (np.array([[0, 1], [5, 2]]), 5, "token id 5 is >= vocab_size 5"),
    (np.array([[0, 1]]), None, "at least 2 sequences"),
  ],
)
def test_read_npy_rejects_malformed_files(tmp_path, content, vocab_size, message):
  path = tmp_path / "bad.npy"
  if content is not None:
    _write(path, content)
  with pytest.raises(DataError, match=message) as info:
    sequences.read_npy(str(path), vocab_size)
  assert "\n" not in str(info.value) and "bad.npy" in str(info.value)
  with pytest.raises(DataError):  # and before any tfds work: nothing is written
    sequences.prepare(str(path), 0.5, 0, vocab_size, str(tmp_path / "tfds"))
  assert not (tmp_path / "tfds").exists()


# --- batch order ---


def test_batch_indices_are_a_pure_function():
  a = pipeline.batch_indices(7, 32, 100, seed=5)
  np.testing.assert_array_equal(a, pipeline.batch_indices(7, 32, 100, seed=5))
  assert not np.array_equal(a, pipeline.batch_indices(7, 32, 100, seed=6))
  assert a.shape == (32,) and a.min() >= 0 and a.max() < 100


def test_each_epoch_is_a_permutation():
  num, batch = 120, 8
  steps = num // batch
  stream = np.concatenate([pipeline.batch_indices(s, batch, num, seed=0) for s in range(3 * steps)])
  epochs = stream.reshape(3, num)
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(num))
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch


def test_batches_spanning_epochs_follow_the_stream():
  num, batch = 10, 4  # batch 2 spans epochs 0 and 1; global batch larger than the data spans three
  stream = np.concatenate([np.random.default_rng([1, e]).permutation(num) for e in range(4)])
  for step in range(8):
    np.testing.assert_array_equal(
      pipeline.batch_indices(step, batch, num, 1), stream[step * 4 : step * 4 + 4]
    )
  np.testing.assert_array_equal(pipeline.batch_indices(0, 25, num, 1), stream[:25])


def test_resuming_gives_the_batches_of_an_uninterrupted_run():
  tokens = np.arange(50 * 3, dtype=np.int32).reshape(50, 3)
  run = [pipeline.process_batch(tokens, s, 16, 9, 0, 1) for s in range(10)]
  pipeline._epoch_order.cache_clear()  # a fresh process
  resumed = [pipeline.process_batch(tokens, s, 16, 9, 0, 1) for s in range(5, 10)]
  for a, b in zip(run[5:], resumed, strict=True):
    np.testing.assert_array_equal(a, b)


def test_process_slices_partition_the_global_batch():
  tokens = np.arange(40 * 2, dtype=np.int32).reshape(40, 2)
  for step in (0, 1, 11):  # each within one epoch, so indices are distinct
    full = tokens[pipeline.batch_indices(step, 12, 40, seed=2)]
    parts = [pipeline.process_batch(tokens, step, 12, 2, i, 2) for i in range(2)]
    assert parts[0].shape == (6, 2)
    np.testing.assert_array_equal(np.concatenate(parts), full)
    assert not set(map(tuple, parts[0])) & set(map(tuple, parts[1]))
  with pytest.raises(ValueError):
    pipeline.process_batch(tokens, 0, 12, 2, 0, 5)
  with pytest.raises(ValueError):
    pipeline.process_batch(tokens, 0, 12, 2, 2, 2)


def test_report_groups_seeds_into_one_row_and_draws_a_figure_per_set(tmp_path):
  """Runs that differ only in their seed share a row, each cell the mean ± the standard deviation
  over the seeds; nfe_<set>.png is drawn for every set (the report of launch/never_loses.sh)."""
  import json

  from vmd_jax import report

  def write(name, method, acc, bound, dataset="d2"):
    run = tmp_path / name
    run.mkdir()
    results = {"task": "synthetic", "dataset": dataset, "method": method, "steps": 10, "block_size": 0}
    results.update({"acc@nfe1": acc, "kl@nfe1": 0.1, "entropy_bits_per_token": 1.661, "loss": 1.0})
    results.update({"nelbo@nfe1_bits_per_token": bound, "nelbo@nfe1_bits_per_token_se": 0.004})
    (run / "results.json").write_text(json.dumps(results))

  for seed, (acc, bound) in enumerate([(95.0, 1.90), (97.0, 1.92), (96.0, 1.94)]):
    write(f"d2_vmdplus_s{seed}", "vmd+", acc, bound)
  write("d2_mdm", "mdm", 1.0, 3.322)
  write("markov_mdm", "mdm", 2.0, 3.0, dataset="markov")
  table = report.main(
    [str(tmp_path / n) for n in sorted(p.name for p in tmp_path.iterdir())], str(tmp_path / "figures")
  )
  assert "| d2 | vmd+ | 10 | 3 | 96.0 ± 1.0 |" in table
  assert "| d2 | vmd+ | 10 | 3 | 1.920 ± 0.020 | 1.661 |" in table  # the entropy is the same for every seed
  assert (
    "| d2 | mdm | 10 | 1 | 3.322 ± 0.004 |" in table and "largest standard error of one run's bound" in table
  )
  for name in ("nfe_d2.png", "nfe_markov.png"):
    assert (tmp_path / "figures" / name).stat().st_size > 1000
