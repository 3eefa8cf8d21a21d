"""One process of the 2-process test:

  python multiprocess_worker.py PROCESS_ID PORT WORKDIR DATA_DIR NPY OUT

Trains and evaluates a tiny VMD through the library as `python -m vmd_jax.main` would, joined to the
other process by jax.distributed on localhost, and saves to OUT the tokens this process fed to its
devices at every step and its final parameters.
"""

import os
import sys

process_id, port, workdir, data_dir, npy_path, out = sys.argv[1:]
os.environ.update(
  VMD_COORDINATOR_ADDRESS=f"localhost:{port}", VMD_NUM_PROCESSES="2", VMD_PROCESS_ID=process_id
)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from conftest import multiprocess_config  # noqa: E402 - also forces 2 CPU devices per process

from vmd_jax import api, trainer  # noqa: E402

fed = []  # per step: this process's tokens [accumulation, local microbatch, length]
make_batch = trainer.global_batch


def recording_global_batch(*args, **kwargs):
  batch = make_batch(*args, **kwargs)
  shards = sorted(batch["tokens"].addressable_shards, key=lambda s: s.index[1].start or 0)
  fed.append(np.concatenate([np.asarray(s.data) for s in shards], axis=1))
  return batch


trainer.global_batch = recording_global_batch
config = multiprocess_config(data_dir, npy_path)
config.jax_distributed = True
run = trainer.Run(config, workdir, api.prepare(config))
assert jax.process_count() == 2 and jax.device_count() == 4, (jax.process_count(), jax.device_count())
run.train()
params = jax.device_get(run.state.params)
api.evaluate(run)
run.close()
np.savez(out, fed=np.stack(fed), **{f"param_{i}": leaf for i, leaf in enumerate(jax.tree.leaves(params))})
