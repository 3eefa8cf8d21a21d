"""Text corpora (text8, a user's text files) with block diffusion: bounds in bits per character, samples.

Evaluation: `bpc_bound` is the headline bound, iwae{K} of the one-token-a-step sampler (eval.iwae_k >= 1),
and `ppl_bound` = 2 ** bpc_bound, both valid upper bounds; the finite-NFE bounds are reported under
their own names, all of the sampler that `bound_sampler` names. For each NFE,
eval.num_samples samples are written to workdir/samples_nfe{N}.txt (decoded) and .npy, and the
sampler's speed as samples_tokens_per_s@nfe{N} (compilation excluded). With eval.prompt_length = P
each sample continues the first P tokens of a test sequence, which stay as they are.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from vmd_jax import evaluation, tables
from vmd_jax.data import text
from vmd_jax.errors import ConfigError
from vmd_jax.tasks import base


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

  def evaluate(self, run, key) -> dict:
    config, model, dataset = run.config, run.model, run.dataset
    num, length = config.eval.num_samples, dataset.length
    if config.eval.prompt_length >= length:
      raise ConfigError(f"eval.prompt_length={config.eval.prompt_length}: must be below the length {length}")
    params = run.eval_params()
    results = evaluation.common_results(run, key)
    headline = f"iwae{config.eval.iwae_k}_bits_per_token"
    results["bpc_bound"], results["bpc_bound_se"] = results[headline], results[headline + "_se"]
    results["bpc_bound_estimator"] = headline.removesuffix("_bits_per_token")
    results["ppl_bound"] = 2.0 ** results["bpc_bound"]
    for nfe in config.eval.nfes:
      sample = evaluation.sampler(model, config, nfe, length=length)
      rows = min(config.eval.batch_size, num)
      prompts = dataset.test[np.arange(num) % len(dataset.test), : config.eval.prompt_length]
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
      if jax.process_index() == 0:
        evaluation.write_samples(run.workdir, nfe, samples, dataset.decode)
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
    )


TASK = base.register(Text())
