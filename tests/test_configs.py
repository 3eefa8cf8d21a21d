"""Every config in configs/ builds, validates, and takes a train step on tiny shapes."""

import glob
import os

import jax
import numpy as np
import pytest
from conftest import CONFIGS, load_config, shrink, train_steps

from vmd_jax import trainer
from vmd_jax.data import pipeline
from vmd_jax.defaults import METHODS, validate

SYNTHETIC = ["pair", "pair_nonuniform", "pair_corr", "d1", "d2"]


def test_every_config_file_is_covered():
  files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIGS, "*.py")))
  assert files == ["benchmark.py", "compare.py", "sequences.py", "synthetic.py"]


def _one_step(config):
  validate(config)
  dataset = pipeline.load(config.data)
  state, losses = train_steps(config, dataset, trainer.make_mesh(), 1)
  assert int(state.step) == 1 and np.isfinite(losses[0])
  return dataset, state


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("dataset", SYNTHETIC)
def test_synthetic_config_takes_a_step(dataset, method, data_dir):
  config = shrink(load_config("synthetic.py", f"{dataset},{method}"), data_dir)
  dataset, state = _one_step(config)
  assert dataset.length == config.model.max_length
  assert ("encoder" in state.params["params"]) == (method != "mdm")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_sequences_config_takes_a_step(method, data_dir, tmp_path):
  path = tmp_path / "tokens.npy"
  np.save(path, np.random.default_rng(0).integers(0, 7, size=(64, 12)).astype(np.int32))
  config = shrink(load_config("sequences.py", method), data_dir)
  config.data.path = str(path)
  dataset, _ = _one_step(config)
  assert dataset.vocab_size == 7 and dataset.length == 12


@pytest.mark.parametrize("size", ["cpu", "gpu"])
def test_benchmark_config_validates_for_both_methods(size):
  from vmd_jax.defaults import apply_method

  for method in ("mdm", "vmd"):
    config = apply_method(load_config("benchmark.py", size), method)
    validate(config)
    model = trainer.build_model(config, config.data.vocab_size, config.model.max_length)
    assert model.denoiser.width == config.model.width and (model.encoder is None) == (method == "mdm")


def test_compare_config_holds_valid_synthetic_runs():
  config = load_config("compare.py")
  assert sorted(config.runs) == sorted(f"{d}_{m}" for d in ("pair", "d1", "d2") for m in ("mdm", "vmd"))
  for sub in config.runs.values():
    validate(sub)


@pytest.mark.parametrize("per_position", [True, False])
def test_model_options_reach_the_network(per_position):
  config = load_config("synthetic.py", "d1,vmd")
  config.model.latent_per_position = per_position
  model = trainer.build_model(config, vocab_size=10, length=4)
  x0 = jax.numpy.zeros((1, 4), jax.numpy.int32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x0, x0 == 0, jax.numpy.ones((1,)))
  kernel = params["params"]["denoiser"]["latent_proj"]["kernel"]
  m = config.model
  assert kernel.shape == (m.latent_dim, m.width * (m.max_length if per_position else 1))
  assert params["params"]["encoder"]["mean"]["kernel"].shape == (m.encoder_width, m.latent_dim)
