"""The Python API: train, load, sample (prompts and given tokens kept), nll_bound against the exact
likelihood of a tiny model, solve, and the errors a user meets."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config, shrink

import vmd_jax
from vmd_jax import tasks
from vmd_jax.data import sudoku
from vmd_jax.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
  config = shrink(load_config("synthetic.py", "d1,mdm"), data_dir, steps=30)
  config.eval.nfes = (1, 4)
  config.eval.iwae_k = 0
  workdir = str(tmp_path_factory.mktemp("api") / "d1_mdm")
  return config, workdir, vmd_jax.train(config, workdir)


def test_train_returns_the_evaluated_model_and_load_gives_it_back(trained):
  config, workdir, model = trained
  assert model.step == 30 and model.results["steps"] == 30 and model.results["task"] == "synthetic"
  loaded = vmd_jax.load(workdir)
  assert loaded.step == 30 and loaded.results == model.results
  assert loaded.config.to_dict() == config.to_dict()  # the config recorded with the checkpoint
  for a, b in zip(jax.tree.leaves(model.params), jax.tree.leaves(loaded.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  again = loaded.sample(16, nfe=2, seed=3)
  np.testing.assert_array_equal(again, model.sample(16, nfe=2, seed=3))  # same model, same seed
  assert again.shape == (16, 4) and again.dtype == np.int32 and again.max() < 10


def test_load_with_another_config_names_the_difference(trained):
  config, workdir, _ = trained
  other = config.copy_and_resolve_references()
  other.model.width = 32
  with pytest.raises(CheckpointError, match="does not match the config: model.width=16"):
    vmd_jax.load(workdir, other)
  with pytest.raises(CheckpointError, match="no readable checkpoint"):
    vmd_jax.load(workdir + "_missing")


def test_sample_keeps_prompts_and_given_tokens_and_takes_sampler_options(trained):
  _, _, model = trained
  prompted = model.sample(12, nfe=4, prompt=[7, 8])
  assert (prompted[:, :2] == [7, 8]).all()
  given = np.full((12, 4), -1)
  given[:, 3] = 5
  infilled = model.sample(12, nfe=3, given=given, order="margin", token_rule="argmax")
  assert (infilled[:, 3] == 5).all() and (infilled >= 0).all()
  with pytest.raises(ConfigError, match="order='best'"):
    model.sample(4, nfe=1, order="best")
  with pytest.raises(ConfigError, match="given has shape"):
    model.sample(4, nfe=1, given=np.zeros((4, 3)))


def _exact_nll(model, tokens: np.ndarray) -> np.ndarray:
  """-log p(x) of the one-token-a-step random-order sampler of an MDM, by enumerating every order."""
  length, mask = tokens.shape[1], model.network.vocab_size
  apply = jax.jit(lambda p, x, t: model.network.apply(p, x, t, None, method="denoise"))
  probs = []
  for order in itertools.permutations(range(length)):
    log_p = np.zeros(len(tokens))
    x_t = np.full(tokens.shape, mask, np.int32)
    for j, i in enumerate(order):
      t = jnp.full((len(tokens),), 1.0 - j / length)
      log_probs = jax.nn.log_softmax(apply(model.params, jnp.asarray(x_t), t), axis=-1)
      log_p += np.asarray(log_probs)[np.arange(len(tokens)), i, tokens[:, i]]
      x_t[:, i] = tokens[:, i]
    probs.append(np.exp(log_p))
  return -np.log(np.mean(probs, axis=0))


def test_nll_bound_is_above_the_exact_nll_and_tightens_with_draws(trained):
  _, _, model = trained
  tokens = np.array([[k, (k + 1) % 10, (k + 2) % 10, (k + 3) % 10] for k in range(10)] * 3, np.int32)
  exact = _exact_nll(model, tokens)
  many = model.nll_bound(tokens, num_draws=256, seed=1)
  few = model.nll_bound(tokens, num_draws=1, seed=1)
  assert many.estimator.startswith("iwae256") and many.nats.shape == (30,)
  # each estimate is a bound in expectation: its mean over sequences stays above the exact NLL
  se = few.nats.std(ddof=1) / math.sqrt(len(tokens))
  assert few.nats.mean() >= exact.mean() - 3 * se
  assert many.nats.mean() >= exact.mean() - 1e-3
  assert many.nats.mean() <= few.nats.mean() + 3 * se  # more draws: tighter (up to noise)
  np.testing.assert_allclose(many.nats, exact, atol=0.05)  # 256 draws of 24 orders: near exact
  with pytest.raises(ConfigError, match="tokens must be in 0..9"):
    model.nll_bound(np.full((2, 4), 10))


def test_solve_fills_in_puzzles_and_keeps_their_clues(data_dir, tmp_path):
  config = shrink(load_config("sudoku.py", "mdm"), data_dir, steps=2)
  config.data.num_train, config.data.base_train, config.data.num_test = 40, 8, 4
  config.eval.nfes = (5,)
  config.eval.num_samples = 4
  model = vmd_jax.train(config, str(tmp_path / "sudoku"), evaluate_after=False)
  csv = tmp_path / "puzzles.csv"
  grids = np.where(model.dataset.test_given, model.dataset.test + 1, 0)
  csv.write_text("puzzle\n" + "\n".join("".join(map(str, g)).replace("0", ".") for g in grids) + "\n")
  puzzles = sudoku.read_puzzles(str(csv))
  np.testing.assert_array_equal(puzzles, grids)
  solved = model.solve(puzzles, nfe=5)
  assert solved.shape == (4, 81) and solved.min() >= 1 and solved.max() <= 9
  np.testing.assert_array_equal(solved[puzzles > 0], puzzles[puzzles > 0])
  with pytest.raises(ConfigError, match="digits 0..9"):
    model.solve(np.full((1, 81), 10))


def test_tasks_without_puzzles_refuse_to_solve(trained):
  _, _, model = trained
  with pytest.raises(ConfigError, match="the synthetic task has no puzzles"):
    model.solve(np.zeros((1, 81), int))
  assert set(tasks.REGISTRY) == {"synthetic", "sequences", "sudoku", "text"}
