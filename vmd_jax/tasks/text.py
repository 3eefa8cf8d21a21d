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
their words found in the training split, `word2_valid@nfe{N}`, the same over words of two letters or
more, and `distinct4@nfe{N}`, the share of their character 4-grams that are distinct, each with its
standard error over samples; `@data` gives them for as many test sequences, the level real text
reaches. Their per-sample values go to workdir/sample_stats[_<split>].npz, from which the report gives
each run's paired difference from the MDM run of its block size.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from vmd_jax import evaluation, tables
from vmd_jax.data import text
from vmd_jax.errors import ConfigError
from vmd_jax.tasks import base

STATISTICS = ("word_valid", "word2_valid", "distinct4")  # sample_statistics' names


def sample_statistics(texts: list[str], words: frozenset[str], per_text: bool = False) -> dict:
  """Sample quality a reader can check without a scorer model, in % with standard errors over texts.

  word_valid: per text, the share of its words (space-separated; the first and the last left out, as
  the window may cut them) that are in `words`, over the texts with such words; word2_valid: the same
  over the words of two letters or more (text8's rules leave single letters, `s` of `nation s`, that
  letter soup hits by chance); distinct4: per text, the share of its character 4-grams that are
  distinct (repetition lowers it). Each is the mean over texts, with `<name>_se` its standard error.
  With per_text, the values per text instead: {name: float64 [len(texts)]}, NaN where a text has
  nothing to count (for paired comparisons of two samplers on the same random keys).
  """
  values = {name: np.full(len(texts), np.nan) for name in STATISTICS}
  for i, sample in enumerate(texts):
    inner = sample.split()[1:-1]
    for name, kept in (("word_valid", inner), ("word2_valid", [w for w in inner if len(w) > 1])):
      if kept:
        values[name][i] = 100.0 * sum(word in words for word in kept) / len(kept)
    grams = [sample[j : j + 4] for j in range(len(sample) - 3)]
    if grams:
      values["distinct4"][i] = 100.0 * len(set(grams)) / len(grams)
  return values if per_text else summarise(values)


def summarise(values: dict[str, np.ndarray]) -> dict[str, float]:
  """Means and standard errors ({name, name_se}) of sample_statistics' per-text values, NaN left out."""
  stats = {}
  for name, per in values.items():
    per = per[~np.isnan(per)]
    if len(per):
      stats[name] = float(per.mean())
      stats[name + "_se"] = float(per.std(ddof=1) / np.sqrt(len(per))) if len(per) > 1 else 0.0
  return stats


def stats_name(split: str) -> str:
  """The file of a run's per-sample statistics (sample_statistics(per_text=True)) for `split`."""
  return f"sample_stats{base.split_suffix(split)}.npz"


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
    per_text = {}  # {<statistic>@nfe<N>: per sample}, for the report's paired differences
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
      stats = sample_statistics(texts, words, per_text=True)
      results.update(_scored(summarise(stats), f"nfe{nfe}"))
      per_text.update({f"{name}@nfe{nfe}": values for name, values in stats.items()})
      if jax.process_index() == 0:
        evaluation.write_samples(run.workdir, nfe, samples, dataset.decode, suffix)
    if jax.process_index() == 0:
      np.savez(os.path.join(run.workdir, stats_name(config.eval.split)), **per_text)
    return results

  def table(self, runs) -> str:
    """Per run: the bits-per-token bounds ± s.e. (bpc_bound first), the perplexity bound, the training
    loss, the sampler's tokens/s at NFE = length (one token a step) and the training time; then the
    sampling table and the paired differences from MDM."""
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
    headers += ["ppl_bound", "loss (nats/token, not a bound)", "tokens/s, NFE = length", "training s"]
    lines = ["| method | block | steps | " + " | ".join(headers) + " |", "|" + "---|" * (3 + len(headers))]
    for result in results.values():
      cells = [result.get("method", "?"), str(result.get("block_size", 0)), str(result.get("steps", "?"))]
      cells += [tables.cell(result, c) for c in bounds + ["ppl_bound", "loss"]]
      speed = result.get(f"samples_tokens_per_s@nfe{result.get('length')}")
      cells.append("-" if speed is None else f"{speed:.0f}")
      seconds = result.get("train_seconds")  # summed over resumes; absent for earlier releases' runs
      cells.append("-" if seconds is None else f"{seconds:.0f}")
      lines.append("| " + " | ".join(cells) + " |")
    return (
      "Text: upper bounds on NLL in bits per token (per character at character level) ± standard error\n\n"
      + "\n".join(lines)
      + tables.bound_legend(results)
      + "\n\n"
      + _sampling_table(results)
      + ("\n\n" + paired if (paired := _paired_table(runs)) else "")
    )


def _percent(result: dict, key: str) -> str:
  """A % statistic of sample_statistics with its standard error, or '-'."""
  return f"{result[key]:.1f} ± {result[key + '_se']:.1f}" if key in result else "-"


STAT_TITLES = {"word_valid": "words in train vocab %", "word2_valid": "words of 2+ letters in vocab %"}


def _at(result: dict) -> tuple[str, str]:
  """The NFE names of one step per block and of one token a step for a run's results."""
  length, block = result.get("length", 0), result.get("block_size", 0) or result.get("length", 1)
  return f"nfe{length // block}", f"nfe{length}"


def _sampling_table(results: dict[str, dict]) -> str:
  """Per run, at one step per block (NFE = blocks) and at one token a step (NFE = length): the bound
  of that sampler, and its samples' word validity (all words, and those of two letters or more) and
  distinct 4-grams; the evaluated split's own text as the last row."""
  titles = ["bound (bits)", *STAT_TITLES.values(), "distinct 4-grams %"]
  header = "| method | block | " + " | ".join(
    f"{what}, {where}" for what in titles for where in ("1 step/block", "1 token/step")
  )
  lines = [header + " |", "|" + "---|" * (2 + 2 * len(titles))]
  for r in results.values():
    at = _at(r)
    bounds = [tables.cell(r, f"nelbo@{n}_bits_per_token") for n in at]
    cells = bounds + [_percent(r, f"{stat}@{n}") for stat in STATISTICS for n in at]
    lines.append(f"| {r.get('method', '?')} | {r.get('block_size', 0)} | " + " | ".join(cells) + " |")
  data = next((r for r in results.values() if "word_valid@data" in r), None)
  if data is not None:
    real = [_percent(data, f"{stat}@data") for stat in STATISTICS]
    where = data.get("eval_split", "test")  # the split whose sequences it scored
    lines.append(f"| {where} text | - | - | - | " + " | ".join(f"{c} | {c}" for c in real) + " |")
  return (
    "Sampling: one step per block against one token a step (bounds of that sampler; its samples' "
    "words, the first and last of each left out as the window may cut them, and character 4-grams; "
    "± standard errors)\n\n" + "\n".join(lines)
  )


def _paired_table(runs) -> str:
  """Each run against the one MDM run of its block size, sample by sample (with the same eval.seed,
  sample i of one and of the other share their random keys, which narrows the interval): the difference in
  word validity at one step per block and at one token a step, with its 95% interval. Empty when no
  block size has exactly one MDM run, or a run lacks its per-sample statistics (evaluated before
  they were written)."""
  by_block: dict[tuple, list] = {}
  for result, workdir in runs.values():
    key = (result.get("block_size", 0), result.get("length"), result.get("eval_split", "test"))
    by_block.setdefault(key, []).append((result, workdir))
  lines = []
  for (block, _, split), members in by_block.items():
    mdm = [m for m in members if m[0].get("method") == "mdm"]
    if len(mdm) != 1 or not os.path.exists(os.path.join(mdm[0][1], stats_name(split))):
      continue
    with np.load(os.path.join(mdm[0][1], stats_name(split))) as f:
      base_stats = dict(f)
    for result, workdir in members:
      path = os.path.join(workdir, stats_name(split))
      if result.get("method") == "mdm" or not os.path.exists(path):
        continue
      with np.load(path) as f:
        stats = dict(f)
      cells = []
      for stat in STAT_TITLES:
        for nfe in _at(result):
          key = f"{stat}@{nfe}"
          if key not in stats or key not in base_stats:
            cells.append("-")
            continue
          diff, half, n = tables.paired_difference(base_stats[key], stats[key])
          cells.append(f"{diff:+.1f} ± {half:.1f} (n={n})")
      lines.append(f"| {result.get('method', '?')} | {block} | " + " | ".join(cells) + " |")
  if not lines:
    return ""
  header = "| method | block | " + " | ".join(
    f"{title}, {where}" for title in STAT_TITLES.values() for where in ("1 step/block", "1 token/step")
  )
  return (
    "Paired differences from the MDM run of the same block size (sample i of both drawn with the same "
    "random keys; mean of method - MDM over the samples both have words to count, ± 95% interval, in "
    "points of %)\n\n" + header + " |\n|" + "---|" * (2 + 2 * len(STAT_TITLES)) + "\n" + "\n".join(lines)
  )


TASK = base.register(Text())
