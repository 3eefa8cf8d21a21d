"""Attention implementations side by side: `python -m vmd_jax.benchmark_attention`.

Times one self-attention, forward and forward + backward, for each implementation this backend has:
the written-out `networks._einsum_attention` (softmax(q k^T / sqrt(d)) v in float32), and
`jax.nn.dot_product_attention` with XLA's implementation and, on a GPU in half precision, cuDNN's. The
implementations alternate within each round; times are medians over rounds, compilation excluded.
`networks.attention_implementation` picks from these measurements.
"""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from vmd_jax import networks

flags.DEFINE_list("head_dims", ["32", "64"], "Head sizes to time.")
flags.DEFINE_integer("batch", 16, "Sequences.")
flags.DEFINE_integer("length", 256, "Positions.")
flags.DEFINE_integer("heads", 4, "Attention heads.")
flags.DEFINE_string("dtype", "float32", "Compute dtype (float32 or bfloat16).")
flags.DEFINE_integer("rounds", 5, "Rounds; each times every implementation once.")
flags.DEFINE_integer("calls", 10, "Calls timed per implementation and round.")
flags.DEFINE_string("json", None, "Also write the measurements to this JSON file.")
FLAGS = flags.FLAGS


def implementations(dtype) -> dict:
  """Name -> attention function of (q, k, v), for the implementations this backend can run."""

  def written_out(q, k, v):
    return jnp.einsum("bhqk,bkhd->bqhd", networks._einsum_attention(q, k, v, None, dtype), v)

  out = {"written-out": written_out, "xla": lambda q, k, v: networks.fused_attention(q, k, v, None, "xla")}
  if networks.attention_implementation(dtype, 64, train=False) == "cudnn":
    out["cudnn"] = lambda q, k, v: networks.fused_attention(q, k, v, None, "cudnn")
  return out


def _seconds(fn, args, calls: int) -> float:
  start = time.perf_counter()
  for _ in range(calls):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / calls


def measure(head_dim: int, dtype) -> dict:
  """Median forward and forward + backward milliseconds of each implementation at one head size."""
  shape = (FLAGS.batch, FLAGS.length, FLAGS.heads, head_dim)
  args = tuple(jax.random.normal(jax.random.PRNGKey(i), shape, dtype) for i in range(3))
  fns = {}
  for name, attend in implementations(dtype).items():
    loss = lambda q, k, v, attend=attend: jnp.sum(attend(q, k, v).astype(jnp.float32) ** 2)  # noqa: E731
    fns[name] = {"forward": jax.jit(attend), "forward+backward": jax.jit(jax.grad(loss, argnums=(0, 1, 2)))}
  for pair in fns.values():
    for fn in pair.values():
      jax.block_until_ready(fn(*args))  # compile
  times = {name: {mode: [] for mode in pair} for name, pair in fns.items()}
  for r in range(FLAGS.rounds):
    for name in sorted(fns, reverse=r % 2 == 1):
      for mode, fn in fns[name].items():
        times[name][mode].append(_seconds(fn, args, FLAGS.calls))
  return {
    name: {mode: 1e3 * float(np.median(t)) for mode, t in modes.items()} for name, modes in times.items()
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  dtype = jnp.dtype(FLAGS.dtype)
  out = {"device": f"{jax.devices()[0].device_kind}", "dtype": dtype.name}
  print(
    f"device: 1 x {out['device']}, {dtype.name}; q, k, v [{FLAGS.batch}, {FLAGS.length}, {FLAGS.heads}, "
    "head size]; milliseconds per call (median of rounds)\n\n"
    "| head size | implementation | forward | forward + backward |\n|---|---|---|---|"
  )
  for head_dim in map(int, FLAGS.head_dims):
    out[head_dim] = measure(head_dim, dtype)
    for name, r in out[head_dim].items():
      print(f"| {head_dim} | {name} | {r['forward']:.1f} | {r['forward+backward']:.1f} |", flush=True)
  if FLAGS.json:
    with open(FLAGS.json, "w", encoding="utf-8") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  app.run(main)
