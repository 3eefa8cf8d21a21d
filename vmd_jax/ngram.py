"""Character n-gram baselines: interpolated Kneser-Ney in numpy, and
`python -m vmd_jax.ngram --corpus=FILE [--orders=1,2,3,4,5,6,7] [--split=test|validation] [--chunk=64]`.

The model of order n over V symbols is interpolated Kneser-Ney with one absolute discount per order
(Chen & Goodman 1998, with D_k = n1 / (n1 + 2 n2)):

    P_k(w | h) = (max(c_k(h w) - D_k, 0) + D_k N1+(h .) P_{k-1}(w | h')) / c_k(h)

where h' is h without its oldest symbol, c_k(h) = sum_w c_k(h w) and N1+(h .) is the number of w with
c_k(h w) > 0. The highest order counts n-grams (c_n = raw counts); each lower order k counts the distinct
symbols seen right before a k-gram in the training stream (c_k(h w) = N1+(. h w), continuation counts).
A context h never seen (c_k(h) = 0) backs off fully: P_k(w | h) = P_{k-1}(w | h'). The recursion ends in
the uniform P_0(w) = 1 / V. D_k comes from the count-of-counts n1, n2 of order k's counts as used; where
n1 = 0 it is FALLBACK_DISCOUNT, so that every probability stays positive.

An n-gram (x_1 .. x_k) is the int64 key sum_j x_j V^(k - j); counts are runs of sorted keys and lookups
are binary searches, all vectorised over positions. The evaluated text is one stream: the symbol at
position i is predicted from the min(i, n - 1) symbols before it (with an optional unscored `context`
prepended), so the first positions use the lower orders of the same model.

The command line reads a text8-format file (space and a-z), splits it like text8 (the first 90% train,
the next 5% validation, the last 5% test), fits each order on train and prints, for the scored split
(whose context is the n - 1 characters right before it), a markdown table of bits per character with
its standard error over chunks, perplexity 2^bpc, the bits per character of the split scored as
independent chunks without history before each (as a model of sequences of --chunk characters scores
the split's examples), and seconds to fit and score.
"""

import dataclasses
import sys
import time

import numpy as np

from vmd_jax.data.text import TEXT8_ALPHABET, read_text8, text8_bounds, text8_source
from vmd_jax.errors import ConfigError, DataError, VMDError

FALLBACK_DISCOUNT = 0.5  # D_k where order k has no count of one (KenLM's fallback for that case)
SPLITS = ("validation", "test")
DEFAULT_ORDERS = (1, 2, 3, 4, 5, 6, 7)
USAGE = "usage: --corpus=FILE [--orders=1,2,3,4,5,6,7] [--split=test|validation] [--chunk=64]"


@dataclasses.dataclass(frozen=True, eq=False)
class Level:
  """The counts c_k of one order k of a Kneser-Ney model, and its discount D_k."""

  keys: np.ndarray  # [m] int64, sorted: the k-grams with c_k > 0
  counts: np.ndarray  # [m] int64: c_k(h w), raw counts at the highest order, N1+(. h w) below it
  context_keys: np.ndarray  # [c] int64, sorted: the (k-1)-gram contexts h with c_k(h) > 0
  context_totals: np.ndarray  # [c] int64: c_k(h) = sum_w c_k(h w)
  context_types: np.ndarray  # [c] int64: N1+(h .), the number of w with c_k(h w) > 0
  discount: float  # D_k


@dataclasses.dataclass(frozen=True, eq=False)
class KneserNey:
  """An interpolated Kneser-Ney model of `order` n over symbols 0 .. vocab_size - 1; levels[k - 1] is
  order k, for k = 1 .. n."""

  order: int
  vocab_size: int
  levels: tuple[Level, ...]


def _check_order(order: int, vocab_size: int) -> None:
  """ConfigError unless order >= 1, vocab_size >= 1 and every key < vocab_size ** order fits int64."""
  if not isinstance(order, (int, np.integer)) or order < 1:
    raise ConfigError(f"n-gram order must be an integer >= 1, got {order!r}")
  if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
    raise ConfigError(f"n-gram vocab_size must be an integer >= 1, got {vocab_size!r}")
  if int(vocab_size) ** int(order) > np.iinfo(np.int64).max:
    raise ConfigError(f"n-gram keys overflow int64: vocab_size ** order = {vocab_size}^{order} >= 2^63")


def _checked_ids(ids, vocab_size: int, what: str) -> np.ndarray:
  """ids as a 1-D int64 array [N]; DataError unless they are integers in [0, vocab_size)."""
  ids = np.asarray(ids)
  if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
    raise DataError(f"{what} must be a 1-D integer array, got dtype {ids.dtype} and shape {ids.shape}")
  ids = ids.astype(np.int64)
  bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
  if len(bad):
    raise DataError(f"{what}: id {ids[bad[0]]} at position {bad[0]} is outside [0, {vocab_size})")
  return ids


def _gram_keys(ids: np.ndarray, k: int, vocab_size: int) -> np.ndarray:
  """The key of the k-gram starting at each position of ids [N]: [N - k + 1] int64."""
  num = len(ids) - k + 1
  keys = np.zeros(num, dtype=np.int64)
  for j in range(k):
    keys = keys * vocab_size + ids[j : j + num]
  return keys


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The distinct values [m] of sorted_keys [N] and the length of each one's run [m]."""
  starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])  # [m]
  return sorted_keys[starts], np.diff(np.r_[starts, len(sorted_keys)])


def _insert(sorted_keys: np.ndarray, key: int) -> np.ndarray:
  """sorted_keys [m] (distinct) with key added in its place unless it is there already."""
  i = np.searchsorted(sorted_keys, key)
  if i < len(sorted_keys) and sorted_keys[i] == key:
    return sorted_keys
  return np.insert(sorted_keys, i, key)


def _level(keys: np.ndarray, counts: np.ndarray, vocab_size: int) -> Level:
  """Order k's Level from its k-gram keys [m] (sorted, distinct) and their counts c_k [m]."""
  context_keys, context_types = _runs(keys // vocab_size)  # sorted keys have sorted contexts
  starts = np.cumsum(context_types) - context_types  # [c] first k-gram of each context
  n1, n2 = np.count_nonzero(counts == 1), np.count_nonzero(counts == 2)
  discount = n1 / (n1 + 2 * n2) if n1 else FALLBACK_DISCOUNT
  totals = np.add.reduceat(counts, starts)  # [c]
  return Level(keys, counts, context_keys, totals, context_types, discount)


def fit(train_ids, order: int, vocab_size: int) -> KneserNey:
  """Fit an interpolated Kneser-Ney model to one training stream.

  Args:
    train_ids: the training symbols [N], integers in [0, vocab_size), as one stream (N >= order).
    order: n, the model's order; the longest history is n - 1 symbols.
    vocab_size: V, the number of symbols; vocab_size ** order must fit in int64.

  Returns:
    A KneserNey model with raw counts at order n and continuation counts N1+(. h w) below it.

  Raises ConfigError for a bad order or vocab_size, DataError for ids out of range or too few of them.
  """
  _check_order(order, vocab_size)
  order, vocab_size = int(order), int(vocab_size)
  ids = _checked_ids(train_ids, vocab_size, "train ids")
  if len(ids) < order:
    raise DataError(f"the train split has {len(ids)} symbols, fewer than the order {order}")
  keys, counts = _runs(np.sort(_gram_keys(ids, order, vocab_size)))  # distinct n-grams
  levels = [_level(keys, counts, vocab_size)]
  for k in range(order - 1, 0, -1):
    # N1+(. h w): the distinct (k+1)-grams whose last k symbols are h w
    suffixes, continuation = _runs(np.sort(keys % vocab_size**k))
    levels.append(_level(suffixes, continuation, vocab_size))
    # the distinct k-grams: those after a symbol (suffixes), and the k-gram that starts the stream
    keys = _insert(suffixes, int(_gram_keys(ids[:k], k, vocab_size)[0]))
  return KneserNey(order, vocab_size, tuple(reversed(levels)))


def _lookup(sorted_keys: np.ndarray, queries: np.ndarray, *values: np.ndarray) -> list[np.ndarray]:
  """For each array of values [m] aligned with sorted_keys [m]: its value at each query [M], 0 where
  the query is not among the keys."""
  index = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)  # [M]
  found = sorted_keys[index] == queries  # [M]
  return [np.where(found, v[index], 0) for v in values]


def _probs(model: KneserNey, windows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """P_n(w | h) [M] for w = windows[:, -1] and h its last lengths [M] (<= n - 1) symbols before it in
  windows [M, n] (columns before those are padding)."""
  n, vocab_size = model.order, model.vocab_size
  p = np.full(len(windows), 1.0 / vocab_size)  # [M] P_0
  context = np.zeros(len(windows), dtype=np.int64)  # [M] key of the k - 1 symbols before w
  for k, level in enumerate(model.levels, start=1):
    if k > 1:
      context += windows[:, n - k] * vocab_size ** (k - 2)
    (count,) = _lookup(level.keys, context * vocab_size + windows[:, -1], level.counts)
    total, types = _lookup(level.context_keys, context, level.context_totals, level.context_types)
    seen = (lengths >= k - 1) & (total > 0)  # otherwise P_k = P_{k-1}
    d = level.discount
    p = np.where(seen, (np.maximum(count - d, 0) + d * types * p) / np.maximum(total, 1), p)
  return p


def log_probs(model: KneserNey, ids, context=None, window: int = 0) -> np.ndarray:
  """log2 P_n(ids[i] | history) [N] for each position of one stream.

  Args:
    model: a fitted KneserNey model of order n.
    ids: the scored symbols [N].
    context: symbols [C] that come right before ids: history, not scored (none by default).
    window: if positive, ids are scored as independent windows of this many symbols, each without
      history before its start (as a model of sequences of that length scores them); context unused.

  Returns:
    Base-2 log probabilities [N]; position i's history is the min(C + i, n - 1) symbols before it
    (with a window, the min(i mod window, n - 1) symbols of its own window before it).
  """
  n, vocab_size = model.order, model.vocab_size
  context = _checked_ids([] if context is None else context, vocab_size, "context ids")
  ids = _checked_ids(ids, vocab_size, "ids")
  if not len(ids):
    return np.zeros(0)
  stream = np.concatenate([np.zeros(n - 1, dtype=np.int64), context, ids])  # [n - 1 + C + N]
  windows = np.lib.stride_tricks.sliding_window_view(stream, n)[len(context) :]  # [N, n]
  positions = np.arange(len(ids)) % window if window > 0 else np.arange(len(ids)) + len(context)  # [N]
  return np.log2(_probs(model, windows, np.minimum(positions, n - 1)))


def probs_table(model: KneserNey, history) -> np.ndarray:
  """The next-symbol distribution P_n(. | history) [V] after history [H] (its last n - 1 symbols)."""
  n, vocab_size = model.order, model.vocab_size
  history = _checked_ids(history, vocab_size, "history ids")
  history = history[max(len(history) - (n - 1), 0) :]  # [min(H, n - 1)]
  padded = np.concatenate([np.zeros(n - 1 - len(history), dtype=np.int64), history])  # [n - 1]
  windows = np.concatenate(
    [np.broadcast_to(padded, (vocab_size, n - 1)), np.arange(vocab_size)[:, None]], axis=1
  )  # [V, n]
  return _probs(model, windows, np.full(vocab_size, len(history)))


def bits_per_token(
  model: KneserNey, ids, context=None, chunk: int = 64, windowed: bool = False
) -> tuple[float, float]:
  """Bits per token of one stream, with its standard error over chunks.

  Args:
    model: a fitted KneserNey model.
    ids: the scored symbols [N] (N >= 1).
    context: unscored symbols [C] right before ids (see log_probs).
    chunk: the length of the chunks that the standard error is computed over.
    windowed: score each chunk without the history before it (log_probs' window = chunk).

  Returns:
    (mean, standard error): the mean of -log2 P_n(ids[i] | history) over the N positions, and the
    standard deviation (ddof=1) of the means of the N // chunk non-overlapping chunks of `chunk`
    consecutive positions (a remainder is left out) over sqrt(N // chunk); nan for fewer than 2 chunks.
  """
  if not isinstance(chunk, int) or chunk < 1:
    raise ConfigError(f"chunk must be an integer >= 1, got {chunk!r}")
  bits = -log_probs(model, ids, context, chunk if windowed else 0)  # [N]
  if not len(bits):
    raise DataError("no symbols to score")
  num_chunks = len(bits) // chunk
  means = bits[: num_chunks * chunk].reshape(num_chunks, chunk).mean(axis=1)  # [num_chunks]
  error = means.std(ddof=1) / np.sqrt(num_chunks) if num_chunks >= 2 else float("nan")
  return float(bits.mean()), float(error)


def split_table(ids: np.ndarray, split: str, orders=DEFAULT_ORDERS, chunk: int = 64) -> str:
  """Kneser-Ney baselines of a text8-format corpus as a markdown table.

  Args:
    ids: the corpus's text8 ids [N] (space = 0, a-z = 1-26), split 90/5/5 as text8_bounds does.
    split: the scored split, 'validation' or 'test'; its context is the n - 1 characters before it.
    orders: the orders n to fit on the train split, a row each.
    chunk: the chunk length of the standard error (see bits_per_token).

  Returns:
    A header line (the split and the characters per split), then a table of bits per character
    ± standard error, perplexity 2^bpc and the seconds taken to fit and score, for each order.
  """
  if split not in SPLITS:
    raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
  for order in orders:
    _check_order(order, len(TEXT8_ALPHABET))
  bounds = text8_bounds(len(ids))
  (train_start, train_stop), (start, stop) = bounds["train"], bounds[split]
  sizes = ", ".join(f"{name} {b - a:,}" for name, (a, b) in bounds.items())
  lines = [
    f"Kneser-Ney on the {split} split; characters per split: {sizes}",
    "",
    f"| order | bits per character ± s.e. | perplexity (2^bpc) | bits per character, windows of {chunk} "
    "± s.e. | seconds |",
    "|---|---|---|---|---|",
  ]
  for order in orders:
    began = time.perf_counter()
    model = fit(ids[train_start:train_stop], order, len(TEXT8_ALPHABET))
    bpc, error = bits_per_token(model, ids[start:stop], ids[max(start - order + 1, 0) : start], chunk)
    alone, alone_error = bits_per_token(model, ids[start:stop], chunk=chunk, windowed=True)
    seconds = time.perf_counter() - began
    cells = (
      f"{bpc:.4f} ± {error:.4f}",
      f"{2**bpc:.3f}",
      f"{alone:.4f} ± {alone_error:.4f}",
      f"{seconds:.1f}",
    )
    lines.append(f"| {order} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _parse(argv: list[str]) -> dict[str, str]:
  """{--name: value} of command-line options --name=value; ConfigError for anything else."""
  options = dict(a.split("=", 1) for a in argv if a.startswith("--") and "=" in a)
  unknown = sorted(set(options) - {"--corpus", "--orders", "--split", "--chunk"})
  unknown += [a for a in argv if not (a.startswith("--") and "=" in a)]
  if unknown:
    raise ConfigError(f"ngram: unknown option(s) {unknown}; {USAGE}")
  if "--corpus" not in options:
    raise ConfigError(f"ngram: --corpus is required; {USAGE}")
  return options


def main(argv: list[str]) -> str:
  """The table of split_table for the command-line options argv (without the program name)."""
  options = _parse(argv)
  try:
    orders = tuple(int(o) for o in options.get("--orders", ",".join(map(str, DEFAULT_ORDERS))).split(","))
    chunk = int(options.get("--chunk", "64"))
  except ValueError as e:
    raise ConfigError(f"ngram: --orders takes comma-separated integers, --chunk an integer ({e})") from e
  ids = read_text8(text8_source(options["--corpus"]))  # [num_chars]
  return split_table(ids, options.get("--split", "test"), orders, chunk)


if __name__ == "__main__":
  try:
    print(main(sys.argv[1:]))
  except VMDError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
