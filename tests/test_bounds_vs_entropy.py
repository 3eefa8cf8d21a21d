"""Every likelihood the library reports is an upper bound on NLL: on sets of known entropy, each
reported bound is at least the entropy, while the vmd training loss can drop below it (design note §3)."""

import math

from conftest import load_config, shrink

from vmd_jax import tasks, trainer
from vmd_jax.data import pipeline


def _train_and_evaluate(arg, data_dir, workdir, steps):
  config = shrink(load_config("synthetic.py", arg), data_dir, steps=steps)
  config.model.width = 32
  config.model.encoder_width = 32
  config.train.batch_size = 64
  config.train.log_every = steps
  config.train.learning_rate = 3e-3
  config.objective.kl_warmup_steps = steps // 3
  config.eval.bound_examples = 256
  config.eval.bound_draws = 8
  config.eval.iwae_k = 4
  run = trainer.Run(config, workdir, pipeline.load(config.data))
  run.train()
  results = tasks.evaluate(run)
  run.close()
  return results


# Every bound of every objective's model is checked against exact enumeration in test_objectives
# and test_exact_samplers; here one trained run shows the sanity law on data of known entropy.
def test_every_reported_bound_is_at_least_the_entropy_and_the_vmd_loss_is_not(data_dir, tmp_path):
  results = _train_and_evaluate("pair,vmd", data_dir, str(tmp_path), 250)
  entropy = results["entropy_bits_per_token"]
  bounds = [k for k in results if k.endswith("bits_per_token") and k != "entropy_bits_per_token"]
  assert len(bounds) >= 3, bounds
  for key in bounds:
    assert results[key] >= entropy - 3 * results[key + "_se"], (key, results[key], entropy)
  # The optimised vmd loss (nats per token) is not a bound: here it is below the entropy.
  assert results["loss"] < entropy * math.log(2), (results["loss"], entropy * math.log(2))
