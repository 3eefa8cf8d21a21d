"""Block diffusion: the BD3-LM mask, what block b may see, cached sampling, and the bounds per block."""

import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import perturbed_params, run_in_process

from vmd_jax import model as model_lib
from vmd_jax import networks, objectives, samplers
from vmd_jax.errors import ConfigError
from vmd_jax.schedules import get_schedule

V, L, K = 5, 12, 4  # vocabulary, length, block size: 3 blocks
LATENT = 4


def _model(block_size=K, latent_dim=LATENT, length=L, vocab=V, time_conditioning=True, sees_prefix=False):
  denoiser = networks.Denoiser(
    vocab,
    length,
    width=16,
    depth=2,
    num_heads=2,
    latent_dim=latent_dim,
    block_size=block_size,
    time_conditioning=time_conditioning,
  )
  encoder = None
  if latent_dim:
    encoder = networks.PosteriorEncoder(
      vocab,
      length,
      latent_dim,
      width=16,
      depth=1,
      num_heads=2,
      block_size=block_size,
      sees_prefix=sees_prefix,
    )
  return networks.VMDModel(denoiser, encoder)


def _params(model, length=L, seed=0, noise=0.3):
  return perturbed_params(model, length, seed, noise)


def _denoise_fn(model):
  """The whole-sequence denoiser, jitted: (params, x_t, t, z, context) -> logits."""
  return jax.jit(lambda params, x_t, t, z, x0: model.apply(params, x_t, t, z, False, x0, method="denoise"))


def _x0(batch=3, seed=1, length=L, vocab=V):
  return jax.random.randint(jax.random.PRNGKey(seed), (batch, length), 0, vocab)


@pytest.mark.parametrize("length,block_size", [(12, 4), (8, 8), (6, 1), (6, 0)])
def test_block_attention_mask_equals_a_brute_force_reference(length, block_size):
  size = block_size or length
  reference = np.zeros((2 * length, 2 * length), bool)
  for q in range(2 * length):
    for k in range(2 * length):
      q_clean, k_clean = q >= length, k >= length
      q_block, k_block = (q % length) // size, (k % length) // size
      if not q_clean and not k_clean:  # noisy -> noisy: its own block only
        reference[q, k] = q_block == k_block
      elif not q_clean and k_clean:  # noisy -> clean: strictly earlier blocks
        reference[q, k] = k_block < q_block
      elif q_clean and k_clean:  # clean -> clean: block-causal
        reference[q, k] = k_block <= q_block
  np.testing.assert_array_equal(networks.block_attention_mask(length, block_size), reference)


def test_noisy_block_logits_ignore_later_clean_blocks_and_other_noisy_blocks():
  model = _model()
  params = _params(model)
  x0 = _x0()
  x_t = jnp.where(jax.random.bernoulli(jax.random.PRNGKey(2), 0.5, x0.shape), V, x0)
  t = jax.random.uniform(jax.random.PRNGKey(3), (3, L // K))
  z = jax.random.normal(jax.random.PRNGKey(4), (3, L // K, LATENT))
  denoise = _denoise_fn(model)
  base = denoise(params, x_t, t, z, x0)
  for b in range(L // K):
    own = slice(b * K, (b + 1) * K)
    later = np.arange(L) >= b * K
    other_noisy = (np.arange(L) // K) != b
    x0_changed = jnp.where(later, (x0 + 1) % V, x0)
    x_t_changed = jnp.where(other_noisy, (x_t + 2) % (V + 1), x_t)
    t_changed = t.at[:, np.arange(L // K) != b].set(0.9)
    z_changed = z.at[:, np.arange(L // K) != b].add(1.0)
    out = denoise(params, x_t_changed, t_changed, z_changed, x0_changed)
    np.testing.assert_allclose(out[:, own], base[:, own], atol=1e-5)
    if b + 1 < L // K:  # an earlier clean block does change block b + 1
      earlier = jnp.where(np.arange(L) // K == b, (x0 + 1) % V, x0)
      moved = denoise(params, x_t, t, z, earlier)
      assert float(jnp.max(jnp.abs(moved[:, (b + 1) * K :] - base[:, (b + 1) * K :]))) > 1e-4


def test_cached_and_uncached_logits_and_samples_agree():
  model = _model()
  params = _params(model)
  fns = model_lib.block_fns(model)
  x0 = _x0()
  t = jnp.array([0.2, 0.5, 0.9])
  z = jax.random.normal(jax.random.PRNGKey(5), (3, LATENT))
  cache = fns.empty_cache(3, L)
  for b in range(L // K):
    offset = b * K
    x_block = jnp.where(
      jax.random.bernoulli(jax.random.PRNGKey(b), 0.5, (3, K)), V, x0[:, offset : offset + K]
    )
    cached = fns.denoise_cached(params, x_block, t, z, cache, offset)
    x_t = jnp.full((3, L), V).at[:, offset : offset + K].set(x_block)
    t_all = jnp.broadcast_to(t[:, None], (3, L // K))
    z_all = jnp.broadcast_to(z[:, None], (3, L // K, LATENT))
    full = fns.denoise(params, x_t, t_all, z_all, x0.at[:, offset:].set(V))[:, offset : offset + K]
    np.testing.assert_allclose(cached, full, atol=1e-5)
    new = fns.cache_block(params, x0[:, offset : offset + K], cache, offset)
    cache = jax.tree.map(lambda c, n, at=offset: c.at[:, at : at + K].set(n), cache, new)
  options = dict(
    block_size=K,
    nfe_per_block=2,
    mask_id=V,
    schedule=get_schedule("cosine"),
    latent_dim=LATENT,
  )
  x_init = jnp.full((4, L), V).at[:, :3].set(jnp.array([1, 2, 3]))  # a 3-token prompt
  key = jax.random.PRNGKey(6)
  argmax = samplers.SamplerOptions(order="margin", token_rule="argmax")
  with_cache = samplers.make_block_sampler(fns, options=argmax, **options)(params, key, x_init)
  uncached = argmax.replace(kv_cache=False)
  without = samplers.make_block_sampler(fns, options=uncached, **options)(params, key, x_init)
  np.testing.assert_array_equal(with_cache.tokens, without.tokens)
  np.testing.assert_array_equal(with_cache.tokens[:, :3], np.broadcast_to([1, 2, 3], (4, 3)))
  assert np.all(with_cache.tokens < V)
  steps = np.asarray(with_cache.reveal_step)
  assert np.all(steps[:, :3] == -1)
  for b in range(L // K):  # block b's tokens come from its own two steps
    block = steps[:, b * K : (b + 1) * K]
    assert np.all((block == -1) | ((block >= 2 * b) & (block < 2 * b + 2)))


@pytest.mark.parametrize("method", ["mdm", "vmd"])
def test_block_size_equal_to_the_length_is_the_non_block_objective(method):
  latent = LATENT if method == "vmd" else 0
  flat, whole = _model(block_size=0, latent_dim=latent), _model(block_size=L, latent_dim=latent)
  params = _params(flat)
  settings = objectives.ObjectiveSettings(name=method, schedule=get_schedule("linear"), free_bits=0.1)
  batch = {"tokens": _x0(batch=8)}
  key = jax.random.PRNGKey(7)
  loss_flat, terms_flat = jax.jit(lambda p: objectives.loss_fn(flat, p, batch, key, settings, 100))(params)
  loss_whole, terms_whole = jax.jit(lambda p: objectives.loss_fn(whole, p, batch, key, settings, 100))(params)
  np.testing.assert_allclose(loss_whole, loss_flat, rtol=1e-6)
  for name in terms_flat:
    np.testing.assert_allclose(terms_whole[name], terms_flat[name], rtol=1e-6)
  schedule = get_schedule("linear")
  bound_flat = objectives.nelbo_draws(flat, params, batch["tokens"], key, schedule, 4)
  bound_whole = objectives.nelbo_draws(whole, params, batch["tokens"], key, schedule, 4)
  np.testing.assert_allclose(bound_whole, bound_flat, rtol=1e-6)


def _block_token_nll(denoise, params, x0, masked):
  """-log p(x0_i | x0 with `masked` hidden) at every position [batch, length] (a time-independent MDM)."""
  logits = denoise(params, jnp.where(masked, V, x0), jnp.ones(x0.shape), None, x0)
  log_p = np.asarray(jax.nn.log_softmax(logits, axis=-1))
  return -np.take_along_axis(log_p, np.asarray(x0)[..., None], axis=-1)[..., 0]


def _exact_block_bounds(model, params, x0):
  """Per sequence, summed over blocks b given the clean blocks before b: the any-order identity
  sum_{nonempty S in b} (|S|-1)!(k-|S|)!/k! sum_{i in S} -log p(x0_i | block b with S masked), and the
  NLL of the one-token-a-step sampler -log (1/k! sum_orders p(x0_b | order))."""
  batch, length = x0.shape
  size = model.block_size
  denoise = jax.jit(
    lambda params, x_t, t, z, x0: model.apply(params, x_t, t[:, ::size], z, False, x0, method="denoise"),
  )
  nelbo, nll = np.zeros(batch), np.zeros(batch)
  for b in range(length // size):
    cells = range(b * size, (b + 1) * size)
    for count in range(1, size + 1):
      coef = math.factorial(count - 1) * math.factorial(size - count) / math.factorial(size)
      for subset in itertools.combinations(cells, count):
        masked = np.zeros((batch, length), bool)
        masked[:, list(subset)] = True
        nelbo += coef * _block_token_nll(denoise, params, x0, masked)[:, list(subset)].sum(-1)
    log_ps = []
    for order in itertools.permutations(cells):
      masked, log_p = np.zeros((batch, length), bool), np.zeros(batch)
      masked[:, list(cells)] = True
      for i in order:
        log_p -= _block_token_nll(denoise, params, x0, masked)[:, i]
        masked[:, i] = False
      log_ps.append(log_p)
    nll -= np.logaddexp.reduce(np.stack(log_ps), axis=0) - math.log(len(log_ps))
  return nelbo, nll


def test_block_bounds_match_exact_enumeration():
  length, size = 6, 3
  model = _model(block_size=size, latent_dim=0, length=length, time_conditioning=False)
  params = _params(model, length=length, noise=0.5)
  x0 = _x0(batch=4, length=length)
  exact_nelbo, exact_nll = _exact_block_bounds(model, params, x0)
  assert np.all(exact_nelbo - exact_nll > 0.2), exact_nelbo - exact_nll
  schedule = get_schedule("linear", 0.0)
  draws = np.asarray(objectives.nelbo_draws(model, params, x0, jax.random.PRNGKey(8), schedule, 4000))
  mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
  assert np.all(np.abs(mean - exact_nelbo) < 4 * se + 1e-3), (mean, exact_nelbo, se)
  paths = jax.jit(
    jax.vmap(lambda k: objectives.trajectory_log_weights(model, params, x0, k, schedule, size, True))
  )(jax.random.split(jax.random.PRNGKey(9), 2000))  # [draws, batch, blocks]
  per_sequence = -np.asarray(paths).sum(-1)
  path_se = per_sequence.std(0) / math.sqrt(len(per_sequence))
  assert np.all(np.abs(per_sequence.mean(0) - exact_nelbo) < 4 * path_se + 1e-3)
  # With many importance samples per block, the per-block IWAE bound reaches the block model's NLL
  # (each block has only 3! orders).
  np.testing.assert_allclose(np.asarray(objectives.iwae_bound(paths).sum(-1)), exact_nll, atol=0.05)


def test_blocks_of_one_make_an_autoregressive_model_trained_on_its_exact_nll():
  """configs/text8.py:ar: blocks of one token, no latent, the stepwise objective at NFE = length. Its
  loss has no noise left and is -log p(x0) of a normalised left-to-right model, the bound at one step a
  block equals it, and the sampler at one step a block draws from that distribution."""
  length, vocab = 4, 3
  denoiser = networks.Denoiser(vocab, length, width=16, depth=2, num_heads=2, block_size=1, time_input="end")
  model = networks.VMDModel(denoiser, None)
  params = _params(model, length=length, noise=0.5)
  every = jnp.asarray(list(itertools.product(range(vocab), repeat=length)))  # [81, length]
  schedule = get_schedule("linear")
  settings = objectives.ObjectiveSettings(name="stepwise", schedule=schedule, nfes=(length,))

  @jax.jit
  def loss(key):
    return objectives.stepwise_loss(model, params, {"tokens": every}, key, settings, 0, train=False)[0]

  nll = np.asarray(loss(jax.random.PRNGKey(0)), np.float64)  # [81] nats
  np.testing.assert_allclose(np.asarray(loss(jax.random.PRNGKey(1))), nll, rtol=1e-6)  # no noise
  assert abs(np.exp(-nll).sum() - 1.0) < 1e-5  # a normalised distribution over the 81 sequences
  log_w = objectives.trajectory_log_weights(model, params, every, jax.random.PRNGKey(2), schedule, 1, True)
  np.testing.assert_allclose(-np.asarray(log_w).sum(-1), nll, rtol=1e-5)
  # left to right: position b's probability reads only the tokens before it
  masked = jnp.arange(length) >= 2  # p(x_2 | x_0, x_1) with x_2 and x_3 hidden
  denoise = _denoise_fn(model)
  t = jnp.zeros((len(every), length))
  base = denoise(params, jnp.where(masked, vocab, every), t, None, every)[:, 2]
  later = every.at[:, 3].set((every[:, 3] + 1) % vocab)
  np.testing.assert_allclose(denoise(params, jnp.where(masked, vocab, later), t, None, later)[:, 2], base)
  sample = samplers.make_block_sampler(
    model_lib.block_fns(model),
    block_size=1,
    nfe_per_block=1,
    mask_id=vocab,
    schedule=schedule,
    options=samplers.SamplerOptions(token_rule="sample"),
    time_input="end",
  )
  draws = np.asarray(sample(params, jax.random.PRNGKey(3), jnp.full((40_000, length), vocab)).tokens)
  counts = np.bincount(draws @ vocab ** np.arange(length - 1, -1, -1), minlength=len(every))
  assert 0.5 * np.abs(counts / len(draws) - np.exp(-nll)).sum() < 0.03  # total variation


def test_block_posterior_per_block_and_prefix_option():
  x0 = _x0()
  masked = jnp.zeros((3, L), bool)
  own = _model(sees_prefix=False)
  params = _params(own)
  q = jax.jit(own.apply, static_argnames="method")(params, x0, masked, method="posterior")
  assert q.mean.shape == (3, L // K, LATENT)
  changed = x0.at[:, :K].set((x0[:, :K] + 1) % V)  # change block 0 only
  q_changed = jax.jit(own.apply, static_argnames="method")(params, changed, masked, method="posterior")
  assert not np.allclose(q_changed.mean[:, 0], q.mean[:, 0])
  np.testing.assert_allclose(q_changed.mean[:, 1:], q.mean[:, 1:], atol=1e-5)  # blocks see themselves only
  prefix = _model(sees_prefix=True)
  p_changed = jax.jit(prefix.apply, static_argnames="method")(params, changed, masked, method="posterior")
  p_base = jax.jit(prefix.apply, static_argnames="method")(params, x0, masked, method="posterior")
  assert not np.allclose(p_changed.mean[:, 1:], p_base.mean[:, 1:])  # later blocks read block 0


def test_block_sampler_checks_its_options():
  fns = model_lib.block_fns(_model())
  schedule = get_schedule("linear")
  with pytest.raises(ConfigError, match="block_z"):
    samplers.SamplerOptions(block_z="x")
  with pytest.raises(ConfigError, match="nfe per block"):
    samplers.make_block_sampler(fns, block_size=K, nfe_per_block=K + 1, mask_id=V, schedule=schedule)
  with pytest.raises(ConfigError, match="remask_eta"):
    samplers.SamplerOptions(remask_eta=2)


def test_text_config_trains_evaluates_and_writes_samples_through_the_cli(tmp_path, data_dir):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("the quick brown fox jumps over the lazy dog. " * 60, encoding="utf-8")
  workdir = tmp_path / "run"
  proc = run_in_process(
    str(workdir),
    "configs/text8.py:vmd,block4,cpu",
    "--config.data.name=text_file",
    f"--config.data.path={corpus}",
    "--config.data.seq_length=16",
    "--config.model.max_length=16",
    "--config.eval.nfes=(4,16)",
    "--config.eval.num_samples=3",
    "--config.eval.remask_eta=0.2",
    "--config.eval.prompt_length=3",
    "--config.train.steps=2",
    data_dir=data_dir,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = json.loads((workdir / "results.json").read_text())
  assert results["block_size"] == 4 and results["vocab_size"] == len(set(corpus.read_text()))
  assert results["bpc_bound"] == results["iwae2_bits_per_token"] and results["bpc_bound_estimator"] == "iwae2"
  assert "remask_eta=0.2" in results["bound_notes"]
  assert results["ppl_bound"] == pytest.approx(2.0 ** results["bpc_bound"])
  assert {"iwae2_bits_per_token", "nelbo@nfe4_bits_per_token", "nelbo@nfe16_bits_per_token"} <= set(results)
  for nfe in (4, 16):
    assert np.isfinite(results[f"samples_tokens_per_s@nfe{nfe}"])
    text = (workdir / f"samples_nfe{nfe}.txt").read_text(encoding="utf-8")
    assert text.count("--- sample ") == 3
    for sample in text.split("--- sample ")[1:]:  # each continues a 3-character prompt of the corpus
      assert sample.split("---\n", 1)[1][:3] in corpus.read_text()
    samples = np.load(workdir / f"samples_nfe{nfe}.npy")
    assert samples.shape == (3, 16) and samples.max() < results["vocab_size"]


def test_text_report_lists_every_bound_in_nfe_order(tmp_path):
  from vmd_jax import report

  for name, bpc in (("mdm", 3.5), ("vmd", 4.0)):
    run = tmp_path / name
    run.mkdir()
    results = {"method": name, "block_size": 4, "steps": 10, "length": 16, "loss": 2.0}
    results.update({"bpc_bound": bpc, "bpc_bound_se": 0.01, "ppl_bound": 2**bpc})
    results.update({f"nelbo@nfe{n}_bits_per_token": bpc + 1 / n for n in (16, 4)})
    results.update({"iwae4_bits_per_token": bpc, "bpc_bound_estimator": "iwae4"})
    results.update({"samples_tokens_per_s@nfe16": 100.0, "task": "text"})
    (run / "results.json").write_text(json.dumps(results))
  table = report.main([str(tmp_path / "mdm"), str(tmp_path / "vmd")])
  header = next(line for line in table.splitlines() if line.startswith("| method"))
  assert header.index("nelbo@nfe4") < header.index("nelbo@nfe16") and "| iwae4 |" not in header
  assert "| bpc_bound (iwae4) |" in header  # the column copies the headline estimator, and says which
  assert "| vmd | 4 | 10 | 4.000 ± 0.010 | 4.250 | 4.062 | 16.000 | 2.000 | 100 | - |" in table
