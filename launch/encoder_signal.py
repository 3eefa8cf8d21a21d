"""How much the posterior encoder of a latent run tells its training examples apart: the share of the
variance of q(z | x0)'s mean that lies between examples, its mean standard deviation and the KL to the
prior, for each trained run, and for a fresh initialisation of the same config with each
model.encoder_pool. The encoder sees each example whole, with the positions that a sampler fills in
(all but the clues or the prompt) marked as masked: the posterior of the z that a sampler's parallel
steps share.

  python launch/encoder_signal.py runs/sudoku_draw/vmd+_drawnfe
  python launch/encoder_signal.py --trained-only runs/sudoku_w5/vmd+_w5 runs/sudoku_w5/vmd+_pool

A share near 0 means z is (or starts) nearly the same for every example, so it can carry nothing about
it. Prints one markdown table.
"""

import argparse

import jax
import numpy as np

from vmd_jax import api, networks, objectives, trainer
from vmd_jax.data import pipeline


def signal(network, params, tokens: np.ndarray, given: np.ndarray | None) -> tuple[float, float, float]:
  """(share of the mean's variance between examples, mean posterior std, mean KL in nats)."""
  values = jax.jit(lambda p, x, g: objectives.latent_signal(network, p, x, g))(params, tokens, given)
  return tuple(float(values[name]) for name in ("z_share", "z_std", "z_kl"))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+", help="trained runs of a latent method")
  parser.add_argument("--num", type=int, default=512, help="training examples to encode")
  parser.add_argument("--trained-only", action="store_true", help="leave out the fresh initialisations")
  args = parser.parse_args()
  print("| run | parameters | examples | between-example share of the mean | posterior std | KL (nats) |")
  print("|---|---|---|---|---|---|")
  for workdir in args.workdirs:
    trained = api.load(workdir)
    config = trained.config
    if config.model.latent_dim == 0:
      raise SystemExit(f"{workdir}: a model without a latent has no encoder")
    data = pipeline.load(config.data)
    tokens = data.train[: args.num]
    given = data.train_given[: args.num] if data.train_given is not None else None
    rows = [("trained", trained.network, trained.params)]
    for pool in () if args.trained_only else networks.ENCODER_POOLS:
      fresh = config.copy_and_resolve_references()
      fresh.model.encoder_pool = pool
      run = trainer.Run(fresh, None, data)
      rows.append((f"initial, encoder_pool={pool}", run.model, run.state.params))
    for name, network, params in rows:
      between, std, kl = signal(network, params, tokens, given)
      print(f"| {workdir} | {name} | {len(tokens)} | {between:.4f} | {std:.3f} | {kl:.3f} |")


if __name__ == "__main__":
  main()
