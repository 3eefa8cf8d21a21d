"""Tests of the Kneser-Ney n-gram baselines: a textbook reference, normalisation, a Markov chain's known
entropy rate, the vectorised path against the one-history path, the standard error, input errors and
the command line."""

import bisect
import itertools
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import REPO

from vmd_jax import ngram
from vmd_jax.errors import ConfigError, DataError


def _reference(train: list[int], order: int, vocab_size: int):
  """P(w | history) by the textbook recursion over Python dicts of tuples (slow, for tiny corpora)."""
  grams = {}  # k -> Counter of the k-grams of train
  for k in range(1, order + 1):
    grams[k] = Counter(tuple(train[i : i + k]) for i in range(len(train) - k + 1))
  counts = {order: grams[order]}
  for k in range(1, order):
    counts[k] = Counter(gram[1:] for gram in grams[k + 1])  # N1+(. h w): one per distinct (k+1)-gram
  discounts = {}
  for k, c in counts.items():
    n1, n2 = sum(v == 1 for v in c.values()), sum(v == 2 for v in c.values())
    discounts[k] = n1 / (n1 + 2 * n2) if n1 else ngram.FALLBACK_DISCOUNT

  def prob(history: tuple, w: int, k: int) -> float:
    if k == 0:
      return 1 / vocab_size
    h = history[len(history) - (k - 1) :] if k > 1 else ()
    lower = prob(history, w, k - 1)
    seen = {gram: v for gram, v in counts[k].items() if gram[:-1] == h}
    if not seen:
      return lower
    d, total = discounts[k], sum(seen.values())
    return (max(seen.get((*h, w), 0) - d, 0) + d * len(seen) * lower) / total

  return lambda history, w: prob(tuple(history), w, min(len(history) + 1, order))


def _order2_chain(vocab_size: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A random order-2 Markov chain P[a, b, c] = P(c | a, b) [V, V, V] and a stream [length] from it."""
  rng = np.random.default_rng(seed)
  transition = rng.dirichlet(np.full(vocab_size, 0.3), size=(vocab_size, vocab_size))  # [V, V, V]
  cumulative = np.cumsum(transition, axis=-1).reshape(vocab_size**2, vocab_size)  # [V * V, V]
  cumulative[:, -1] = 1.0
  cumulative, stream = cumulative.tolist(), [0, 0]
  for u in rng.random(length).tolist():
    stream.append(bisect.bisect_right(cumulative[stream[-2] * vocab_size + stream[-1]], u))
  return transition, np.array(stream[2:], dtype=np.uint8)


def _entropy(p: np.ndarray) -> np.ndarray:
  """Shannon entropy in bits over the last axis."""
  return -np.sum(p * np.log2(np.where(p > 0, p, 1)), axis=-1)


def _chain_entropies(transition: np.ndarray) -> tuple[float, float, float]:
  """The chain's stationary entropies in bits: H(X), H(X_t | X_t-1) and the rate H(X_t | X_t-2, X_t-1)."""
  v = transition.shape[0]
  pairs = np.zeros((v * v, v * v))  # [(a, b), (b, c)] transition of the pair chain
  for a, b in itertools.product(range(v), repeat=2):
    pairs[a * v + b, b * v : (b + 1) * v] = transition[a, b]
  values, vectors = np.linalg.eig(pairs.T)
  pi = np.real(vectors[:, np.argmin(np.abs(values - 1))])
  pi = (pi / pi.sum()).reshape(v, v)  # [a, b] stationary pair distribution
  marginal = pi.sum(axis=0)  # [V]
  rate = float(np.sum(pi * _entropy(transition)))
  return float(_entropy(marginal)), float(_entropy(pi.reshape(-1)) - _entropy(marginal)), rate


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_matches_the_textbook_recursion(order):
  rng = np.random.default_rng(order)
  train = rng.choice(3, size=300, p=[0.6, 0.3, 0.1]).tolist()
  model, reference = ngram.fit(np.array(train), order, 3), _reference(train, order, 3)
  for length in range(order):
    for history in itertools.product(range(3), repeat=length):
      expected = [reference(history, w) for w in range(3)]
      np.testing.assert_allclose(ngram.probs_table(model, history), expected, rtol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_probs_table_is_a_positive_distribution(order):
  rng = np.random.default_rng(10 + order)
  vocab_size = 6
  train = rng.integers(0, vocab_size - 1, size=3000)  # the last symbol never occurs
  model = ngram.fit(train, order, vocab_size)
  histories = [train[i : i + rng.integers(0, 8)] for i in rng.integers(0, 2900, size=10)]  # seen
  histories += [rng.integers(0, vocab_size, size=rng.integers(1, 8)) for _ in range(10)]  # mostly unseen
  histories += [[], [vocab_size - 1] * 6]
  for history in histories:
    p = ngram.probs_table(model, history)
    assert p.shape == (vocab_size,)
    assert abs(p.sum() - 1) < 1e-9, history
    assert np.all(p > 0), history


def test_bits_per_token_reaches_the_entropy_rate_of_an_order2_chain():
  vocab_size, split = 4, 200_000
  transition, stream = _order2_chain(vocab_size, 2 * split, seed=0)
  unigram, conditional, rate = _chain_entropies(transition)
  assert rate < conditional - 0.2 and conditional < unigram - 0.05  # each order of history matters
  train, held_out, context = stream[:split], stream[split:], stream[split - 2 : split]
  histories = np.lib.stride_tricks.sliding_window_view(stream[split - 2 :], 3)  # [split, 3]
  exact = -np.mean(np.log2(transition[histories[:, 0], histories[:, 1], histories[:, 2]]))
  models = {n: ngram.fit(train, n, vocab_size) for n in (1, 2, 3, 4)}
  bits = {n: ngram.bits_per_token(model, held_out, context)[0] for n, model in models.items()}
  assert abs(bits[3] - rate) < 0.015
  assert -0.001 < bits[3] - exact < 0.005  # the cross-entropy exceeds the chain's own on the same stream
  assert -0.001 < bits[4] - exact < 0.005  # a longer history than the chain's costs little
  assert bits[2] > conditional - 0.01 and bits[2] > rate + 0.15
  assert bits[1] > unigram - 0.01 and bits[1] > conditional + 0.03


def test_log_probs_match_probs_table_position_by_position():
  rng = np.random.default_rng(3)
  model = ngram.fit(rng.integers(0, 5, size=500), 3, 5)
  context, ids = rng.integers(0, 5, size=1), rng.integers(0, 5, size=12)
  stream = np.concatenate([context, ids])
  expected = [np.log2(ngram.probs_table(model, stream[: 1 + i])[w]) for i, w in enumerate(ids)]
  np.testing.assert_allclose(ngram.log_probs(model, ids, context), expected, rtol=1e-12)
  # without context the stream starts with the unigram level of the same model
  assert ngram.log_probs(model, ids)[0] == np.log2(ngram.probs_table(model, [])[ids[0]])
  # windows of 5: each position reads only the symbols of its own window before it
  windowed = [np.log2(ngram.probs_table(model, ids[i - i % 5 : i])[w]) for i, w in enumerate(ids)]
  np.testing.assert_allclose(ngram.log_probs(model, ids, context, window=5), windowed, rtol=1e-12)
  assert ngram.bits_per_token(model, ids[:10], chunk=5, windowed=True)[0] == pytest.approx(
    -np.mean(windowed[:10])
  )


def test_standard_error_over_chunks():
  rng = np.random.default_rng(4)
  model = ngram.fit(rng.integers(0, 4, size=1000), 2, 4)
  ids = rng.integers(0, 4, size=130)
  bits = -ngram.log_probs(model, ids)
  mean, error = ngram.bits_per_token(model, ids, chunk=1)
  assert mean == pytest.approx(bits.mean()) and error == pytest.approx(bits.std(ddof=1) / np.sqrt(130))
  chunk_means = bits[:128].reshape(2, 64).mean(axis=1)  # the remainder of 2 positions is left out
  assert ngram.bits_per_token(model, ids)[1] == pytest.approx(chunk_means.std(ddof=1) / np.sqrt(2))
  assert np.isnan(ngram.bits_per_token(model, ids[:100])[1])


def test_bad_input_is_refused():
  train = np.array([0, 1, 2, 1, 0])
  with pytest.raises(ConfigError, match="order"):
    ngram.fit(train, 0, 3)
  with pytest.raises(ConfigError, match="overflow int64"):
    ngram.fit(train, 14, 27)
  ngram.fit(train, 3, 27**4)  # (27^4)^3 = 27^12 still fits
  with pytest.raises(DataError, match=r"id 3 at position 1 is outside \[0, 3\)"):
    ngram.fit(np.array([0, 3, 1]), 1, 3)
  with pytest.raises(DataError, match="outside"):
    ngram.fit(np.array([0, -1, 1]), 1, 3)
  with pytest.raises(DataError, match="integer"):
    ngram.fit(np.array([0.0, 1.0]), 1, 3)
  with pytest.raises(DataError, match="train split has 0 symbols"):
    ngram.fit(np.array([], dtype=np.uint8), 1, 3)
  with pytest.raises(DataError, match="fewer than the order 6"):
    ngram.fit(train, 6, 3)
  model = ngram.fit(train, 2, 3)
  with pytest.raises(DataError, match="context ids"):
    ngram.log_probs(model, [0, 1], context=[5])
  with pytest.raises(DataError, match="history ids"):
    ngram.probs_table(model, [3])
  with pytest.raises(DataError, match="no symbols"):
    ngram.bits_per_token(model, [])
  with pytest.raises(ConfigError, match="chunk"):
    ngram.bits_per_token(model, [0, 1], chunk=0)


def _text8_file(tmp_path, num_chars: int = 20_000) -> str:
  """A text8-format file of uniformly random characters (space and a-z)."""
  rng = np.random.default_rng(5)
  path = tmp_path / "text8"
  path.write_bytes(np.frombuffer(b" abcdefghijklmnopqrstuvwxyz", np.uint8)[rng.integers(0, 27, num_chars)])
  return str(path)


def test_command_line_table(tmp_path):
  table = ngram.main([f"--corpus={_text8_file(tmp_path)}", "--orders=1,2", "--split=validation"])
  lines = table.splitlines()
  assert "validation split" in lines[0] and "train 18,000, validation 1,000, test 1,000" in lines[0]
  assert lines[2].startswith("| order | bits per character ± s.e. |")
  rows = [line.split("|")[1:-1] for line in lines[4:]]
  assert [int(row[0]) for row in rows] == [1, 2]
  bpc, error = (float(x) for x in rows[0][1].split("±"))
  assert abs(bpc - np.log2(27)) < 0.05 and 0 < error < 0.1
  assert float(rows[0][2]) == pytest.approx(2**bpc, rel=1e-3)


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--corpus=x", "--order=3"], "unknown option"),
    (["--corpus=x", "stray"], "unknown option"),
    (["--orders=1"], "--corpus is required"),
    (["--corpus=x", "--orders=1,b"], "comma-separated integers"),
  ],
)
def test_command_line_refuses_bad_options(argv, message):
  with pytest.raises(ConfigError, match=message):
    ngram.main(argv)


def test_command_line_refuses_bad_corpora_and_orders(tmp_path):
  with pytest.raises(DataError, match="not found"):
    ngram.main([f"--corpus={tmp_path / 'missing'}"])
  with pytest.raises(ConfigError, match="order must be an integer >= 1, got 0"):
    ngram.main([f"--corpus={_text8_file(tmp_path)}", "--orders=1,0"])


def test_command_line_reports_errors_in_one_line(tmp_path):
  argv = [sys.executable, "-m", "vmd_jax.ngram", f"--corpus={_text8_file(tmp_path)}", "--split=train"]
  result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().startswith("error: split must be one of") and "Traceback" not in result.stderr
