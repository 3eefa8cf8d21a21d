"""A user's own token sequences (.npy of token ids [N, L]): likelihood bounds and samples.

Evaluation: the bounds of every task on the held-out split, and eval.num_samples samples at each NFE of
eval.nfes, saved as samples_nfe{N}.npy. With eval.nfes = () the NFEs follow the data's length L:
1, 4 and 16 steps, each capped at L.
"""

import jax
import ml_collections

from vmd_jax import evaluation, tables
from vmd_jax.tasks import base


class Sequences(base.Task):
  """Bounds and samples on a user's own sequences."""

  name = "sequences"
  datasets = ("sequences",)

  def add_defaults(self, config) -> None:
    config.data.vocab_size = ml_collections.FieldReference(None, field_type=int)  # None: max token + 1

  def default_nfes(self, length: int) -> tuple[int, ...]:
    return tuple(sorted({min(n, length) for n in (1, 4, 16)}))

  def evaluate(self, run, key) -> dict:
    config, dataset = run.config, run.dataset
    params = run.eval_params()
    for nfe in config.eval.nfes:
      samples = evaluation.generate(
        run.model, params, config, nfe, config.eval.num_samples, dataset.length, jax.random.fold_in(key, nfe)
      )
      if jax.process_index() == 0:
        evaluation.write_samples(run.workdir, nfe, samples)
    return evaluation.common_results(run, key)

  def table(self, runs) -> str:
    return tables.likelihood_table({name: result for name, (result, _) in runs.items()})


TASK = base.register(Sequences())
