"""Text corpora (text8, a user's text files) with block diffusion: bounds in bits per character, samples.

Evaluation: `bpc_bound` is the headline bound, iwae{K} of the one-token-a-step sampler (eval.iwae_k >= 1),
and `ppl_bound` = 2 ** bpc_bound, both valid upper bounds; the finite-NFE bounds are reported under
their own names, all of the sampler that `bound_sampler` names. For each NFE,
eval.num_samples samples are written to workdir/samples_nfe{N}.txt (decoded) and .npy, and the
sampler's speed as samples_tokens_per_s@nfe{N} (compilation excluded). With eval.prompt_length = P
each sample continues the first P tokens of a test sequence, which stay as they are. With
eval.split = validation (text8 and text8-style files have one) all of this is computed on the
validation sequences and written to results_validation.json and samples_nfe{N}_validation.*.

Samples are also scored without a likelihood (`sample_statistics`): `word_valid@nfe{N}`, the share of
their words found in the training split, and `distinct4@nfe{N}`, the share of their character 4-grams
that are distinct, each with its standard error over samples; `@data` gives both for as many test
sequences, the level real text reaches.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from vmd_jax import evaluation, tables
from vmd_jax.data import text
from vmd_jax.errors import ConfigError
from vmd_jax.tasks import base


def sample_statistics(texts: list[str], words: frozenset[str]) -> dict[str, float]:
  """Sample quality a reader can check without a scorer model, in % with standard errors over texts.

  word_valid: per text, the share of its words (space-separated; the first and the last left out, as
  the window may cut them) that are in `words`, over the texts with such words; distinct4: per text,
  the share of its character 4-grams that are distinct (repetition lowers it). Each is the mean over
  texts, with `<name>_se` its standard error.
  """
  valid, distinct = [], []
  for sample in texts:
    inner = sample.split()[1:-1]
    if inner:
      valid.append(100.0 * sum(word in words for word in inner) / len(inner))
    grams = [sample[i : i + 4] for i in range(len(sample) - 3)]
    if grams:
      distinct.append(100.0 * len(set(grams)) / len(grams))
  stats = {}
  for name, values in (("word_valid", valid), ("distinct4", distinct)):
    values = np.asarray(values, np.float64)
    if len(values):
      stats[name] = float(values.mean())
      stats[name + "_se"] = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
  return stats


def _scored(stats: dict[str, float], at: str) -> dict[str, float]:
  """sample_statistics' keys under `@<at>` names: word_valid -> word_valid@nfe16, word_valid_se ->
  word_valid@nfe16_se (the standard error last, as for every result)."""
  named = {}
  for name, value in stats.items():
    base, se = (name[:-3], "_se") if name.endswith("_se") else (name, "")
    named[f"{base}@{at}{se}"] = value
  return named


class Text(base.Task):
  """Bits-per-character bounds, perplexity bounds and decoded samples of a text model."""

  name = "text"
  datasets = text.NAMES

  def add_defaults(self, config) -> None:
    config.data.seq_length = 256  # tokens per example
    config.data.level = (
      "char"  # text_file tokens: char | byte (UTF-8) | subword (GPT-2 BPE, the 'text' extra)
    )
    config.eval.prompt_length = 0  # samples continue the first prompt_length tokens of test sequences
    # the sequences evaluated: test | validation (text8 and text8-style files have one), for choosing
    # recipes; its results and samples are written to files of their own (tasks.base.split_suffix)
    config.eval.split = "test"

  def check_config(self, config) -> None:
    super().check_config(config)
    if config.data.level not in text.LEVELS:
      raise ConfigError(f"data.level={config.data.level!r}: choose one of {list(text.LEVELS)}")
    if config.data.seq_length <= 0:
      raise ConfigError(f"data.seq_length={config.data.seq_length}: must be positive")
    if config.eval.prompt_length < 0:
      raise ConfigError(f"eval.prompt_length={config.eval.prompt_length}: must be >= 0")
    if config.eval.iwae_k < 1:
      raise ConfigError(f"eval.iwae_k={config.eval.iwae_k}: the text task's bpc_bound needs at least 1")

  def sequences(self, config, dataset) -> np.ndarray:
    """The token sequences [N, L] of eval.split; ConfigError naming the splits the data has."""
    split = config.eval.split
    if split == "test":
      return dataset.test
    if split not in dataset.splits:
      raise ConfigError(f"eval.split={split!r}: the data has the splits {['test', *sorted(dataset.splits)]}")
    return dataset.splits[split]["tokens"]

  def evaluate(self, run, key) -> dict:
    config, model, dataset = run.config, run.model, run.dataset
    num, length = config.eval.num_samples, dataset.length
    if config.eval.prompt_length >= length:
      raise ConfigError(f"eval.prompt_length={config.eval.prompt_length}: must be below the length {length}")
    params, sequences = run.eval_params(), self.sequences(config, dataset)
    results = evaluation.common_results(run, key, sequences)
    results["eval_split"] = config.eval.split
    headline = f"iwae{config.eval.iwae_k}_bits_per_token"
    results["bpc_bound"], results["bpc_bound_se"] = results[headline], results[headline + "_se"]
    results["bpc_bound_estimator"] = headline.removesuffix("_bits_per_token")
    results["ppl_bound"] = 2.0 ** results["bpc_bound"]
    words = frozenset("".join(dataset.decode(row) for row in dataset.train).split())
    real = [dataset.decode(row) for row in sequences[:num]]
    suffix = base.split_suffix(config.eval.split)  # of the sample files
    results.update(_scored(sample_statistics(real, words), "data"))
    for nfe in config.eval.nfes:
      sample = evaluation.sampler(model, config, nfe, length=length)
      rows = min(config.eval.batch_size, num)
      prompts = sequences[np.arange(num) % len(sequences), : config.eval.prompt_length]
      x_init = np.full((num, length), model.vocab_size, np.int32)
      x_init[:, : prompts.shape[1]] = prompts
      compiled = sample.lower(params, key, jnp.asarray(x_init[:rows])).compile()
      parts, start_time = [], time.perf_counter()
      for start in range(0, num, rows):
        batch = x_init[start : start + rows]
        batch = np.concatenate([batch, x_init[: rows - len(batch)]])  # the compiled batch shape
        out = compiled(params, jax.random.fold_in(key, start), jnp.asarray(batch)).tokens
        parts.append(np.asarray(out))
      seconds = time.perf_counter() - start_time
      samples = np.concatenate(parts)[:num]
      results[f"samples_tokens_per_s@nfe{nfe}"] = float(len(parts) * rows * length / seconds)
      texts = [dataset.decode(row) for row in samples]
      results.update(_scored(sample_statistics(texts, words), f"nfe{nfe}"))
      if jax.process_index() == 0:
        evaluation.write_samples(run.workdir, nfe, samples, dataset.decode, suffix)
    return results

  def table(self, runs) -> str:
    """Per run: the bits-per-token bounds ± s.e. (bpc_bound first), the perplexity bound, the training
    loss and the sampler's tokens/s at NFE = length (one token a step)."""
    results = {name: result for name, (result, _) in runs.items()}
    present = tables.keys(results)
    copied = {
      f"{r['bpc_bound_estimator']}_bits_per_token" for r in results.values() if "bpc_bound_estimator" in r
    }
    others = [k for k in present if k.endswith("bits_per_token") and k not in copied]
    bounds = ["bpc_bound"] + sorted(others, key=tables.nfe_order)
    headers = [b.replace("_bits_per_token", "") for b in bounds]
    estimators = {r.get("bpc_bound_estimator") for r in results.values()}
    if len(estimators) == 1 and None not in estimators:  # name the estimator the column copies
      headers[0] = f"bpc_bound ({estimators.pop()})"
    headers += ["ppl_bound", "loss (nats/token, not a bound)", "tokens/s, NFE = length"]
    lines = ["| method | block | steps | " + " | ".join(headers) + " |", "|" + "---|" * (3 + len(headers))]
    for result in results.values():
      cells = [result.get("method", "?"), str(result.get("block_size", 0)), str(result.get("steps", "?"))]
      cells += [tables.cell(result, c) for c in bounds + ["ppl_bound", "loss"]]
      speed = result.get(f"samples_tokens_per_s@nfe{result.get('length')}")
      cells.append("-" if speed is None else f"{speed:.0f}")
      lines.append("| " + " | ".join(cells) + " |")
    return (
      "Text: upper bounds on NLL in bits per token (per character at character level) ± standard error\n\n"
      + "\n".join(lines)
      + tables.bound_legend(results)
      + "\n\n"
      + _sampling_table(results)
    )


def _percent(result: dict, key: str) -> str:
  """A % statistic of sample_statistics with its standard error, or '-'."""
  return f"{result[key]:.1f} ± {result[key + '_se']:.1f}" if key in result else "-"


def _sampling_table(results: dict[str, dict]) -> str:
  """Per run, at one step per block (NFE = blocks) and at one token a step (NFE = length): the bound
  of that sampler, and its samples' word validity and distinct 4-grams; the test text's own statistics
  as the last row."""
  header = "| method | block | " + " | ".join(
    f"{what}, {where}"
    for what in ("bound (bits)", "words in train vocab %", "distinct 4-grams %")
    for where in ("1 step/block", "1 token/step")
  )
  lines = [header + " |", "|" + "---|" * 8]
  for r in results.values():
    length, block = r.get("length", 0), r.get("block_size", 0) or r.get("length", 1)
    at = (f"nfe{length // block}", f"nfe{length}")
    bounds = [tables.cell(r, f"nelbo@{n}_bits_per_token") for n in at]
    cells = bounds + [_percent(r, f"{stat}@{n}") for stat in ("word_valid", "distinct4") for n in at]
    lines.append(f"| {r.get('method', '?')} | {r.get('block_size', 0)} | " + " | ".join(cells) + " |")
  data = next((r for r in results.values() if "word_valid@data" in r), None)
  if data is not None:
    real = [_percent(data, f"{stat}@data") for stat in ("word_valid", "distinct4")]
    lines.append(f"| test text | - | - | - | {real[0]} | {real[0]} | {real[1]} | {real[1]} |")
  return (
    "Sampling: one step per block against one token a step (bounds of that sampler; its samples' "
    "words, the first and last of each left out as the window may cut them, and character 4-grams; "
    "± standard errors)\n\n" + "\n".join(lines)
  )


TASK = base.register(Text())
