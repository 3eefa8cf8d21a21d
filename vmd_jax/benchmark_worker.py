"""The measuring side of `vmd_jax.benchmark`: a Session in this process, or a worker for another tree.

`python vmd_jax/benchmark_worker.py ROOT [--sample_nfe=N] --config=... [--config.x=y ...]` imports
vmd_jax from the source tree at ROOT (this commit's, or an older one's: it uses only the parts of
`vmd_jax.benchmark` that earlier releases have too), builds a Session of the config, and answers
requests, one JSON object a line on stdin, with one line `BENCHMARK <json>` each on stdout:
{"op": "ready"}, {"op": "round", "steps": n, "reverse": bool}, {"op": "describe"}. It ends when stdin
closes.
"""

import json
import sys

PREFIX = "BENCHMARK "


class Session:
  """The methods of one config, timed by the Bench class of `bench` (a vmd_jax.benchmark module)."""

  def __init__(self, bench, config, methods):
    import jax
    import jax.numpy as jnp

    from vmd_jax import model as model_lib
    from vmd_jax import trainer

    mesh = trainer.make_mesh()
    dtype = model_lib.compute_dtype(config.model.dtype)
    self.bench = bench
    self.info = {
      "device": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
      "compute_dtype": jnp.dtype(dtype).name,
      "peak_matmul_flops": bench.peak_matmul_flops(dtype) * mesh.devices.size,
    }
    self.benches = {method: bench.Bench(config, method, mesh) for method in methods}
    for b in self.benches.values():  # compile and warm up
      b.time_steps(2)
      b.time_sampling()

  def round(self, steps: int, reverse: bool) -> dict:
    """Step and sampling seconds of each method, the methods in sorted order (reversed if asked)."""
    out = {}
    for method in sorted(self.benches, reverse=reverse):
      b = self.benches[method]
      out[method] = {"step_s": b.time_steps(steps), "sample_s": b.time_sampling()}
    return out

  def describe(self) -> dict:
    """The device and, per method: parameters, tokens per step, model FLOPs per token, sampled tokens
    per call, and the 6N + attention estimate where this tree's benchmark has one."""
    import jax

    out = dict(self.info)
    for method, b in self.benches.items():
      tokens = b.config.train.batch_size * b.length
      out[method] = {
        "params": int(sum(x.size for x in jax.tree.leaves(b.state.params))),
        "tokens_per_step": tokens,
        "model_flops_per_token": b.model_flops_per_step() / tokens,
        "sample_tokens": int(b.x_init.size),
      }
      if hasattr(self.bench, "flops_estimate"):
        out[method] |= self.bench.flops_estimate(b.model, b.length)
    return out


def methods() -> tuple[str, ...]:
  """The methods the imported tree's benchmark times (mdm and vmd before release 0.6)."""
  from vmd_jax import benchmark

  return getattr(benchmark, "METHODS", ("mdm", "vmd"))


def serve(argv: list[str]) -> None:
  """Build the Session that argv describes and answer requests until stdin closes."""
  from absl import flags

  from vmd_jax import benchmark

  flags.FLAGS(["benchmark_worker", *argv])
  session = Session(benchmark, flags.FLAGS.config, methods())
  answers = {
    "ready": lambda request: {},
    "round": lambda request: session.round(request["steps"], request["reverse"]),
    "describe": lambda request: session.describe(),
  }
  for line in sys.stdin:
    request = json.loads(line)
    print(PREFIX + json.dumps(answers[request["op"]](request)), flush=True)


if __name__ == "__main__":
  root = sys.argv[1]
  sys.path[0] = root  # the tree to measure, not this script's folder
  import vmd_jax

  if not vmd_jax.__file__.startswith(root):
    raise SystemExit(f"benchmark worker: imported vmd_jax from {vmd_jax.__file__}, not from {root}")
  serve(sys.argv[2:])
