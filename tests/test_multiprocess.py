"""Two processes on this machine (jax.distributed on localhost, two CPU devices each) train one run:
each feeds its own share of every global batch, together they take exactly the single-process steps,
and only process 0 writes metrics and results."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, assert_same_training, initial_params, multiprocess_config, train_steps

from vmd_jax import trainer
from vmd_jax.data import pipeline


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, data_dir):
  root = tmp_path_factory.mktemp("multiprocess")
  npy = str(root / "sequences.npy")
  digits = (np.arange(1000)[:, None] // 10 ** np.arange(4)[::-1]) % 10  # the 1,000 distinct 4-digit rows
  np.save(npy, digits.astype(np.int32))
  workdir, port = str(root / "run"), str(_free_port())
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  worker = os.path.join(REPO, "tests", "multiprocess_worker.py")
  procs = [
    subprocess.Popen(
      [sys.executable, worker, str(i), port, workdir, data_dir, npy, str(root / f"out{i}.npz")],
      cwd=os.path.join(REPO, "tests"),
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  logs = [p.communicate(timeout=400)[0] for p in procs]
  for p, log in zip(procs, logs, strict=True):
    assert p.returncode == 0, log[-3000:]
  outs = [dict(np.load(root / f"out{i}.npz")) for i in range(2)]
  return multiprocess_config(data_dir, npy), workdir, outs


def _params(out):
  return [out[k] for k in sorted((k for k in out if k.startswith("param_")), key=lambda k: int(k[6:]))]


def test_processes_feed_disjoint_shares_of_each_global_batch(two_processes):
  config, _, outs = two_processes
  dataset = pipeline.load(config.data)
  fed = [out["fed"] for out in outs]  # each [steps, accumulation, batch / 2, length]
  assert fed[0].shape == (config.train.steps, 1, config.train.batch_size // 2, dataset.length)
  for step in range(config.train.steps):
    mine, theirs = (set(map(tuple, f[step].reshape(-1, dataset.length).tolist())) for f in fed)
    assert not mine & theirs  # the rows are distinct sequences, so shared rows would be shared data
    expected = dataset.train[pipeline.batch_indices(step, config.train.batch_size, len(dataset.train), 0)]
    together = np.concatenate([f[step].reshape(-1, dataset.length) for f in fed])
    np.testing.assert_array_equal(together, expected)


def test_processes_end_with_the_parameters_of_one_process(two_processes):
  config, _, outs = two_processes
  for a, b in zip(_params(outs[0]), _params(outs[1]), strict=True):
    np.testing.assert_array_equal(a, b)
  dataset = pipeline.load(config.data)
  single, _ = train_steps(config, dataset, trainer.make_mesh(), config.train.steps)
  init = jax.tree.leaves(initial_params(config, dataset))
  assert_same_training(_params(outs[0]), jax.tree.leaves(single.params), init)  # 4 devices vs 2


def test_only_process_zero_writes_and_the_checkpoint_restores(two_processes):
  config, workdir, outs = two_processes
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps == list(range(config.train.log_every, config.train.steps + 1, config.train.log_every))
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert np.isfinite(results["nelbo@nfe4_bits_per_token"])
  run = trainer.Run(config, workdir, pipeline.load(config.data))  # restored by one process
  assert run.step == config.train.steps
  for a, b in zip(_params(outs[0]), jax.tree.leaves(jax.device_get(run.state.params)), strict=True):
    np.testing.assert_array_equal(a, b)
  run.close()
