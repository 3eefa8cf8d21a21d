"""Throughput: `python -m vmd_jax.benchmark [--config=configs/benchmark.py:<size>] [--compare-ref=GITREF]`.

Times the data-parallel train step of MDM, the paper's VMD (`vmd`) and the recommended recipe (`vmd+`,
whose preset latent path is low_rank_adaln) with the same denoiser (the config's; MDM drops the latent
and the encoder), and the sampler of each, on random tokens. Printed per method: parameters, step time,
train tokens/s, model FLOPs per token against the 6N + attention estimate (`estimate`), and model FLOPs
utilisation (MFU) against the peak matmul throughput measured here on one device times the device
count; then each VMD's step-time ratio to MDM. The methods alternate within each round and every ratio
is the median of the per-round ratios, so a busy machine slows both sides of each ratio alike.

Model FLOPs per step are 3 x the forward FLOPs of the loss (forward, and a backward of twice the
forward), counted by XLA's cost analysis of the compiled forward (a fused kernel, such as cuDNN's
attention, is a custom call that the count leaves out).

With --compare-ref=GITREF the same measurements are taken from the commit GITREF too, built in a
temporary git worktree: this tree and that one each run in a worker process (`benchmark_worker.py`),
the two alternate within each round, and the table adds the per-method ratio of train tokens/s (this
tree over GITREF) for the methods both trees have (a release before vmd+ is timed on mdm and vmd).
Overrides of the config (`--config.model.width=128`) apply to both.
"""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from vmd_jax import benchmark_worker

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(PACKAGE_DIR)
DEFAULT_CONFIG = os.path.join(REPO_DIR, "configs", "benchmark.py:cpu")
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Config whose model is timed.")
flags.DEFINE_integer("rounds", 5, "Rounds; each times every method once.")
flags.DEFINE_integer("steps", 5, "Train steps timed per method and round.")
flags.DEFINE_integer("sample_nfe", 32, "Denoiser calls per sampled batch.")
flags.DEFINE_string("json", None, "Also write the measurements to this JSON file.")
flags.DEFINE_string("compare-ref", None, "A git commit (or branch, tag) to measure alongside this tree.")
FLAGS = flags.FLAGS
METHODS = ("mdm", "vmd", "vmd+")  # mdm first: the others' step times are given over its


def peak_matmul_flops(dtype, size: int | None = None, repeats: int = 10) -> float:
  """Measured FLOP/s of a square matmul on one device (the best of `repeats`)."""
  import jax

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
  import jax

  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(analysis, list):  # older jax returns one dict per computation
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", float("nan")))


def flops_estimate(model, length: int) -> dict:
  """Train FLOPs per noisy token by the 6N + attention rule, for a model of networks.VMDModel.

  N counts the weights that multiply every token: attention and MLP kernels of the denoiser and the
  encoder, the logits layer, and z's path: with `low_rank`, its latent_dim x latent_dim feature map of
  each position and its input kernel; with `low_rank_adaln`, z's projection to each position's vector,
  the map of that vector to the position's code and every layer's map of the code to its shifts and
  scales; with `adaln`, z's projection to each position's conditioning vector and every layer's adaLN
  MLP, which then runs at every position. Embedding lookups and what is
  computed once per sequence or block (the time MLP, the adaLN MLPs of a model without a per-position
  latent, the encoder's constant modulation, its pooled heads) are left out. Attention adds 12 x width
  x context per layer and token (QK^T and AV, forward and backward, bidirectional over the whole
  context). With several blocks the clean stream doubles the denoiser's tokens and context.
  """
  d = model.denoiser
  streams = 2 if d.block_size and d.block_size < length else 1
  per_layer = (4 + 2 * d.mlp_ratio) * d.width**2
  n_tokens = streams * d.depth * per_layer + d.width * d.vocab_size  # logits: noisy tokens only
  attention = 12 * d.depth * d.width * streams * (streams * length)
  if model.encoder is not None:
    e, r = model.encoder, d.latent_dim
    n_tokens += e.depth * (4 + 2 * e.mlp_ratio) * e.width**2
    if d.latent_path == "low_rank":
      n_tokens += r * r + r * d.width
    elif d.latent_path == "low_rank_adaln":
      n_tokens += r * d.width + d.width * d.latent_rank + d.depth * d.latent_rank * 4 * d.width
    else:  # adaln: the noisy positions' modulation (6 x width per layer, 2 x width final) per position
      n_tokens += r * d.width + (6 * d.depth + 2) * d.width**2
    attention += 12 * e.depth * e.width * length
  return {"n_per_token": n_tokens, "flops_per_token": 6 * n_tokens + attention}


class Bench:
  """One method's trainer.Run, on random tokens of the config's shape, and its sampler."""

  def __init__(self, config, method: str, mesh):
    import jax.numpy as jnp

    from vmd_jax import evaluation, tasks, trainer
    from vmd_jax.data import pipeline
    from vmd_jax.defaults import apply_method
    from vmd_jax.validation import validate

    self.config = apply_method(config.copy_and_resolve_references(), method)
    validate(self.config)
    c = self.config
    self.length, self.vocab = c.model.max_length, c.data.vocab_size
    tasks.fit_to_data(c, self.length)  # the stepwise objective's step counts
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
    import jax

    from vmd_jax import objectives

    micro = {"tokens": self.batches[0]["tokens"].reshape(-1, self.length)}

    def loss(params, key):
      return objectives.loss_fn(self.model, params, micro, key, self.settings, self.state.step)[0]

    return 3.0 * _forward_flops(loss, self.state.params, jax.random.PRNGKey(0))

  def time_steps(self, num_steps: int) -> float:
    """Seconds per train step over num_steps steps (one step in flight, as the trainer runs)."""
    import jax

    start = time.perf_counter()
    for i in range(num_steps):
      self.run.state, _ = self.run.train_step(self.run.state, self.batches[i % len(self.batches)])
      jax.block_until_ready(self.run.state.step)
    return (time.perf_counter() - start) / num_steps

  def time_sampling(self) -> float:
    """Seconds to sample one batch of the config's eval.batch_size sequences with sample_nfe steps."""
    import jax

    key = jax.random.PRNGKey(int(self.state.step))
    start = time.perf_counter()
    self.sample(self.state.params, key, self.x_init).tokens.block_until_ready()
    return time.perf_counter() - start


def summarise(description: dict, rounds: list[dict]) -> dict:
  """Per-method medians over rounds (and MFU) from one tree's description and its rounds."""
  out = {k: description[k] for k in ("device", "compute_dtype")}
  out["peak_matmul_tflops"] = description["peak_matmul_flops"] / 1e12
  out["methods"] = list(rounds[0])  # mdm first
  for method in out["methods"]:
    d = description[method]
    step = float(np.median([r[method]["step_s"] for r in rounds]))
    sample = float(np.median([r[method]["sample_s"] for r in rounds]))
    tokens_per_s = d["tokens_per_step"] / step
    out[method] = d | {
      "step_ms": 1e3 * step,
      "train_tokens_per_s": tokens_per_s,
      "mfu_percent": 100.0 * d["model_flops_per_token"] * tokens_per_s / description["peak_matmul_flops"],
      "sample_tokens_per_s": d["sample_tokens"] / sample,
    }
  out["step_time_over_mdm"] = {
    method: _median_ratio([r[method]["step_s"] / r["mdm"]["step_s"] for r in rounds])
    for method in out["methods"][1:]
  }
  return out


def _median_ratio(ratios: list[float]) -> dict:
  """The median of per-round ratios, and the ratios."""
  return {"median": float(np.median(ratios)), "rounds": [round(x, 4) for x in ratios]}


def run(config, rounds: int, steps: int) -> dict:
  """Measure every method of METHODS in this process; returns what `table` prints."""
  session = benchmark_worker.Session(sys.modules[__name__], config, METHODS)
  timed = [session.round(steps, reverse=r % 2 == 1) for r in range(rounds)]
  return summarise(session.describe(), timed)


class Worker:
  """A benchmark_worker.py process measuring the tree at `root` (JSON lines over its stdin/stdout)."""

  def __init__(self, root: str, config_args: list[str]):
    script = os.path.join(PACKAGE_DIR, "benchmark_worker.py")
    argv = [sys.executable, script, root, f"--sample_nfe={FLAGS.sample_nfe}", *config_args]
    self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root)
    self.ask({"op": "ready"})

  def ask(self, request: dict) -> dict:
    """Send one request; its one-line JSON answer."""
    self.proc.stdin.write(json.dumps(request) + "\n")
    self.proc.stdin.flush()
    for line in self.proc.stdout:
      if line.startswith(benchmark_worker.PREFIX):
        return json.loads(line[len(benchmark_worker.PREFIX) :])
    raise RuntimeError(f"the benchmark worker for {self.proc.args[2]} exited (status {self.proc.wait()})")

  def close(self):
    """Stop the worker."""
    with contextlib.suppress(BrokenPipeError, ValueError):
      self.proc.stdin.close()
    self.proc.wait(timeout=60)


@contextlib.contextmanager
def worktree(ref: str):
  """A temporary detached git worktree of this repository at `ref`; removed afterwards."""
  git = ["git", "-C", REPO_DIR]
  try:
    commit = subprocess.run(
      [*git, "rev-parse", "--verify", f"{ref}^{{commit}}"], capture_output=True, text=True, check=True
    ).stdout.strip()
  except (subprocess.CalledProcessError, FileNotFoundError) as e:
    raise app.UsageError(f"--compare-ref={ref}: not a commit of the git repository at {REPO_DIR}") from e
  with tempfile.TemporaryDirectory(prefix="vmd_jax_ref_") as parent:
    path = os.path.join(parent, commit[:12])
    subprocess.run([*git, "worktree", "add", "--detach", path, commit], capture_output=True, check=True)
    try:
      yield commit, path
    finally:
      subprocess.run([*git, "worktree", "remove", "--force", path], capture_output=True, check=False)


def config_args(root: str) -> list[str]:
  """This run's --config flags, the config file first and rebased from this tree onto `root`, then the
  --config.<field> overrides in their order."""
  files = [a[len("--config=") :] for a in sys.argv[1:] if a.startswith("--config=")]
  path = files[-1] if files else DEFAULT_CONFIG  # absl keeps the last one
  if os.path.abspath(path).startswith(REPO_DIR + os.sep):
    path = os.path.join(root, os.path.relpath(os.path.abspath(path), REPO_DIR))
  return [f"--config={path}", *(a for a in sys.argv[1:] if a.startswith("--config."))]


def compare(ref: str, rounds: int, steps: int) -> dict:
  """This tree and `ref`, each in a worker, alternating within every round."""
  with worktree(ref) as (commit, path):
    workers = {}
    try:
      workers["this"] = Worker(REPO_DIR, config_args(REPO_DIR))
      workers["ref"] = Worker(path, config_args(path))
      timed = {name: [] for name in workers}
      for r in range(rounds):
        for name in sorted(workers, reverse=r % 2 == 1):
          timed[name].append(workers[name].ask({"op": "round", "steps": steps, "reverse": r % 2 == 1}))
      out = {name: summarise(workers[name].ask({"op": "describe"}), timed[name]) for name in workers}
    finally:
      for worker in workers.values():
        worker.close()
  out["ref_commit"] = commit
  pairs = list(zip(timed["this"], timed["ref"], strict=True))
  out["speedup"] = {
    method: _median_ratio([r[method]["step_s"] / t[method]["step_s"] for t, r in pairs])
    for method in out["this"]["methods"]
    if method in out["ref"]["methods"]
  }
  return out


def table(out: dict, config, label: str = "") -> str:
  """Markdown table of one tree's measurements."""
  m = config.model
  lines = [
    f"{label}device: {out['device']}, compute {out['compute_dtype']}, measured peak matmul "
    f"{out['peak_matmul_tflops']:.2f} TFLOP/s; denoiser {m.depth} x {m.width}, length {m.max_length}, "
    f"global batch {config.train.batch_size}, sampling {FLAGS.sample_nfe} steps",
    "",
    "| method | params | N per token | step (ms) | train tokens/s | model MFLOP/token | estimate | MFU (%) "
    "| sample tokens/s |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for method in out["methods"]:
    r = out[method]
    estimate = r.get("flops_per_token")
    ratio = f"{estimate / 1e6:.2f} ({r['model_flops_per_token'] / estimate:.2f}x)" if estimate else "-"
    n_tok = f"{r['n_per_token'] / 1e6:.2f}M" if "n_per_token" in r else "-"
    lines.append(
      f"| {method} | {r['params'] / 1e6:.2f}M | {n_tok} | {r['step_ms']:.1f} | "
      f"{r['train_tokens_per_s']:.0f} | "
      f"{r['model_flops_per_token'] / 1e6:.2f} | {ratio} | {r['mfu_percent']:.1f} | "
      f"{r['sample_tokens_per_s']:.0f} |"
    )
  lines.append("")
  for method, ratio in out["step_time_over_mdm"].items():
    lines.append(f"{method} / mdm step time: {ratio['median']:.3f} (median of {ratio['rounds']})")
  return "\n".join(lines)


def comparison_table(out: dict, config, ref: str) -> str:
  """Both trees' tables and the speed-up of this tree over the reference."""
  lines = [table(out["this"], config, "this tree: "), "", table(out["ref"], config, f"{ref}: "), ""]
  lines += [f"train tokens/s, this tree / {ref} ({out['ref_commit'][:12]}):", ""]
  for method, s in out["speedup"].items():
    lines.append(f"- {method}: {s['median']:.3f} (median of {s['rounds']})")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  ref = FLAGS["compare-ref"].value
  if ref:
    out = compare(ref, FLAGS.rounds, FLAGS.steps)
    print(comparison_table(out, FLAGS.config, ref), flush=True)
  else:
    out = run(FLAGS.config, FLAGS.rounds, FLAGS.steps)
    print(table(out, FLAGS.config), flush=True)
  if FLAGS.json:
    with open(FLAGS.json, "w", encoding="utf-8") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  app.run(main)
