"""Tests for vmd_jax.samplers with toy denoisers (fixed logits, or logits that record what they see)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmd_jax.errors import ConfigError
from vmd_jax.samplers import ORDERS, TOKEN_RULES, Z_POLICIES, SampleResult, SamplerOptions, make_sampler
from vmd_jax.schedules import get_schedule, remaining_masked

VOCAB = 5
MASK = VOCAB
LENGTH = 8


def fixed_logits_denoise(params, x_t, t, z):
  """params are logits [length, vocab] (or [batch, length, vocab]), whatever x_t, t and z are."""
  del t, z
  return jnp.broadcast_to(params, x_t.shape + (params.shape[-1],))


def recording_denoise(calls):
  """Zero logits; appends (t, number of masks per row, z or None) to calls at every denoiser call."""

  def record(t, num_masked, *z):
    calls.append((np.asarray(t), np.asarray(num_masked), np.asarray(z[0]) if z else None))

  def denoise(params, x_t, t, z):
    del params
    args = (t, jnp.sum(x_t == MASK, axis=-1)) + (() if z is None else (z,))
    jax.debug.callback(record, *args, ordered=True)
    return jnp.zeros(x_t.shape + (VOCAB,))

  return denoise


def rows_with_clues():
  """Four rows with 0, 1, 3 and 6 given tokens at scattered positions; masks elsewhere."""
  x = np.full((4, LENGTH), MASK, np.int32)
  x[1, 4] = 2
  x[2, [0, 3, 7]] = [1, 4, 0]
  x[3, [0, 1, 2, 4, 5, 6]] = [3, 3, 1, 0, 2, 4]
  return jnp.asarray(x)


def random_logits(seed, shape=(LENGTH, VOCAB), scale=3.0):
  """Fixed Gaussian logits; scale 3 makes the confidences of positions clearly distinct."""
  return scale * jax.random.normal(jax.random.PRNGKey(seed), shape)


def sampler(nfe, schedule="linear", latent_dim=0, **options):
  """A sampler over fixed_logits_denoise, whose params are the logits; options of SamplerOptions."""
  return make_sampler(
    fixed_logits_denoise,
    nfe=nfe,
    mask_id=MASK,
    schedule=get_schedule(schedule),
    latent_dim=latent_dim,
    options=SamplerOptions(**options),
  )


def scheduled_remaining(x_init, nfe, schedule):
  """[nfe + 1, batch]: how many positions of each row are still masked after each step.

  Computed under jit like the sampler: where share * m is within rounding of a half, eager and jitted
  float32 can round remaining_masked to different counts.
  """
  remaining_fn = jax.jit(lambda m: remaining_masked(get_schedule(schedule), m, nfe))
  return np.asarray(remaining_fn(jnp.sum(x_init == MASK, axis=-1)))


def scheduled_counts(x_init, nfe, schedule):
  """[batch, nfe]: how many positions each step must reveal in each row."""
  remaining = scheduled_remaining(x_init, nfe, schedule)
  return (remaining[:-1] - remaining[1:]).T


def reveal_histogram(reveal_step, nfe):
  """[batch, nfe]: how many positions of each row were revealed at each step."""
  return np.stack([np.bincount(row[row >= 0], minlength=nfe) for row in np.asarray(reveal_step)])


@pytest.mark.parametrize("nfe", [1, 2, LENGTH])
@pytest.mark.parametrize(  # every order and every token rule (the two choices are independent code paths)
  "order, token_rule",
  [(order, "sample") for order in sorted(ORDERS)]
  + [("margin", rule) for rule in sorted(TOKEN_RULES) if rule != "sample"],
)
def test_keeps_given_tokens_and_reveals_all(order, token_rule, nfe):
  x_init = rows_with_clues()
  out = sampler(nfe, order=order, token_rule=token_rule)(random_logits(0), jax.random.PRNGKey(1), x_init)
  assert isinstance(out, SampleResult)
  chex.assert_shape([out.tokens, out.reveal_step], x_init.shape)
  chex.assert_type([out.tokens, out.reveal_step], jnp.int32)
  given = np.asarray(x_init != MASK)
  tokens, reveal_step = np.asarray(out.tokens), np.asarray(out.reveal_step)
  np.testing.assert_array_equal(tokens[given], np.asarray(x_init)[given])
  assert np.all((tokens >= 0) & (tokens < VOCAB))
  np.testing.assert_array_equal(reveal_step[given], -1)
  assert np.all((reveal_step[~given] >= 0) & (reveal_step[~given] < nfe))


@pytest.mark.parametrize("nfe", [3, 5, LENGTH])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_each_step_reveals_the_scheduled_count(schedule, nfe):
  x_init = rows_with_clues()
  out = sampler(nfe, schedule)(random_logits(0), jax.random.PRNGKey(2), x_init)
  expected = scheduled_counts(x_init, nfe, schedule)
  np.testing.assert_array_equal(reveal_histogram(out.reveal_step, nfe), expected)
  # The cosine schedule must not reveal evenly, or this test would not tell it from the linear one.
  if schedule == "cosine" and nfe == LENGTH:
    assert not np.array_equal(expected[0], scheduled_counts(x_init, nfe, "linear")[0])


def test_linear_with_nfe_equal_to_length_reveals_one_token_per_step():
  x_init = jnp.full((3, LENGTH), MASK, jnp.int32)
  out = sampler(LENGTH)(random_logits(0), jax.random.PRNGKey(3), x_init)
  np.testing.assert_array_equal(
    np.sort(np.asarray(out.reveal_step), axis=-1), np.tile(np.arange(LENGTH), (3, 1))
  )


def confidence(logits, order):
  """Numpy reference of the order scores for fixed logits [length, vocab]."""
  probs = np.sort(np.asarray(jax.nn.softmax(logits, axis=-1)), axis=-1)[:, ::-1]
  return probs[:, 0] if order == "top_prob" else probs[:, 0] - probs[:, 1]


@pytest.mark.parametrize("order", ["top_prob", "margin"])
def test_confidence_orders_reveal_most_confident_first(order):
  logits = random_logits(4)
  # The two orders must disagree on these logits, so each test checks its own score.
  assert not np.array_equal(
    np.argsort(-confidence(logits, "top_prob")), np.argsort(-confidence(logits, "margin"))
  )
  x_init = jnp.full((2, LENGTH), MASK, jnp.int32)
  out = sampler(LENGTH, order=order, token_rule="argmax")(logits, jax.random.PRNGKey(5), x_init)
  expected = np.argsort(np.argsort(-confidence(logits, order)))  # the step at which each position is due
  np.testing.assert_array_equal(np.asarray(out.reveal_step), np.tile(expected, (2, 1)))


@pytest.mark.parametrize("order", ["top_prob", "margin"])
def test_large_gumbel_scale_changes_the_order(order):
  logits = random_logits(4)
  x_init = jnp.full((4, LENGTH), MASK, jnp.int32)
  out = sampler(LENGTH, order=order, gumbel_scale=100.0)(logits, jax.random.PRNGKey(6), x_init)
  expected = np.argsort(np.argsort(-confidence(logits, order)))
  reveal_step = np.asarray(out.reveal_step)
  assert all(not np.array_equal(row, expected) for row in reveal_step)
  assert not np.array_equal(reveal_step[0], reveal_step[1])


def test_argmax_rule_returns_the_argmax():
  logits = random_logits(7, (3, LENGTH, VOCAB))
  x_init = jnp.full((3, LENGTH), MASK, jnp.int32)
  for order in ORDERS:
    out = sampler(2, order=order, token_rule="argmax")(logits, jax.random.PRNGKey(8), x_init)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.argmax(np.asarray(logits), axis=-1))


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sample_rule_frequencies_match_softmax(temperature):
  logits = jnp.log(jnp.array([[0.1, 0.2, 0.3, 0.4, 0.0]]) + 1e-3)  # [1, vocab]
  batch = 20000
  x_init = jnp.full((batch, 1), MASK, jnp.int32)
  out = sampler(1, token_rule="sample", temperature=temperature)(logits, jax.random.PRNGKey(9), x_init)
  freq = np.bincount(np.asarray(out.tokens)[:, 0], minlength=VOCAB) / batch
  probs = np.asarray(jax.nn.softmax(logits[0] / temperature))
  # 0.015 is more than 4 standard errors sqrt(p (1 - p) / batch) <= 0.0036.
  np.testing.assert_allclose(freq, probs, atol=0.015)


@pytest.mark.parametrize("nfe", [1, 3, LENGTH])
@pytest.mark.parametrize("time_input", ["start", "end"])
def test_makes_exactly_nfe_denoiser_calls_on_the_current_x_t(nfe, time_input):
  """nfe calls, each on x_t with the scheduled masks, at the step's start t_j = 1 - j/nfe or, with
  time_input 'end', at its end t_{j+1}."""
  calls = []
  x_init = rows_with_clues()
  denoise = recording_denoise(calls)
  sample = make_sampler(
    denoise, nfe=nfe, mask_id=MASK, schedule=get_schedule("cosine"), time_input=time_input
  )
  out = sample(None, jax.random.PRNGKey(10), x_init)
  jax.effects_barrier()
  assert len(calls) == nfe
  remaining = scheduled_remaining(x_init, nfe, "cosine")
  for j, (t, num_masked, z) in enumerate(calls):
    expected = 1.0 - (j + (time_input == "end")) / nfe
    np.testing.assert_allclose(t, np.full(x_init.shape[0], expected), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(num_masked, remaining[j])
    assert z is None
  assert set(np.unique(np.asarray(out.reveal_step))) <= set(range(-1, nfe))


def z_seen(z_policy, nfe=4, batch=3, latent_dim=2):
  """The z given to the denoiser at each of nfe steps: [nfe, batch, latent_dim]."""
  calls = []
  sample = make_sampler(
    recording_denoise(calls),
    nfe=nfe,
    mask_id=MASK,
    schedule=get_schedule("linear"),
    latent_dim=latent_dim,
    options=SamplerOptions(z_policy=z_policy),
  )
  sample(None, jax.random.PRNGKey(11), jnp.full((batch, LENGTH), MASK, jnp.int32))
  jax.effects_barrier()
  assert len(calls) == nfe
  return np.stack([z for _, _, z in calls])


def test_fixed_z_policy_gives_one_z_per_sequence():
  z = z_seen("fixed")
  chex.assert_shape(z, (4, 3, 2))
  for j in range(1, len(z)):
    np.testing.assert_array_equal(z[j], z[0])
  assert not np.allclose(z[0, 0], z[0, 1])  # rows get independent latents


def test_per_step_z_policy_draws_a_new_z_every_step():
  z = z_seen("per_step")
  chex.assert_shape(z, (4, 3, 2))
  for j in range(1, len(z)):
    assert not np.any(np.isclose(z[j], z[j - 1]))


# linear schedule, 8 tokens, 5 steps: 8 -> 6 -> 5 -> 3 -> 2 -> 0 masks, so steps 0, 2 and 4 reveal two
PARALLEL_STEPS = (0, 2, 4)


def test_scheduled_z_policy_keeps_one_z_for_parallel_steps_and_draws_anew_for_the_others():
  z = z_seen("scheduled", nfe=5)
  parallel = [z[j] for j in PARALLEL_STEPS]
  for other in parallel[1:]:
    np.testing.assert_array_equal(other, parallel[0])
  singles = [z[1], z[3]]
  for single in singles:
    assert not np.any(np.isclose(single, parallel[0]))
  assert not np.any(np.isclose(singles[0], singles[1]))
  np.testing.assert_array_equal(parallel[0], z_seen("fixed", nfe=5)[0])  # the fixed policy's own z


def test_parallel_only_z_policy_keeps_the_fixed_z_for_parallel_steps_and_none_for_the_others():
  z = z_seen("parallel_only", nfe=5)
  fixed = z_seen("fixed", nfe=5)[0]
  for j in PARALLEL_STEPS:
    np.testing.assert_array_equal(z[j], fixed)
  assert not np.any(np.isclose(fixed, 0.0))
  np.testing.assert_array_equal(z[[1, 3]], 0.0)  # z = 0: no latent draw


@pytest.mark.parametrize("token_rule", ["argmax_parallel", "argmax_confident"])
def test_argmax_rules_take_the_mode_at_parallel_steps_where_they_should_and_sample_elsewhere(token_rule):
  """argmax_parallel: the mode at every position of a parallel step; argmax_confident: only where the
  top probability reaches the confidence. Everywhere else: a draw from the softmax."""
  rows, logits = 4000, random_logits(3, scale=1.0)
  probs = np.asarray(jax.nn.softmax(logits))  # [length, vocab]
  threshold = 0.5  # seed 3: four positions at or above it, four below
  confident = probs.max(-1) >= threshold if token_rule == "argmax_confident" else np.ones(LENGTH, bool)
  assert 0 < confident.sum() < LENGTH or token_rule == "argmax_parallel"  # both kinds of position
  sample = sampler(5, token_rule=token_rule, confidence=threshold)
  out = sample(logits, jax.random.PRNGKey(2), jnp.full((rows, LENGTH), MASK, jnp.int32))
  tokens, steps = np.asarray(out.tokens), np.asarray(out.reveal_step)
  mode = np.isin(steps, PARALLEL_STEPS) & confident[None]
  modes = np.broadcast_to(np.argmax(np.asarray(logits), -1), tokens.shape)
  np.testing.assert_array_equal(tokens[mode], modes[mode])
  for position in range(LENGTH):  # the other rows: a draw from the softmax (order is independent of it)
    values = tokens[~mode[:, position], position]
    freq = np.bincount(values, minlength=VOCAB) / len(values)
    np.testing.assert_allclose(freq, probs[position], atol=5 * np.sqrt(0.25 / len(values)))


def test_same_key_same_result_and_other_key_other_result():
  sample = sampler(3, order="random", token_rule="sample", gumbel_scale=0.5)
  x_init = rows_with_clues()
  logits = random_logits(12, scale=0.5)
  first, again = (
    sample(logits, jax.random.PRNGKey(13), x_init),
    sample(logits, jax.random.PRNGKey(13), x_init),
  )
  other = sample(logits, jax.random.PRNGKey(14), x_init)
  chex.assert_trees_all_equal(first, again)
  assert not np.array_equal(np.asarray(first.tokens), np.asarray(other.tokens))


@pytest.mark.parametrize(
  "kwargs, option",
  [
    ({"order": "confidence"}, "order"),
    ({"token_rule": "greedy"}, "token_rule"),
    ({"z_policy": "always"}, "z_policy"),
    ({"nfe": 0}, "nfe"),
    ({"temperature": 0.0}, "temperature"),
    ({"confidence": 1.5}, "confidence"),
    ({"gumbel_scale": -1.0}, "gumbel_scale"),
    ({"latent_dim": -1}, "latent_dim"),
  ],
)
def test_bad_options_raise_config_error(kwargs, option):
  kwargs = {"nfe": 2, **kwargs}
  with pytest.raises(ConfigError, match=option) as info:
    sampler(**kwargs)
  assert "\n" not in str(info.value)


def test_bad_option_message_lists_the_choices():
  with pytest.raises(ConfigError, match="random, top_prob, margin"):
    sampler(2, order="confidence")
  with pytest.raises(ConfigError, match="fixed, per_step"):
    sampler(2, z_policy="always")
  assert set(Z_POLICIES) == {"fixed", "per_step", "scheduled", "parallel_only"}


def test_nfe_above_length_raises_config_error_at_call():
  sample = sampler(LENGTH + 1)
  with pytest.raises(ConfigError, match="nfe"):
    sample(random_logits(0), jax.random.PRNGKey(0), jnp.full((2, LENGTH), MASK, jnp.int32))


def test_remasking_masks_revealed_tokens_again_and_keeps_the_schedule_and_the_clues():
  seen = []

  def denoise(params, x_t, t, z):
    del t, z
    jax.debug.callback(lambda x: seen.append(np.asarray(x)), x_t, ordered=True)
    return jnp.broadcast_to(params, x_t.shape + (VOCAB,))

  x_init = rows_with_clues()
  nfe = LENGTH
  given = np.asarray(x_init != MASK)
  for eta, expect_remasking in ((0.0, False), (0.5, True)):
    seen.clear()
    options = SamplerOptions(remask_eta=eta)
    sample = make_sampler(denoise, nfe=nfe, mask_id=MASK, schedule=get_schedule("linear"), options=options)
    out = sample(random_logits(0), jax.random.PRNGKey(4), x_init)
    jax.effects_barrier()
    states = np.stack(seen + [np.asarray(out.tokens)])  # x_t before each step, then the result
    np.testing.assert_array_equal((states == MASK).sum(-1), scheduled_remaining(x_init, nfe, "linear"))
    np.testing.assert_array_equal(np.asarray(out.tokens)[given], np.asarray(x_init)[given])
    remasked = (states[:-1] != MASK) & (states[1:] == MASK)  # revealed before a step, masked after it
    assert remasked.any() == expect_remasking
    assert not (remasked & given).any()


def test_random_order_reveals_every_position_first_equally_often():
  """With the 'random' order and one token a step, the first revealed position is uniform."""
  rows = 4000
  x_init = jnp.full((rows, LENGTH), MASK, jnp.int32)
  out = sampler(LENGTH, order="random")(random_logits(3), jax.random.PRNGKey(21), x_init)
  first = np.argmin(np.asarray(out.reveal_step), axis=1)  # [rows]: the position revealed at step 0
  freq = np.bincount(first, minlength=LENGTH) / rows
  se = math.sqrt((1 / LENGTH) * (1 - 1 / LENGTH) / rows)
  np.testing.assert_allclose(freq, 1 / LENGTH, atol=4 * se)
