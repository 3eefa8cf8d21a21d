"""Throughput: `python -m vmd_jax.benchmark [--config=configs/benchmark.py:<size>] [--rounds=5]`.

Times the data-parallel train step of VMD and of MDM with the same denoiser (the config's; MDM drops
the latent and the encoder), and the sampler of each, on random tokens. Printed per method: step time,
train tokens/s, model FLOPs per step, and model FLOPs utilisation (MFU) against the peak matmul
throughput measured here on one device times the device count; then the VMD/MDM step-time ratio. The
methods alternate within each round and the ratio is the median of the per-round ratios, so a busy
machine slows both sides of each ratio alike.

Model FLOPs per step are 3 x the forward FLOPs of the loss (forward, and a backward of twice the
forward), counted by XLA's cost analysis of the compiled forward.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from vmd_jax import evaluation, objectives, trainer
from vmd_jax import model as model_lib
from vmd_jax.data import pipeline
from vmd_jax.defaults import apply_method
from vmd_jax.validation import validate

DEFAULT_CONFIG = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "benchmark.py:cpu"
)
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Config whose model is timed.")
flags.DEFINE_integer("rounds", 5, "Rounds; each times every method once.")
flags.DEFINE_integer("steps", 5, "Train steps timed per method and round.")
flags.DEFINE_integer("sample_nfe", 32, "Denoiser calls per sampled batch.")
flags.DEFINE_string("json", None, "Also write the measurements to this JSON file.")
FLAGS = flags.FLAGS


def peak_matmul_flops(dtype, size: int | None = None, repeats: int = 10) -> float:
  """Measured FLOP/s of a square matmul on one device (the best of `repeats`)."""
  if size is None:
    size = 2048 if jax.default_backend() == "cpu" else 8192
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size**3 / best


def _forward_flops(fn, *args) -> float:
  """FLOPs of one call of fn(*args) by XLA's cost analysis (nan where the backend gives none)."""
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(analysis, list):  # older jax returns one dict per computation
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", float("nan")))


class Bench:
  """One method's trainer.Run, on random tokens of the config's shape, and its sampler."""

  def __init__(self, config, method: str, mesh):
    self.config = apply_method(config.copy_and_resolve_references(), method)
    validate(self.config)
    c = self.config
    self.length, self.vocab = c.model.max_length, c.data.vocab_size
    tokens = np.random.default_rng(0).integers(0, self.vocab, (4 * c.train.batch_size, self.length))
    dataset = pipeline.Dataset("random", tokens.astype(np.int32), tokens[:1].astype(np.int32), self.vocab)
    self.run = trainer.Run(c, None, dataset, mesh)
    self.model, self.settings = self.run.model, self.run.settings
    self.batches = [self.run.batch(s) for s in range(4)]
    self.sample = evaluation.sampler(self.model, c, FLAGS.sample_nfe)
    self.x_init = jnp.full((c.eval.batch_size, self.length), self.vocab, jnp.int32)

  @property
  def state(self):
    """The run's train state."""
    return self.run.state

  def model_flops_per_step(self) -> float:
    """3 x the forward FLOPs of the loss on one global batch."""
    micro = {"tokens": self.batches[0]["tokens"].reshape(-1, self.length)}

    def loss(params, key):
      return objectives.loss_fn(self.model, params, micro, key, self.settings, self.state.step)[0]

    return 3.0 * _forward_flops(loss, self.state.params, jax.random.PRNGKey(0))

  def time_steps(self, num_steps: int) -> float:
    """Seconds per train step over num_steps steps (one step in flight, as the trainer runs)."""
    start = time.perf_counter()
    for i in range(num_steps):
      self.run.state, _ = self.run.train_step(self.run.state, self.batches[i % len(self.batches)])
      jax.block_until_ready(self.run.state.step)
    return (time.perf_counter() - start) / num_steps

  def time_sampling(self) -> float:
    """Seconds to sample one batch of the config's eval.batch_size sequences with sample_nfe steps."""
    key = jax.random.PRNGKey(int(self.state.step))
    start = time.perf_counter()
    self.sample(self.state.params, key, self.x_init).tokens.block_until_ready()
    return time.perf_counter() - start


def run(config, rounds: int, steps: int) -> dict:
  """Measure both methods; returns the numbers that main prints."""
  mesh = trainer.make_mesh()
  dtype = model_lib.compute_dtype(config.model.dtype)
  peak = peak_matmul_flops(dtype) * mesh.devices.size
  benches = {method: Bench(config, method, mesh) for method in ("mdm", "vmd")}
  for bench in benches.values():  # compile and warm up
    bench.time_steps(2)
    bench.time_sampling()
  step_times = {method: [] for method in benches}
  sample_times = {method: [] for method in benches}
  for r in range(rounds):
    for method in sorted(benches, reverse=r % 2 == 1):
      step_times[method].append(benches[method].time_steps(steps))
      sample_times[method].append(benches[method].time_sampling())
  ratios = [v / m for v, m in zip(step_times["vmd"], step_times["mdm"], strict=True)]
  tokens_per_step = config.train.batch_size * config.model.max_length
  out = {
    "device": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
    "compute_dtype": jnp.dtype(dtype).name,
    "peak_matmul_tflops": peak / 1e12,
    "vmd_over_mdm_step_time": float(np.median(ratios)),
    "per_round_ratios": [round(r, 4) for r in ratios],
  }
  for method, bench in benches.items():
    step_time = float(np.median(step_times[method]))
    flops = bench.model_flops_per_step()
    sample_batch = bench.x_init.shape[0]
    out[method] = {
      "step_ms": 1e3 * step_time,
      "train_tokens_per_s": tokens_per_step / step_time,
      "model_tflops_per_step": flops / 1e12,
      "mfu_percent": 100.0 * flops / step_time / peak,
      "sample_tokens_per_s": sample_batch * bench.length / float(np.median(sample_times[method])),
      "params": int(sum(x.size for x in jax.tree.leaves(bench.state.params))),
    }
  return out


def table(out: dict, config) -> str:
  """Markdown table of the measurements."""
  m = config.model
  lines = [
    f"device: {out['device']}, compute {out['compute_dtype']}, measured peak matmul "
    f"{out['peak_matmul_tflops']:.2f} TFLOP/s; denoiser {m.depth} x {m.width}, length {m.max_length}, "
    f"global batch {config.train.batch_size}, sampling {FLAGS.sample_nfe} steps",
    "",
    "| method | params | step (ms) | train tokens/s | model TFLOP/step | MFU (%) | sample tokens/s |",
    "|---|---|---|---|---|---|---|",
  ]
  for method in ("mdm", "vmd"):
    r = out[method]
    lines.append(
      f"| {method} | {r['params'] / 1e6:.2f}M | {r['step_ms']:.1f} | {r['train_tokens_per_s']:.0f} | "
      f"{r['model_tflops_per_step']:.4f} | {r['mfu_percent']:.1f} | {r['sample_tokens_per_s']:.0f} |"
    )
  lines += [
    "",
    f"VMD / MDM step time: {out['vmd_over_mdm_step_time']:.3f} (median of {out['per_round_ratios']})",
  ]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  out = run(FLAGS.config, FLAGS.rounds, FLAGS.steps)
  print(table(out, FLAGS.config), flush=True)
  if FLAGS.json:
    with open(FLAGS.json, "w", encoding="utf-8") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  app.run(main)
