"""Datasets in memory, and deterministic, resumable, multi-process batches drawn from them.

A batch is a pure function of (step, seed): the example stream is a concatenation of epochs, each a seeded
permutation of the examples, so a run resumed at step s sees exactly the batches of an uninterrupted run.
"""

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds

from vmd_jax import distributed
from vmd_jax.data import sequences, sudoku, synthetic, text
from vmd_jax.errors import DataError


def _synthetic(d):
  builder = synthetic.prepare(d.name, d.p, d.num_train, d.num_test, d.seed, d.data_dir)
  return builder, synthetic.VOCAB_SIZE, None


def _sequences(d):
  if not d.path:
    raise DataError("dataset 'sequences' needs data.path, a .npy file of token ids [N, L]")
  builder, vocab_size = sequences.prepare(d.path, d.test_fraction, d.seed, d.vocab_size, d.data_dir)
  return builder, vocab_size, None


def _sudoku(d):
  return sudoku.prepare(d), sudoku.VOCAB_SIZE, None


# data.name -> prepare(data_config) -> (prepared tfds builder, vocab_size, decode or None). Each
# data module documents the data_config fields it reads.
SOURCES: dict[str, Callable] = {
  **{name: _synthetic for name in synthetic.NAMES},
  "sequences": _sequences,
  "sudoku": _sudoku,
  "sudoku_file": _sudoku,
  **{name: text.prepare for name in text.NAMES},
}

# Examples decoded per data-source call: few calls, yet a bounded list of decoded dicts at a time.
_READ_CHUNK = 65536


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Train and test token sequences in memory, with what a model and evaluation need to know."""

  name: str
  train: np.ndarray  # [num_train, length] int32
  test: np.ndarray  # [num_test, length] int32
  vocab_size: int  # token ids are in [0, vocab_size); the mask id is vocab_size
  # [num_train, length] bool: the given tokens of each example (clues, prompts), never masked; None: none
  train_given: np.ndarray | None = None
  test_given: np.ndarray | None = None  # [num_test, length] bool
  decode: Callable[[np.ndarray], str] | None = None  # token ids [length] -> text, for datasets of text
  # the builder's other splits (validation sets, a second test set): split -> {"tokens", "given"?} [N, L]
  splits: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
  # what the tokens are, wherever their source lies: the prepared builder's full name, which names its
  # content (a corpus's hash, a generator's parameters) and version; checkpoints keep it, so that a run
  # resumes on the same data read from another path (checkpoints.Checkpointer.check_matches)
  content: str = ""

  @property
  def length(self) -> int:
    """Tokens per sequence."""
    return self.train.shape[1]


def _read_split(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, np.ndarray]:
  """Every feature of a prepared split as an array [N, L]: tokens (int32) and, if present, given."""
  source = builder.as_data_source(split=split)
  features = builder.info.features
  arrays = {
    name: np.empty((len(source),) + features[name].shape, dtype=features[name].np_dtype) for name in features
  }
  for start in range(0, len(source), _READ_CHUNK):
    stop = min(start + _READ_CHUNK, len(source))
    examples = source.__getitems__(list(range(start, stop)))
    for name, array in arrays.items():
      array[start:stop] = np.stack([example[name] for example in examples])
  return arrays


def load(data_config) -> Dataset:
  """Prepares (if needed) and reads the dataset that data_config.name names (a key of SOURCES).

  The fields each dataset reads are documented where it is built: vmd_jax/data/synthetic.py,
  sequences.py, sudoku.py and text.py. With several processes, process 0 prepares and the others then
  read. Tokens are int32 whatever the stored dtype.
  """
  if data_config.name not in SOURCES:
    raise DataError(f"unknown dataset {data_config.name!r}: choose one of {', '.join(SOURCES)}")
  source = SOURCES[data_config.name]
  builder, vocab_size, decode = distributed.once("prepare_data", lambda: source(data_config))
  train, test = _read_split(builder, "train"), _read_split(builder, "test")
  others = sorted(set(builder.info.splits) - {"train", "test"})
  splits = {}
  for split in others:
    arrays = _read_split(builder, split)
    arrays["tokens"] = arrays["tokens"].astype(np.int32, copy=False)
    splits[split] = arrays
  return Dataset(
    name=data_config.name,
    train=train["tokens"].astype(np.int32, copy=False),
    test=test["tokens"].astype(np.int32, copy=False),
    vocab_size=vocab_size,
    train_given=train.get("given"),
    test_given=test.get("given"),
    decode=decode,
    splits=splits,
    content=builder.info.full_name,
  )


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The permutation [num_examples] of epoch `epoch`; cached since consecutive steps share an epoch."""
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  order.flags.writeable = False  # shared by every caller through the cache
  return order


def batch_indices(step: int, global_batch: int, num_examples: int, seed: int) -> np.ndarray:
  """Example indices [global_batch] of global batch `step`: stream positions [step * B, (step + 1) * B).

  Epoch e of the stream is the permutation of range(num_examples) drawn from default_rng([seed, e]); a
  batch may span epochs.
  """
  if step < 0 or global_batch < 1 or num_examples < 1:
    raise ValueError(
      f"need step >= 0, global_batch >= 1, num_examples >= 1; got {step}, {global_batch}, {num_examples}"
    )
  positions = step * global_batch + np.arange(global_batch, dtype=np.int64)  # [global_batch]
  epochs = positions // num_examples
  indices = np.empty(global_batch, dtype=np.int64)
  for epoch in range(int(epochs[0]), int(epochs[-1]) + 1):
    in_epoch = epochs == epoch
    indices[in_epoch] = _epoch_order(seed, epoch, num_examples)[positions[in_epoch] % num_examples]
  return indices


def process_batch(
  tokens: np.ndarray, step: int, global_batch: int, seed: int, process_index: int, process_count: int
) -> np.ndarray:
  """This process's contiguous share [global_batch // process_count, L] of global batch `step` of tokens.

  The processes' shares, in process order, concatenate to the global batch.
  """
  if global_batch % process_count != 0:
    raise ValueError(f"global batch {global_batch} does not divide among {process_count} processes")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is outside [0, {process_count})")
  per_process = global_batch // process_count
  indices = batch_indices(step, global_batch, len(tokens), seed)  # [global_batch]
  return tokens[indices[process_index * per_process : (process_index + 1) * per_process]]
