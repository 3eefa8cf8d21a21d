"""Every config in configs/ builds, validates, and takes a train step on tiny shapes."""

import glob
import os

import jax
import numpy as np
import pytest
from conftest import CONFIGS, load_config, shrink, train_steps

from vmd_jax import model as model_lib
from vmd_jax import tasks, trainer
from vmd_jax.data import pipeline
from vmd_jax.defaults import METHODS
from vmd_jax.errors import ConfigError
from vmd_jax.validation import validate

SYNTHETIC = ["pair", "pair_nonuniform", "pair_corr", "d1", "d2"]


def test_every_config_file_is_covered():
  files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIGS, "*.py")))
  assert files == ["benchmark.py", "compare.py", "sequences.py", "sudoku.py", "synthetic.py", "text8.py"]


def _one_step(config):
  validate(config)
  dataset = pipeline.load(config.data)
  tasks.fit_to_data(config, dataset.length)
  state, losses = train_steps(config, dataset, trainer.make_mesh(), 1)
  assert int(state.step) == 1 and np.isfinite(losses[0])
  return dataset, state


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("dataset", SYNTHETIC)
def test_synthetic_config_validates_and_loads(dataset, method, data_dir):
  config = shrink(load_config("synthetic.py", f"{dataset},{method}"), data_dir)
  validate(config)
  assert pipeline.load(config.data).length == config.model.max_length


# A step for every method on D1: the step's code is the same for a method whatever the data, and each
# compile costs seconds. The other configs train end to end elsewhere: pair in test_cli and
# test_bounds_vs_entropy, sequences in test_cli and test_multiprocess, sudoku in test_sudoku, text and
# blocks in test_blocks. (vmd+0.4 is vmd+ with other option values, each trained in test_exact_samplers.)
@pytest.mark.parametrize("method", sorted(set(METHODS) - {"vmd+0.4"}))
def test_synthetic_config_takes_a_step(method, data_dir):
  config = shrink(load_config("synthetic.py", f"d1,{method}"), data_dir)
  dataset, state = _one_step(config)
  assert dataset.length == config.model.max_length
  assert ("encoder" in state.params["params"]) == (method != "mdm")


def test_sequences_config_loads_a_users_file(data_dir, tmp_path):
  path = tmp_path / "tokens.npy"
  np.save(path, np.random.default_rng(0).integers(0, 7, size=(64, 12)).astype(np.int32))
  config = shrink(load_config("sequences.py", "vmd"), data_dir)
  config.data.path = str(path)
  validate(config)
  dataset = pipeline.load(config.data)
  assert dataset.vocab_size == 7 and dataset.length == 12


def test_sudoku_config_loads_puzzles_with_their_clues(data_dir):
  config = shrink(load_config("sudoku.py", "vmd"), data_dir)
  config.data.num_train, config.data.base_train, config.data.num_test = 40, 8, 4
  validate(config)
  dataset = pipeline.load(config.data)
  assert dataset.vocab_size == 9 and dataset.length == 81 and dataset.train_given.shape == (40, 81)


def _abstract_params(config, vocab_size: int, length: int):
  """The shapes of the parameters a model of config is initialised with (nothing computed)."""
  model = model_lib.build_model(config, vocab_size, length)
  x0 = jax.numpy.zeros((1, length), jax.numpy.int32)
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), x0, x0 == 0, jax.numpy.ones((1,)))


def _denoiser_parameters(config) -> int:
  params = _abstract_params(config, 9, 81)
  return sum(leaf.size for leaf in jax.tree.leaves(params["params"]["denoiser"]))


def test_sudoku_sizes_and_compare():
  for method in ("mdm", "vmd", "vmd+"):
    for size in ("cpu", "gpu"):
      validate(load_config("sudoku.py", f"{method},{size}"))
  assert 5.5e6 < _denoiser_parameters(load_config("sudoku.py", "mdm,gpu")) < 7e6  # the paper's ~6M
  compare = load_config("sudoku.py", "compare")
  assert list(compare.runs) == ["mdm", "vmd", "vmd+"]
  assert compare.runs.vmd.model.to_dict() == {**compare.runs.mdm.model.to_dict(), "latent_dim": 16}
  for run in compare.runs.values():  # one dataset, with both test sets, for every run
    assert run.data.to_dict() == compare.runs.mdm.data.to_dict() and run.data.num_hard_test >= 2_000
  for bad in ("vmd,tpu", "sudoku", "vmd,cpu,x"):
    with pytest.raises(ConfigError, match="sudoku config arg"):
      load_config("sudoku.py", bad)
  mismatched = load_config("sudoku.py", "vmd")
  mismatched.data.name = "d1"
  with pytest.raises(ConfigError, match="the sudoku task takes the datasets sudoku, sudoku_file"):
    validate(mismatched)


def test_block_configs_validate_and_build_latents_per_block():
  for method in sorted(METHODS):
    for dataset in ("d1", "d2"):
      config = load_config("synthetic.py", f"{dataset},{method},block2")
      validate(config)
      assert config.model.block_size == 2 and config.eval.nfes == (2, 4)
    for block in (4, 8):
      for size in ("cpu", "gpu"):
        config = load_config("text8.py", f"{method},block{block},{size}")
        validate(config)
        blocks = config.data.seq_length // block
        assert config.model.block_size == block and all(n % blocks == 0 for n in config.eval.nfes)
  for size in ("cpu", "gpu"):  # the AR baseline: blocks of one token, one step each, no latent
    config = load_config("text8.py", f"ar,{size}")
    validate(config)
    length = config.data.seq_length
    assert (config.model.block_size, config.model.latent_dim, config.objective.name) == (1, 0, "stepwise")
    assert config.eval.nfes == config.objective.nfes == (length,)
  gpu = load_config("text8.py", "vmd,block4")
  assert (gpu.model.depth, gpu.model.width, gpu.data.name) == (12, 768, "text8")
  for bad in ("vmd", "vmd,block3", "vmd,blockx", "vmd,block4,tpu", "x,block4", "ar,block4", "ar,cpu,x"):
    with pytest.raises(ConfigError, match="text8 config arg"):
      load_config("text8.py", bad)
  with pytest.raises(ConfigError, match="block size 3 must divide"):
    load_config("synthetic.py", "d1,vmd,block3")
  config = load_config("synthetic.py", "d1,vmd,block2")
  params = _abstract_params(config, vocab_size=10, length=4)
  assert params["params"]["denoiser"]["latent_proj"]["kernel"].shape[0] == config.model.latent_dim


@pytest.mark.parametrize("size", ["cpu", "gpu"])
def test_benchmark_config_validates_for_both_methods(size):
  from vmd_jax.defaults import apply_method

  for method in ("mdm", "vmd"):
    config = apply_method(load_config("benchmark.py", size), method)
    validate(config)
    model = model_lib.build_model(config, config.data.vocab_size, config.model.max_length)
    assert model.denoiser.width == config.model.width and (model.encoder is None) == (method == "mdm")


def test_compare_config_holds_valid_synthetic_runs():
  config = load_config("compare.py")
  methods = ("mdm", "vmd", "vmdplus")
  assert sorted(config.runs) == sorted(f"{d}_{m}" for d in ("pair", "d1", "d2") for m in methods)
  for sub in config.runs.values():
    validate(sub)
  assert config.runs.d1_vmdplus.objective.name == "stepwise" and config.runs.d1_vmdplus.label == "vmd+"
  chosen = load_config("compare.py", "d2+markov@mdm,vmd")
  assert sorted(chosen.runs) == ["d2_mdm", "d2_vmd", "markov_mdm", "markov_vmd"]


@pytest.mark.parametrize("per_position", [True, False])
@pytest.mark.parametrize("latent_path", ["adaln", "low_rank", "low_rank_adaln"])
def test_model_options_reach_the_network(per_position, latent_path):
  config = load_config("synthetic.py", "d1,vmd")
  config.model.latent_per_position = per_position
  config.model.latent_path = latent_path
  config.model.latent_rank = 5
  params = _abstract_params(config, vocab_size=10, length=4)
  m = config.model
  rows = m.max_length if per_position else 1
  denoiser = params["params"]["denoiser"]
  if latent_path != "low_rank":
    assert denoiser["latent_proj"]["kernel"].shape == (m.latent_dim, m.width * rows)
  if latent_path == "low_rank_adaln":
    assert denoiser["latent_code"]["kernel"].shape == (m.width, 5)
    assert denoiser["block_0"]["adaln_code"]["kernel"].shape == (5, 4 * m.width)
  elif latent_path == "low_rank":
    path = params["params"]["denoiser"]["latent_path"]
    assert path["features"].shape == (m.latent_dim, rows, m.latent_dim)
    assert path["embed"].shape == path["condition"].shape == (m.latent_dim, m.width)
  assert params["params"]["encoder"]["mean"]["kernel"].shape == (m.encoder_width, m.latent_dim)


def test_encoder_pool_reaches_the_encoder_and_a_bad_one_is_refused():
  config = load_config("sudoku.py", "vmd+")
  config.model.encoder_pool = "position"
  encoder = _abstract_params(config, 9, 81)["params"]["encoder"]
  assert encoder["pool_weights"].shape == (81, config.model.encoder_width)
  config.model.encoder_pool = "max"
  with pytest.raises(ConfigError, match="model.encoder_pool='max'"):
    validate(config)
