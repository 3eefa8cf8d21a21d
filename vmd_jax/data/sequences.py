"""A user's own token sequences: an int array [num_sequences, length] in a .npy file, as a tfds builder.

The file is validated before any tfds work, so a malformed file is reported as one line (DataError).
Prepared files are keyed by a hash of the file's content, so editing the file leads to a fresh split.
"""

import dataclasses
import hashlib
import math
import os

import numpy as np
import tensorflow_datasets as tfds

from vmd_jax.data.synthetic import config_int, prepare_offline, tokens_features
from vmd_jax.errors import ConfigError, DataError

_INT32_MAX = np.iinfo(np.int32).max


def _load(path: str) -> np.ndarray:
  """The array in path, or DataError if the file is missing or is not a single .npy array."""
  if not os.path.isfile(path):
    raise DataError(f"data file not found: {path}")
  with open(path, "rb") as f:
    prefix = f.read(len(np.lib.format.MAGIC_PREFIX))
  # Checked here because np.load would call anything else (text, .npz) a refused pickle.
  if prefix != np.lib.format.MAGIC_PREFIX:
    raise DataError(f"{path} is not a .npy file (no .npy header); write it with numpy.save")
  try:
    return np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    problem = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise DataError(f"cannot read {path} as a .npy array: {problem}") from None


def read_npy(path: str, vocab_size: int | None = None) -> tuple[np.ndarray, int]:
  """Token ids [N, L] int32 from a .npy file, and the vocabulary size (max id + 1 if not given).

  Raises DataError naming the file and the problem if it is missing or malformed.
  """
  path = os.fspath(path)
  tokens = _load(path)
  if tokens.ndim != 2:
    raise DataError(f"{path}: expected a 2-D array [num_sequences, length], got shape {tokens.shape}")
  if not np.issubdtype(tokens.dtype, np.integer):
    raise DataError(f"{path}: expected integer token ids, got dtype {tokens.dtype}")
  num, length = tokens.shape
  if num < 2:
    raise DataError(f"{path}: need at least 2 sequences (train and test), got {num}")
  if length < 1:
    raise DataError(f"{path}: sequences are empty (length 0)")
  low, high = int(tokens.min()), int(tokens.max())
  if low < 0:
    raise DataError(f"{path}: token ids must be non-negative, found {low}")
  if high > _INT32_MAX:
    raise DataError(f"{path}: token id {high} does not fit in int32")
  if vocab_size is None:
    return tokens.astype(np.int32), high + 1
  vocab_size = config_int("vocab_size", vocab_size, minimum=1)
  if high >= vocab_size:
    raise DataError(f"{path}: token id {high} is >= vocab_size {vocab_size}")
  return tokens.astype(np.int32), vocab_size


def content_hash(path: str) -> str:
  """First 12 hex digits of the file's sha256."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()[:12]


def split_sizes(num: int, test_fraction: float) -> tuple[int, int]:
  """(num_train, num_test): test is ceil(test_fraction * num), kept within [1, num - 1]."""
  # Rounding first keeps e.g. 0.1 * 30 = 3.0000000000000004 from becoming 4.
  num_test = min(max(1, math.ceil(round(test_fraction * num, 9))), num - 1)
  return num - num_test, num_test


@dataclasses.dataclass(eq=False, kw_only=True)
class NpyConfig(tfds.core.BuilderConfig):
  """Which file, how much of it to hold out for test, the split seed and the vocabulary size."""

  path: str
  test_fraction: float
  seed: int
  vocab_size: int | None


class NpySequences(tfds.core.GeneratorBasedBuilder):
  """The rows of a .npy file, split by a seeded permutation into 'train' and 'test'."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIG_CLASS = NpyConfig

  def _info(self) -> tfds.core.DatasetInfo:
    # Only the header is read here: the shape fixes the features.
    length = np.load(self.builder_config.path, mmap_mode="r", allow_pickle=False).shape[1]
    return tfds.core.DatasetInfo(builder=self, features=tokens_features(length))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    cfg = self.builder_config
    tokens, _ = read_npy(cfg.path, cfg.vocab_size)
    num_train, _ = split_sizes(len(tokens), cfg.test_fraction)
    order = np.random.default_rng(cfg.seed).permutation(len(tokens))  # [N]
    return {
      "train": self._generate_examples(tokens=tokens, rows=order[:num_train]),
      "test": self._generate_examples(tokens=tokens, rows=order[num_train:]),
    }

  def _generate_examples(self, tokens: np.ndarray, rows: np.ndarray):
    for row in rows:
      yield int(row), {"tokens": tokens[row]}


def prepare(
  path: str, test_fraction: float, seed: int, vocab_size: int | None, data_dir: str | None
) -> tuple[NpySequences, int]:
  """The prepared builder of a .npy file (generated into data_dir if needed) and its vocabulary size."""
  path = os.fspath(path)
  _, vocab_size = read_npy(path, vocab_size)
  if not 0.0 < test_fraction < 1.0:  # also rejects NaN
    raise ConfigError(f"data.test_fraction must be in (0, 1), got {test_fraction!r}")
  seed = config_int("seed", seed, minimum=0)
  config = NpyConfig(
    name=f"h{content_hash(path)}_t{float(test_fraction)}_s{seed}",
    path=os.path.abspath(path),
    test_fraction=float(test_fraction),
    seed=seed,
    vocab_size=vocab_size,
  )
  builder = NpySequences(config=config, data_dir=data_dir, file_format="array_record")
  return prepare_offline(builder), vocab_size
