"""Tests of the text datasets: text8 from a local zip, a local text file or folder, and the integration."""

import importlib.util
import os
import zipfile

import numpy as np
import pytest
from conftest import REPO

from vmd_jax import tasks
from vmd_jax.data import pipeline, text
from vmd_jax.errors import ConfigError, DataError
from vmd_jax.validation import validate

SEQ = 64


pytestmark = pytest.mark.usefixtures("no_network")  # a tfds download attempt fails at once


def _config(data_dir, name, path, **overrides):
  """The library defaults with a text dataset, small examples and a private tfds dir."""
  config = tasks.base_config("text")
  config.data.name = name
  config.data.path = str(path)
  config.data.data_dir = str(data_dir)
  config.data.seq_length = SEQ
  for field, value in overrides.items():
    config.data[field] = value
  return config


def _text8_corpus(num_chars: int = 20_000) -> str:
  """Words of random letters separated by single spaces, with text8's leading space."""
  rng = np.random.default_rng(0)
  words, total = [], 0
  while total < num_chars:
    words.append("".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=rng.integers(1, 10))))
    total += len(words[-1]) + 1
  return (" " + " ".join(words))[:num_chars]


def _write_zip(path, content: str, member: str = "text8"):
  with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
    archive.writestr(member, content)
  return path


def _decoded(builder, split: str, decode) -> str:
  return "".join(decode(row) for row in pipeline._read_split(builder, split)["tokens"])


# --- text8 ---


def test_text8_zip_splits_90_5_5_and_decodes_back(tmp_path):
  corpus = _text8_corpus()  # 20,000 characters: 18,000 / 1,000 / 1,000
  path = _write_zip(tmp_path / "text8.zip", corpus)
  builder, vocab_size, decode = text.prepare(_config(tmp_path / "tfds", "text8", path).data)
  assert vocab_size == 27 and decode(np.array([0, 1, 26, 27])) == " az\ufffd"  # 27: the mask id
  sizes = {split: builder.info.splits[split].num_examples for split in ("train", "validation", "test")}
  assert sizes == {"train": 18_000 // SEQ, "validation": 1_000 // SEQ, "test": 1_000 // SEQ}
  for split, (start, stop) in text.text8_bounds(len(corpus)).items():
    kept = (stop - start) // SEQ * SEQ  # the remainder of each split is dropped
    assert _decoded(builder, split, decode) == corpus[start : start + kept]
  assert text.text8_bounds(100_000_000) == {
    "train": (0, 90_000_000),
    "validation": (90_000_000, 95_000_000),
    "test": (95_000_000, 100_000_000),
  }


def test_text8_from_a_folder_and_through_the_pipeline(tmp_path):
  corpus = _text8_corpus()
  (tmp_path / "zipped").mkdir()
  _write_zip(tmp_path / "zipped" / "text8.zip", corpus)
  (tmp_path / "plain").mkdir()
  (tmp_path / "plain" / "text8").write_text(corpus)
  datasets = [
    pipeline.load(_config(tmp_path / "tfds", "text8", tmp_path / f).data) for f in ("zipped", "plain")
  ]
  for data in datasets:
    assert data.train.dtype == np.int32 and data.test.dtype == np.int32
    assert data.train.shape == (18_000 // SEQ, SEQ) and data.test.shape == (1_000 // SEQ, SEQ)
    assert data.vocab_size == 27 and data.train_given is None and data.length == SEQ
    assert data.decode(data.train[0]) == corpus[:SEQ]
    assert data.decode(data.test[-1]) == corpus[19_000 + 14 * SEQ : 19_000 + 15 * SEQ]
  np.testing.assert_array_equal(datasets[0].train, datasets[1].train)


def test_a_run_resumes_on_its_corpus_at_another_path_and_not_on_another_corpus(tmp_path):
  from conftest import load_config, shrink

  from vmd_jax import trainer
  from vmd_jax.errors import CheckpointError

  corpus = _text8_corpus()
  for folder, content in (("here", corpus), ("moved", corpus), ("other", corpus[1:] + " ")):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "text8").write_text(content)

  def run_on(folder):
    config = shrink(load_config("text8.py", "mdm,block4,cpu"), str(tmp_path / "tfds"))
    config.data.path = str(tmp_path / folder)
    return trainer.Run(config, str(tmp_path / "run"), pipeline.load(config.data))

  run = run_on("here")
  run.train(until_step=1)
  run.save()
  run.close()
  moved = run_on("moved")  # the same characters at another path: the checkpoint is restored
  assert moved.step == 1
  moved.close()
  with pytest.raises(CheckpointError, match="data.path="):  # other characters: refused
    run_on("other")


def test_a_model_of_long_windows_is_evaluated_on_shorter_ones_and_never_trained_there(tmp_path):
  """Evaluation and sampling may score a checkpoint on shorter windows than it was trained on (the
  parameters are those of model.max_length); resuming training on them is refused."""
  import jax
  from conftest import load_config, shrink

  from vmd_jax import trainer
  from vmd_jax.errors import CheckpointError

  (tmp_path / "corpus").mkdir()
  (tmp_path / "corpus" / "text8").write_text(_text8_corpus())

  def run_on(seq_length, max_length=2 * SEQ, **kwargs):
    config = shrink(load_config("text8.py", "mdm,block4,cpu"), str(tmp_path / "tfds"))
    config.data.path = str(tmp_path / "corpus")
    config.data.seq_length, config.model.max_length = seq_length, max_length
    return trainer.Run(config, str(tmp_path / "run"), pipeline.load(config.data), **kwargs)

  run = run_on(2 * SEQ)
  run.train(until_step=1)
  run.save()
  trained = jax.device_get(run.state.params)
  run.close()
  with pytest.raises(CheckpointError, match="data.seq_length=128 .checkpoint. vs 64"):
    run_on(SEQ)  # to train on: refused
  short = run_on(SEQ, evaluate_only=True)
  assert short.step == 1 and short.dataset.length == SEQ
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(short.state.params), trained)
  for write in (short.train, short.save):  # nothing written under a config the checkpoint refuses
    with pytest.raises(ValueError, match="evaluation only"):
      write()
  short.close()
  with pytest.raises(CheckpointError, match="model.max_length=128 .checkpoint. vs 64"):
    run_on(SEQ, max_length=SEQ, evaluate_only=True)  # other positions: other parameters


def test_text8_download_route_reads_the_extracted_file(tmp_path):
  """The download branch, with a stand-in download manager (the real one is never called in tests)."""
  (tmp_path / "extracted").mkdir()
  (tmp_path / "extracted" / "text8").write_text(_text8_corpus(2_000))

  class Downloads:
    def download_and_extract(self, url):
      assert url == text.TEXT8_URL
      return tmp_path / "extracted"

  config = text.Text8Config(name=f"download_l{SEQ}", path=None, seq_length=SEQ)
  builder = text.Text8(config=config, data_dir=str(tmp_path / "tfds"), file_format="array_record")
  splits = builder._split_generators(Downloads())
  assert [sum(1 for _ in splits[s]) for s in ("train", "validation", "test")] == [1_800 // SEQ, 1, 1]


@pytest.mark.parametrize(
  "content, message",
  [
    ("hello world\n", r"character '\\n' at offset 11 is outside text8's alphabet"),
    ("Hello", "character 'H' at offset 0"),
    ("caf\u00e9", "byte 0xc3 at offset 3"),
    ("", "empty"),
  ],
)
def test_text8_rejects_bad_corpora_before_any_tfds_work(tmp_path, content, message):
  path = _write_zip(tmp_path / "text8.zip", content)
  with pytest.raises(DataError, match=message) as info:
    text.prepare(_config(tmp_path / "tfds", "text8", path).data)
  assert "\n" not in str(info.value) and "text8.zip" in str(info.value)
  assert not (tmp_path / "tfds").exists()


def test_text8_rejects_missing_and_malformed_sources(tmp_path):
  with pytest.raises(DataError, match="not found"):
    text.prepare(_config(tmp_path / "tfds", "text8", tmp_path / "nope.zip").data)
  with pytest.raises(DataError, match="neither text8.zip nor text8"):
    text.prepare(_config(tmp_path / "tfds", "text8", tmp_path).data)
  with pytest.raises(DataError, match="no file named text8"):
    text.prepare(_config(tmp_path / "tfds", "text8", _write_zip(tmp_path / "t.zip", "abc", "other")).data)
  with pytest.raises(DataError, match=r"the validation split \(50 of 1000 characters\) is shorter than"):
    text.prepare(_config(tmp_path / "tfds", "text8", _write_zip(tmp_path / "t8.zip", "a" * 1000)).data)


# --- a local text file or folder ---


def _folder(
  tmp_path, first="Première ligne — naïve café.\n", second="Second file: 🙂 emoji and plain ASCII."
):
  """A folder of two files, one nested, in sorted order 'a.txt' then 'sub/b.md'; and its corpus."""
  root = tmp_path / "corpus"
  (root / "sub").mkdir(parents=True, exist_ok=True)
  (root / "sub" / "b.md").write_text(second * 20, encoding="utf-8")
  (root / "a.txt").write_text(first * 20, encoding="utf-8")
  return root, first * 20 + "\n" + second * 20


@pytest.mark.parametrize("level", ["char", "byte"])
def test_text_file_folder_round_trips_through_decode(tmp_path, level):
  root, corpus = _folder(tmp_path)
  config = _config(tmp_path / "tfds", "text_file", root, level=level, test_fraction=0.2)
  data = pipeline.load(config.data)
  assert data.train.dtype == np.int32 and data.length == SEQ
  tokens = np.concatenate([data.train, data.test]).reshape(-1)  # [num_examples * SEQ], in corpus order
  num_tokens = len(corpus) if level == "char" else len(corpus.encode("utf-8"))
  num_examples = num_tokens // SEQ
  assert (
    len(data.test) == int(np.ceil(0.2 * num_examples)) and len(data.train) + len(data.test) == num_examples
  )
  if level == "char":
    assert data.vocab_size == len(set(corpus))
    assert data.decode(tokens) == corpus[: num_examples * SEQ]
    assert data.decode(np.array([data.vocab_size])) == "\ufffd"
  else:
    assert data.vocab_size == 256
    kept = corpus.encode("utf-8")[: num_examples * SEQ]
    assert bytes(tokens.astype(np.uint8)) == kept
    assert data.decode(tokens) == kept.decode("utf-8", errors="replace")


def test_text_file_is_keyed_by_content_and_options(tmp_path):
  root, _ = _folder(tmp_path)
  config = _config(tmp_path / "tfds", "text_file", root)
  first, _, _ = text.prepare(config.data)
  config.data.seq_length = 32
  assert text.prepare(config.data)[0].builder_config.name != first.builder_config.name
  config.data.seq_length = SEQ
  _folder(tmp_path, first="Edited first file, so the corpus changes.\n")
  second, vocab_size, decode = text.prepare(config.data)
  assert second.builder_config.name != first.builder_config.name
  assert decode(pipeline._read_split(second, "train")["tokens"][0]).startswith("Edited first file")


def test_text_file_rejects_bad_corpora(tmp_path):
  def prepare(path, level="char"):
    return text.prepare(_config(tmp_path / "tfds", "text_file", path, level=level).data)

  with pytest.raises(DataError, match="text path not found"):
    prepare(tmp_path / "missing.txt")
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "blank.txt").write_text("")
  with pytest.raises(DataError, match="empty"):
    prepare(tmp_path / "empty")
  (tmp_path / "short.txt").write_text("x" * (2 * SEQ - 1))
  with pytest.raises(DataError, match="too few for one train and one test example"):
    prepare(tmp_path / "short.txt")
  (tmp_path / "latin1.txt").write_bytes("café ".encode("latin-1") * 100)
  with pytest.raises(DataError, match=r"latin1.txt: not UTF-8 text"):
    prepare(tmp_path / "latin1.txt")
  assert prepare(tmp_path / "latin1.txt", level="byte")[1] == 256  # any bytes are fine at byte level
  config = _config(tmp_path / "tfds", "text_file", tmp_path / "short.txt", level="word")
  with pytest.raises(ConfigError, match="data.level"):
    text.prepare(config.data)
  with pytest.raises(ConfigError, match="data.level"):
    validate(config)


# --- GPT-2 subwords (optional extra) ---


def test_subword_level_round_trips_a_sentence(tmp_path):
  tokenizer = text.gpt2_tokenizer()
  sentence = "That's my beautiful and sweet string"
  ids = tokenizer.encode(sentence)
  np.testing.assert_array_equal(ids, [2504, 338, 616, 4950, 290, 6029, 4731])  # GPT-2's ids
  assert tokenizer.encode(" gazed").tolist() == [50255]  # the last merge is kept
  unicode = "Naïve café — 🙂, 1234 and  two  spaces.\n"
  assert tokenizer.decode(tokenizer.encode(unicode)) == unicode
  root, corpus = _folder(tmp_path)
  data = pipeline.load(_config(tmp_path / "tfds", "text_file", root, level="subword", seq_length=16).data)
  assert data.vocab_size == 50257 and data.train.dtype == np.int32 and data.train.max() < 50257
  together = data.decode(np.concatenate([data.train, data.test]).reshape(-1))
  assert corpus.startswith(together) and len(together) > len(corpus) - 100


def test_subword_level_names_the_extra_when_its_package_is_missing(monkeypatch):
  monkeypatch.setattr(text.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ConfigError, match=r"pip install -e '\.\[text\]'"):
    text.GPT2Tokenizer()


# --- the HTML-to-text converter for building a corpus ---


def test_html_to_text_keeps_prose_and_drops_markup(tmp_path):
  spec = importlib.util.spec_from_file_location(
    "html_to_text", os.path.join(REPO, "launch", "html_to_text.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  page = (
    "<html><head><title>T</title><style>p {color: red}</style></head><body><nav><ul><li>Menu</li></ul></nav>"
    "<h1>A  heading</h1><p>Some <em>emphasised</em>\n   prose &amp; more.</p><script>var x = 1;</script>"
    "<pre><code>fn main() {}</code></pre><p>Short.</p><div>Last <span>line</span> here</div></body></html>"
  )
  assert (
    module.html_to_text(page)
    == "A heading\nSome emphasised prose & more.\nfn main() {}\nShort.\nLast line here"
  )
  assert module.html_to_text(page, drop_code=True, min_words=2) == (
    "A heading\nSome emphasised prose & more.\nLast line here"
  )
  (tmp_path / "a.html").write_text(page)
  module.main(
    ["--drop-code", "-o", str(tmp_path / "out.txt"), str(tmp_path / "a.html"), str(tmp_path / "a.html")]
  )
  assert (tmp_path / "out.txt").read_text().count("Some emphasised prose & more.") == 2


def test_to_text8_follows_text8s_rules():
  assert text.to_text8('In 1984, Mr. Smith\'s   café -- "naïve" [Applause]\n') == (
    "in one nine eight four mr smith s cafe naive applause"
  )
  assert text.to_text8("  \u2014 42 \u2014 ") == "four two" and text.to_text8("?!") == ""


def _launch_module(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "launch", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_sotu_corpus_reads_the_package_as_tarball_or_folder_alike(tmp_path):
  import io
  import tarfile

  sotu = _launch_module("sotu_corpus")
  addresses = {
    "1790_george_washington_n.txt": "Fellow-Citizens: In 1790 we met.",
    "2016_barack_obama_d.txt": "Thank you. [Laughter] Tonight marks the 8th year.",
  }
  folder = tmp_path / "datasets-sotu" / "data"
  folder.mkdir(parents=True)
  with tarfile.open(tmp_path / "sotu.tgz", "w:gz") as archive:
    for name, content in {**addresses, "1790_george_washington_n.json": "{}"}.items():
      data = content.encode()
      member = tarfile.TarInfo(f"package/data/{name}")
      member.size = len(data)
      archive.addfile(member, io.BytesIO(data))
      (folder / name).write_text(content)
  from_tarball = sotu.read_addresses(str(tmp_path / "sotu.tgz"))
  assert from_tarball == sotu.read_addresses(str(folder.parent)) == addresses
  corpus = sotu.build(from_tarball)
  first = "fellow citizens in one seven nine zero we met"
  second = "thank you tonight marks the eight th year"  # the bracketed note is gone
  assert corpus in (f"{first} {second}", f"{second} {first}")


def test_sample_statistics_count_words_and_distinct_4grams():
  from vmd_jax.tasks.text import sample_statistics

  words = frozenset({"the", "cat", "sat"})
  stats = sample_statistics(["xthe cat dog satx", "he the the the th"], words)
  # inner words: [cat, dog] -> 1/2 and [the, the, the] -> 1
  assert stats["word_valid"] == pytest.approx(75.0)
  assert stats["word_valid_se"] == pytest.approx(np.std([50, 100], ddof=1) / np.sqrt(2))
  assert sample_statistics(["aaaaaaa"], words)["distinct4"] == pytest.approx(100 / 4)  # 4 grams, 1 distinct
  assert sample_statistics(["abcdefg"], words)["distinct4"] == 100.0
  assert "word_valid" not in sample_statistics(["one two"], words)  # no inner word: nothing to count
  # single letters, which letter soup hits by chance, are left out of word2_valid
  two = sample_statistics(["x s the q dog y", "x a b c y"], words | {"s", "a"})
  assert two["word_valid"] == pytest.approx(np.mean([50, 100 / 3]))  # s, the of 4; a of 3
  assert two["word2_valid"] == pytest.approx(50.0) and two["word2_valid_se"] == 0.0  # one text has such words
  per = sample_statistics(["x s the q dog y", "x a b c y"], words | {"s", "a"}, per_text=True)
  np.testing.assert_allclose(per["word2_valid"], [50.0, np.nan])


def test_text_report_pairs_each_run_with_the_mdm_run_of_its_block_size(tmp_path):
  import json

  from vmd_jax import report
  from vmd_jax.tasks.text import stats_name

  per_sample = {"mdm": [10.0, 20.0, np.nan, 40.0], "vmd+": [15.0, 20.0, 30.0, 50.0]}
  for name, values in per_sample.items():
    run = tmp_path / name
    run.mkdir()
    results = {"method": name, "block_size": 4, "steps": 10, "length": 16, "loss": 2.0, "task": "text"}
    results.update({"bpc_bound": 3.0, "bpc_bound_se": 0.01, "ppl_bound": 8.0})
    (run / "results.json").write_text(json.dumps(results))
    stats = {f"{stat}@nfe{n}": np.asarray(values) for stat in ("word_valid", "word2_valid") for n in (4, 16)}
    np.savez(run / stats_name("test"), **stats)
  table = report.main([str(tmp_path / "mdm"), str(tmp_path / "vmd+")])
  # differences over the samples both define: 5, 0, 10 -> mean 5, 95% half-width 1.96 * 5 / sqrt(3)
  assert "| vmd+ | 4 | +5.0 ± 5.7 (n=3) | +5.0 ± 5.7 (n=3) | +5.0 ± 5.7 (n=3) | +5.0 ± 5.7 (n=3) |" in table
  assert "| mdm | 4 | +" not in table  # the MDM run is the reference, not a row


def test_text_evaluation_reads_the_split_it_is_asked_for():
  import types

  config = tasks.base_config("text")
  test, validation = np.zeros((3, 8), np.int32), np.ones((2, 8), np.int32)
  dataset = types.SimpleNamespace(test=test, splits={"validation": {"tokens": validation}})
  task = tasks.get("text")
  assert task.sequences(config, dataset) is test
  config.eval.split = "validation"
  assert task.sequences(config, dataset) is validation
  config.eval.split = "dev"
  with pytest.raises(
    ConfigError, match=r"eval.split='dev': the data has the splits \['test', 'validation'\]"
  ):
    task.sequences(config, dataset)
