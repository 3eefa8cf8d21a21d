"""The paper's synthetic token sets: exact distributions over short digit sequences, and a tfds builder.

The vocabulary is the 10 digits; the mask id is VOCAB_SIZE (10), which never appears in data. Each set is
known exactly, so evaluation can compare samples against the true support and probabilities.
"""

import dataclasses
import itertools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from vmd_jax.errors import ConfigError, DataError

VOCAB_SIZE = 10

# Nothing here is downloaded; these settings also keep tfds from trying GCS or computing statistics, which
# would need TensorFlow.
_OFFLINE = tfds.download.DownloadConfig(
  compute_stats=tfds.download.ComputeStatsMode.SKIP, try_download_gcs=False
)


class Distribution(NamedTuple):
  """An exact distribution over token sequences: its support and their probabilities."""

  sequences: np.ndarray  # [S, L] int32, the support, each row distinct
  probs: np.ndarray  # [S] float64, all positive, sum 1
  vocab_size: int


def _from_table(table: np.ndarray) -> Distribution:
  """The distribution whose probabilities are table[x1, ..., xL], without its zero entries."""
  # table: [V] * L
  sequences = np.argwhere(table > 0).astype(np.int32)  # [S, L]
  probs = table[tuple(sequences.T)]
  return Distribution(sequences, probs / probs.sum(), VOCAB_SIZE)


def _pair() -> Distribution:
  return _pair_weighted(np.full(VOCAB_SIZE, 1.0 / VOCAB_SIZE))


def _pair_nonuniform() -> Distribution:
  k = np.arange(VOCAB_SIZE)
  return _pair_weighted((k + 1.0) / (k + 1.0).sum())


def _pair_weighted(weights: np.ndarray) -> Distribution:
  """(k, k+1 mod V) with probability weights[k]."""
  k = np.arange(VOCAB_SIZE)
  table = np.zeros((VOCAB_SIZE, VOCAB_SIZE))
  table[k, (k + 1) % VOCAB_SIZE] = weights
  return _from_table(table)


def _pair_corr(p: float) -> Distribution:
  """x1 uniform; x2 = x1+1 mod V with probability p, else uniform and independent of x1."""
  k = np.arange(VOCAB_SIZE)
  table = np.full((VOCAB_SIZE, VOCAB_SIZE), (1.0 - p) / VOCAB_SIZE**2)
  table[k, (k + 1) % VOCAB_SIZE] += p / VOCAB_SIZE
  return _from_table(table)


def _d1() -> Distribution:
  k = np.arange(VOCAB_SIZE)
  table = np.zeros((VOCAB_SIZE,) * 4)
  table[k, (k + 1) % VOCAB_SIZE, (k + 2) % VOCAB_SIZE, (k + 3) % VOCAB_SIZE] = 1.0 / VOCAB_SIZE
  return _from_table(table)


def _d2() -> Distribution:
  first, second = (a.ravel() for a in np.meshgrid(np.arange(VOCAB_SIZE), np.arange(VOCAB_SIZE)))
  table = np.zeros((VOCAB_SIZE,) * 4)
  table[first, (first + 1) % VOCAB_SIZE, second, (second + 1) % VOCAB_SIZE] = 1.0 / VOCAB_SIZE**2
  return _from_table(table)


# The Markov set: x1 uniform, then x_{i+1} = x_i + d mod V with d = 1, 2, 3 at these probabilities. The
# transition matrix is doubly stochastic, so x1's uniform law is stationary and every position is uniform.
MARKOV_INCREMENTS = (1, 2, 3)
MARKOV_PROBS = (0.6, 0.3, 0.1)
MARKOV_LENGTH = 4


def markov_chain(length: int, increments=MARKOV_INCREMENTS, probs=MARKOV_PROBS) -> Distribution:
  """A stationary Markov chain over the digits: x1 uniform, x_{i+1} = x_i + d mod V, d drawn from
  increments at probs, independently at each step. Its support is enumerated ([V * len(increments)^(L-1)]
  sequences, distinct while the increments are distinct mod V), so its entropy is exact:
  log V + (L - 1) * H(probs) (`markov_entropy_rate` is the second term's per-step rate)."""
  if length < 1:
    raise DataError(f"a Markov chain needs length >= 1, got {length}")
  probs = np.asarray(probs, np.float64)
  paths = list(itertools.product(range(len(increments)), repeat=length - 1))
  steps = np.array(paths, np.int64).reshape(len(paths), length - 1)  # [paths, L - 1]: increment indices
  deltas = np.asarray(increments)[steps]
  offsets = np.concatenate([np.zeros((len(deltas), 1), np.int64), np.cumsum(deltas, axis=1)], axis=1)
  start = np.arange(VOCAB_SIZE)
  sequences = (start[:, None, None] + offsets[None]) % VOCAB_SIZE  # [V, paths, L]
  path_probs = np.prod(probs[steps], axis=1)  # the empty product (L = 1) is 1
  probs_all = np.broadcast_to(path_probs / VOCAB_SIZE, (VOCAB_SIZE, len(path_probs)))
  return Distribution(
    sequences.reshape(-1, length).astype(np.int32), probs_all.reshape(-1).copy(), VOCAB_SIZE
  )


def markov_entropy_rate(probs=MARKOV_PROBS) -> float:
  """The chain's entropy per transition in nats, H(probs): the entropy of x_{i+1} given x_i."""
  probs = np.asarray(probs, np.float64)
  return float(-np.sum(probs * np.log(probs)))


def _markov() -> Distribution:
  return markov_chain(MARKOV_LENGTH)


_REGISTRY: dict[str, Callable[..., Distribution]] = {
  "pair": _pair,
  "pair_nonuniform": _pair_nonuniform,
  "pair_corr": _pair_corr,
  "d1": _d1,
  "d2": _d2,
  "markov": _markov,
}
_TAKES_P = ("pair_corr",)
NAMES = tuple(_REGISTRY)


def distribution(name: str, p: float | None = None) -> Distribution:
  """The exact distribution of synthetic set `name`; p is the correlation of 'pair_corr' (only)."""
  if name not in _REGISTRY:
    raise DataError(f"unknown synthetic dataset {name!r}: choose one of {', '.join(NAMES)}")
  if name not in _TAKES_P:
    if p is not None:
      raise DataError(f"dataset {name!r} takes no p, got p = {p}")
    return _REGISTRY[name]()
  if p is None:
    raise DataError(f"dataset {name!r} needs p, the probability that x2 = x1 + 1 mod {VOCAB_SIZE}")
  if not 0.0 <= p <= 1.0:  # also rejects NaN
    raise DataError(f"dataset {name!r}: p = {p} is outside [0, 1]")
  return _REGISTRY[name](float(p))


def entropy_nats(dist: Distribution) -> float:
  """Entropy of the distribution in nats (the support holds no zero probabilities)."""
  return float(-np.sum(dist.probs * np.log(dist.probs)))


def support_index(dist: Distribution, tokens: np.ndarray) -> np.ndarray:
  """Index of each row of tokens [N, L] in dist.sequences, or -1 where the row is outside the support.

  Rows with the mask id or any other out-of-vocabulary token are simply outside the support.
  """
  tokens = np.asarray(tokens)
  if tokens.ndim != 2 or tokens.shape[1] != dist.sequences.shape[1]:
    raise ValueError(f"tokens must be [N, {dist.sequences.shape[1]}], got shape {tokens.shape}")
  num_support = len(dist.sequences)
  rows = np.concatenate([dist.sequences.astype(np.int64), tokens.astype(np.int64)])  # [S + N, L]
  _, inverse = np.unique(rows, axis=0, return_inverse=True)
  inverse = inverse.reshape(-1)  # [S + N], the id of each distinct row
  lookup = np.full(inverse.max() + 1, -1, dtype=np.int64)
  lookup[inverse[:num_support]] = np.arange(num_support)
  return lookup[inverse[num_support:]]


def _sample(dist: Distribution, num: int, rng: np.random.Generator) -> np.ndarray:
  """num iid sequences [num, L] int32 drawn from the distribution."""
  return dist.sequences[rng.choice(len(dist.sequences), size=num, p=dist.probs)]


def tokens_features(length: int) -> tfds.features.FeaturesDict:
  """The example features of every dataset here: one fixed-length int32 token sequence."""
  return tfds.features.FeaturesDict({"tokens": tfds.features.Tensor(shape=(length,), dtype=np.int32)})


def prepare_offline(builder: tfds.core.GeneratorBasedBuilder) -> tfds.core.GeneratorBasedBuilder:
  """Writes the builder's files unless they exist, never touching the network.

  The builder must be made with file_format="array_record": tfrecord needs TensorFlow to read, and
  array_record is what tfds.data_source reads.
  """
  try:
    builder.download_and_prepare(download_config=_OFFLINE)
  except FileExistsError:
    # Another process (a run started beside this one on the same data) wrote the same files first.
    # The builder's config names their content, so this one reads theirs.
    if not builder.data_path.exists():
      raise
    builder.download_and_prepare(download_config=_OFFLINE)
  return builder


def config_int(field: str, value, minimum: int) -> int:
  """value as a Python int (numpy integers allowed), or ConfigError naming data.<field>."""
  if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
    raise ConfigError(f"data.{field} must be an integer >= {minimum}, got {value!r}")
  return int(value)


@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticConfig(tfds.core.BuilderConfig):
  """Which synthetic set, how many examples per split, and the sampling seed."""

  dataset: str
  p: float | None
  num_train: int
  num_test: int
  seed: int


class SyntheticTokens(tfds.core.GeneratorBasedBuilder):
  """iid samples of a synthetic set: 'train' and 'test' splits from independent seeded streams."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIG_CLASS = SyntheticConfig

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    length = distribution(cfg.dataset, cfg.p).sequences.shape[1]
    # dataset_info_from_configs would look for metadata files next to this module; there are none.
    return tfds.core.DatasetInfo(builder=self, features=tokens_features(length))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    cfg = self.builder_config
    return {
      "train": self._generate_examples(num=cfg.num_train, stream=0),
      "test": self._generate_examples(num=cfg.num_test, stream=1),
    }

  def _generate_examples(self, num: int, stream: int):
    cfg = self.builder_config
    tokens = _sample(distribution(cfg.dataset, cfg.p), num, np.random.default_rng([cfg.seed, stream]))
    for i, row in enumerate(tokens):
      yield i, {"tokens": row}


def prepare(
  name: str, p: float | None, num_train: int, num_test: int, seed: int, data_dir: str | None
) -> SyntheticTokens:
  """The prepared builder of a synthetic set, generated into data_dir (None: tfds default) if needed.

  The config name encodes every parameter, so different parameters never share prepared files.
  """
  distribution(name, p)  # validates name and p before any tfds work
  num_train = config_int("num_train", num_train, minimum=1)
  num_test = config_int("num_test", num_test, minimum=1)
  seed = config_int("seed", seed, minimum=0)
  p = None if p is None else float(p)
  p_part = "" if p is None else f"_p{p}"
  config = SyntheticConfig(
    name=f"{name}{p_part}_n{num_train}_{num_test}_s{seed}",
    dataset=name,
    p=p,
    num_train=num_train,
    num_test=num_test,
    seed=seed,
  )
  return prepare_offline(SyntheticTokens(config=config, data_dir=data_dir, file_format="array_record"))
