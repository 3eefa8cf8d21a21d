"""Estimators and bounds against exact enumeration and known values (design note §1, §3)."""

import functools
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import perturbed_params

from vmd_jax import networks, objectives
from vmd_jax.defaults import base_config
from vmd_jax.errors import ConfigError
from vmd_jax.schedules import get_schedule, masked_count

V, L = 3, 3


def _model(latent_dim=0, time_conditioning=False):
  denoiser = networks.Denoiser(
    V, L, width=16, depth=1, num_heads=2, latent_dim=latent_dim, time_conditioning=time_conditioning
  )
  encoder = (
    networks.PosteriorEncoder(V, L, latent_dim, width=16, depth=1, num_heads=2) if latent_dim else None
  )
  return networks.VMDModel(denoiser, encoder)


def _params(model, seed=0, noise=0.5):
  return perturbed_params(model, L, seed, noise)


@functools.cache
def _denoise(model):
  """The model's denoiser, jitted once per model."""
  return jax.jit(lambda params, x_t, t, z: model.apply(params, x_t, t, z, method="denoise"))


def _token_nll(model, params, x0, masked, z=None):
  """-log p(x0_i | x0 with `masked` masked) for every position: [batch, length]."""
  x_t = jnp.where(masked, V, x0)
  logits = _denoise(model)(params, x_t, jnp.ones((x0.shape[0],)), z)
  log_probs = jax.nn.log_softmax(logits, -1)
  return -np.asarray(jnp.take_along_axis(log_probs, x0[..., None], -1)[..., 0])


def exact_nelbo(model, params, x0):
  """The any-order identity, exact for a time-independent denoiser:
  sum over nonempty S of (|S|-1)!(L-|S|)!/L! * sum_{i in S} -log p(x0_i | x0 with S masked)."""
  total = np.zeros(x0.shape[0])
  for size in range(1, L + 1):
    coef = math.factorial(size - 1) * math.factorial(L - size) / math.factorial(L)
    for subset in itertools.combinations(range(L), size):
      masked = np.zeros((x0.shape[0], L), bool)
      masked[:, list(subset)] = True
      nll = _token_nll(model, params, x0, jnp.asarray(masked))
      total += coef * nll[:, list(subset)].sum(-1)
  return total


def exact_order_mixture_nll(model, params, x0):
  """-log (1/L! sum over orders sigma of p(x0 | sigma)): the NLL of the one-token-a-step sampler."""
  log_ps = []
  for order in itertools.permutations(range(L)):
    log_p = np.zeros(x0.shape[0])
    masked = np.ones((x0.shape[0], L), bool)
    for i in order:
      log_p -= _token_nll(model, params, x0, jnp.asarray(masked))[:, i]
      masked[:, i] = False
    log_ps.append(log_p)
  log_ps = np.stack(log_ps)
  return -(np.logaddexp.reduce(log_ps, axis=0) - math.log(len(log_ps)))


@pytest.fixture(scope="module")
def mdm():
  model = _model()
  return model, _params(model)


X0 = jnp.asarray([[0, 1, 2], [2, 2, 0], [1, 0, 1]], jnp.int32)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "poly2"])
def test_monte_carlo_nelbo_matches_exact_enumeration(mdm, schedule):
  model, params = mdm
  exact = exact_nelbo(model, params, X0)
  draws = np.asarray(
    objectives.nelbo_draws(model, params, X0, jax.random.PRNGKey(3), get_schedule(schedule, 0.0), 20_000)
  )
  mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
  assert np.all(np.abs(mean - exact) < 4 * se + 1e-3), (mean, exact, se)


def test_one_token_a_step_path_bound_matches_exact_enumeration(mdm):
  model, params = mdm
  exact = exact_nelbo(model, params, X0)
  step = jax.jit(
    jax.vmap(
      lambda k: objectives.trajectory_log_weights(model, params, X0, k, get_schedule("linear", 0.0), L)
    )
  )
  weights = -np.asarray(step(jax.random.split(jax.random.PRNGKey(0), 3000)))  # [draws, batch]
  mean, se = weights.mean(0), weights.std(0) / math.sqrt(len(weights))
  assert np.all(np.abs(mean - exact) < 4 * se + 1e-3)


def test_iwae_bound_tightens_towards_the_exact_nll_and_stays_above_it(mdm):
  model, params = mdm
  nll = exact_order_mixture_nll(model, params, X0)
  schedule = get_schedule("linear", 0.0)

  @functools.partial(jax.jit, static_argnums=1)
  def mean_bound(key, num):
    """The IWAE bound with num samples, averaged over 200 independent repeats: [batch]."""

    def bound(k):
      keys = jax.random.split(k, num)
      log_w = jax.vmap(lambda kk: objectives.trajectory_log_weights(model, params, X0, kk, schedule, L))(keys)
      return objectives.iwae_bound(log_w)

    return jnp.mean(jax.vmap(bound)(jax.random.split(key, 200)), axis=0)

  one = np.asarray(mean_bound(jax.random.PRNGKey(1), 1))
  many = np.asarray(mean_bound(jax.random.PRNGKey(2), 64))
  assert np.all(many < one)
  assert np.all(many >= nll - 1e-4)
  np.testing.assert_allclose(many, nll, atol=0.05)


def test_kl_is_analytic_and_zero_at_the_prior():
  zero = networks.kl_to_prior(networks.GaussianPosterior(jnp.zeros((2, 5)), jnp.zeros((2, 5))))
  chex.assert_trees_all_close(zero, jnp.zeros((2, 5)))
  key = jax.random.PRNGKey(0)
  q = networks.GaussianPosterior(jnp.asarray([[0.7, -1.2, 0.1]]), jnp.asarray([[-0.3, 0.4, -1.0]]))
  z = jax.vmap(lambda k: networks.sample_gaussian(q, k))(jax.random.split(key, 200_000))  # [n, 1, 3]
  monte_carlo = jnp.mean(networks.gaussian_log_prob(q, z) - networks.prior_log_prob(z))
  analytic = jnp.sum(networks.kl_to_prior(q))
  assert abs(float(monte_carlo) - float(analytic)) < 0.02
  assert float(analytic) > 0


def test_kl_weight_is_zero_through_the_hold_then_rises_to_beta():
  settings = objectives.ObjectiveSettings(
    name="vmd", schedule=get_schedule("linear", 0.0), beta=0.5, kl_warmup_steps=200, kl_hold_steps=100
  )
  steps = jnp.asarray([0, 99, 100, 200, 300, 5000])
  weights = jax.jit(lambda s: objectives.kl_weight(settings, s))(steps)
  chex.assert_trees_all_close(weights, jnp.asarray([0.0, 0.0, 0.0, 0.25, 0.5, 0.5]))
  jump = settings._replace(kl_warmup_steps=0)  # no warm-up: beta from the end of the hold on
  chex.assert_trees_all_close(objectives.kl_weight(jump, steps), jnp.asarray([0.0, 0.0, 0.5, 0.5, 0.5, 0.5]))
  config = base_config()
  config.objective.kl_hold_steps = -1
  with pytest.raises(ConfigError, match="kl_hold_steps must be >= 0"):
    objectives.check_config(config.objective)


def test_uniform_predictor_gives_log2_vocab_bits_per_token():
  model = _model(latent_dim=0, time_conditioning=True)
  params = _params(model)
  params = jax.tree_util.tree_map_with_path(
    lambda path, x: jnp.zeros_like(x) if "logits" in jax.tree_util.keystr(path) else x, params
  )
  schedule = get_schedule("linear")
  draws = np.asarray(objectives.nelbo_draws(model, params, X0, jax.random.PRNGKey(0), schedule, 4000))
  bits = draws / (L * math.log(2))
  assert abs(bits.mean() - math.log2(V)) < 4 * bits.std() / math.sqrt(bits.size)
  path = objectives.trajectory_log_weights(model, params, X0, jax.random.PRNGKey(1), schedule, 2)
  np.testing.assert_allclose(-np.asarray(path) / (L * math.log(2)), math.log2(V), rtol=1e-5)


def test_test_set_loss_runs_without_dropout():
  """evaluation.objective_loss of a model with dropout equals that of the same model and parameters
  without it, while a training-mode loss differs: dropout is off on test data."""
  from vmd_jax import evaluation, tasks

  config = tasks.base_config("sequences")
  config.objective.name, config.eval.batch_size = "mdm", 8
  with_dropout = networks.VMDModel(networks.Denoiser(V, L, width=16, depth=1, num_heads=2, dropout=0.5), None)
  without = networks.VMDModel(networks.Denoiser(V, L, width=16, depth=1, num_heads=2), None)
  params = _params(without)
  tokens, key = np.tile(np.asarray(X0), (3, 1)), jax.random.PRNGKey(0)
  test_loss = [evaluation.objective_loss(m, params, config, tokens, key, 0) for m in (with_dropout, without)]
  assert test_loss[0] == pytest.approx(test_loss[1], rel=1e-6)
  settings = objectives.settings_from_config(config.objective)
  batch = {"tokens": jnp.asarray(tokens)}
  train_loss = [
    float(jax.jit(lambda p, m=m: objectives.loss_fn(m, p, batch, key, settings, 0)[0])(params))
    for m in (with_dropout, without)
  ]
  assert abs(train_loss[0] - train_loss[1]) > 1e-3


def test_stepwise_steps_follow_the_samplers_schedule_and_never_mask_a_clue():
  """The steps the stepwise objective trains: T drawn uniformly from objective.nfes (or in proportion to
  T, step_draw 'step'), j uniform, M_s
  inside M_t, the clues never masked, |M_t| and |M_s| the sampler's counts for step j of T among the
  free positions, and every free position equally likely to be revealed."""
  model = networks.VMDModel(networks.Denoiser(V, 6, width=16, depth=1, num_heads=2), None)
  settings = objectives.ObjectiveSettings(name="stepwise", schedule=get_schedule("cosine"), nfes=(1, 2, 5))
  given = np.zeros((400, 6), bool)
  given[::2, [1, 4]] = True  # every other row has two clues: four free positions
  x0 = jnp.zeros((400, 6), jnp.int32)
  draw = jax.jit(jax.vmap(lambda k: objectives._random_steps(model, x0, k, settings, jnp.asarray(given))))
  s = draw(jax.random.split(jax.random.PRNGKey(0), 50))
  masked_t, masked_s = np.asarray(s.masked_t), np.asarray(s.masked_s)
  steps, t = np.asarray(s.steps)[..., 0], np.asarray(s.time)[..., 0]  # one block: [draws, batch]
  assert not np.any(masked_t & given) and not np.any(masked_s & ~masked_t)
  np.testing.assert_allclose(np.mean(steps[..., None] == np.array([1, 2, 5]), axis=(0, 1)), 1 / 3, atol=0.01)
  j = np.rint((1.0 - t) * steps)
  assert np.all(j >= 0) and np.all(j < steps)
  free = 6 - given.sum(-1)
  for name, mask, jj in (("M_t", masked_t, j), ("M_s", masked_s, j + 1)):
    expected = np.asarray(masked_count(settings.schedule, jnp.asarray(free), jnp.asarray(1.0 - jj / steps)))
    np.testing.assert_array_equal(mask.sum(-1), expected, err_msg=name)
  # parallel: the step reveals several tokens; num_parallel: how many of the T steps do
  np.testing.assert_array_equal(np.asarray(s.parallel)[..., 0], (masked_t & ~masked_s).sum(-1) > 1)
  for nfe in (1, 2, 5):
    for rows in (given.any(-1), ~given.any(-1)):
      counts = np.asarray(
        masked_count(settings.schedule, 6 - given[rows][0].sum(), 1.0 - np.arange(nfe + 1) / nfe)
      )
      at = (steps == nfe) & rows
      np.testing.assert_array_equal(np.asarray(s.num_parallel)[..., 0][at], np.sum(-np.diff(counts) > 1))
  revealed = (masked_t & ~masked_s)[:, 1::2]  # rows without clues: each position revealed alike
  share = revealed.mean(axis=(0, 1))
  np.testing.assert_allclose(share, share.mean(), atol=0.02)
  np.testing.assert_array_equal(np.asarray(s.weight), np.asarray(s.steps))  # the loss weighs a step by T
  # step_draw 'step': T in proportion to its steps (1 : 2 : 5), every step weighed by the mean T
  settings = settings._replace(step_draw="step")
  s = jax.jit(jax.vmap(lambda k: objectives._random_steps(model, x0, k, settings, jnp.asarray(given))))(
    jax.random.split(jax.random.PRNGKey(1), 50)
  )
  steps = np.asarray(s.steps)[..., 0]
  np.testing.assert_allclose(
    np.mean(steps[..., None] == np.array([1, 2, 5]), axis=(0, 1)), [1 / 8, 2 / 8, 5 / 8], atol=0.01
  )
  np.testing.assert_allclose(np.asarray(s.weight), 8 / 3)
