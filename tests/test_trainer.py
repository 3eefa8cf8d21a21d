"""The data-parallel step over every device against the single-device step; checkpoints of another
config refused.

Exact resume is tested in test_resilience.py (after SIGTERM, SIGKILL and a damaged checkpoint)."""

import jax
import numpy as np
import pytest
from conftest import assert_same_training, initial_params, load_config, shrink, train_steps

from vmd_jax import checkpoints, trainer
from vmd_jax.data import pipeline
from vmd_jax.errors import CheckpointError


@pytest.fixture(scope="module")
def setup(data_dir):
  config = shrink(load_config("synthetic.py", "d1,vmd"), data_dir, steps=6)
  return config, pipeline.load(config.data)


def test_two_device_step_equals_one_device_step(setup):
  """Every local device (two forced CPU devices in CI; the GPUs in launch/device_check.sh) against one."""
  config, dataset = setup
  if jax.device_count() < 2:
    pytest.skip("one device: nothing to shard over (conftest forces two CPU devices)")
  two, loss_two = train_steps(config, dataset, trainer.make_mesh(jax.devices()), 3)
  one, loss_one = train_steps(config, dataset, trainer.make_mesh(jax.devices()[:1]), 3)
  np.testing.assert_allclose(loss_two, loss_one, rtol=1e-5)
  assert_same_training(two.params, one.params, initial_params(config, dataset))
  assert int(two.step) == 3


def test_batch_is_sharded_over_both_devices(setup):
  config, dataset = setup
  batch = trainer.global_batch(dataset.train, 0, config, trainer.make_mesh())
  assert len(batch["tokens"].sharding.device_set) == jax.device_count()
  assert batch["tokens"].shape == (1, config.train.batch_size, dataset.length)


def test_checkpoint_of_another_config_or_latent_path_is_refused(setup, tmp_path):
  config, dataset = setup
  run = trainer.Run(config, str(tmp_path), dataset)
  run.train(until_step=1)
  run.save()
  run.close()
  other = config.copy_and_resolve_references()
  other.model.width = 32
  with pytest.raises(CheckpointError, match="model.width=16"):
    trainer.Run(other, str(tmp_path), dataset)
  assert checkpoints.Checkpointer(str(tmp_path)).latest_step() == 1  # the checkpoint is kept
  # A checkpoint of a release before model.latent_path and model.latent_rank (no such keys) is one of
  # the adaln path.
  manager = checkpoints.Checkpointer(str(tmp_path))
  meta = manager.read_meta(1)
  assert meta["fingerprint"]["model.latent_path"] == "adaln"
  del meta["fingerprint"]["model.latent_path"], meta["fingerprint"]["model.latent_rank"]
  manager.check_matches(1, config, meta)
  other = config.copy_and_resolve_references()
  other.model.latent_path = "low_rank"
  with pytest.raises(CheckpointError, match="model.latent_path='adaln' .checkpoint. vs 'low_rank'"):
    manager.check_matches(1, other, meta)


@pytest.mark.parametrize(
  ("method", "key", "value", "read"),
  [
    ("mdm", "objective.step_draw", "step", False),
    ("mdm", "objective.kl_hold_steps", 500, False),
    ("vmd+", "objective.step_draw", "step", True),
    ("vmd+", "objective.kl_hold_steps", 500, True),
    ("vmd", "objective.step_draw", "step", False),
  ],
)
def test_checkpoint_records_only_the_options_its_run_reads(tmp_path, method, key, value, read):
  """An option the model and objective ignore neither refuses a checkpoint nor is required to match
  one written before it was left out; one they read does."""
  config = load_config("sudoku.py", method)
  changed = config.copy_and_resolve_references()
  section, field = key.split(".")
  changed[section][field] = value
  manager = checkpoints.Checkpointer(str(tmp_path))
  for saved, current in ((config, changed), (changed, config)):
    meta = {"fingerprint": {**checkpoints.fingerprint(config), **checkpoints.fingerprint(saved)}}
    meta["fingerprint"][key] = saved[section][field]  # as a release that recorded every key wrote it
    if read:
      with pytest.raises(CheckpointError, match=key):
        manager.check_matches(1, current, meta)
    else:
      manager.check_matches(1, current, meta)
