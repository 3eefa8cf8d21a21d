"""The denoiser against a reference that conditions every position on its own; the zero-initialised
latent path (at initialisation VMD's denoiser is exactly an MDM denoiser); attention; mixed precision."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmd_jax import networks, objectives

V, L = 5, 6


def _init(latent_dim, width=32, num_heads=4, block_size=0, **options):
  """A VMDModel (an MDM for latent_dim 0) on V tokens of length L, and its initial parameters; options
  go to the denoiser."""
  denoiser = networks.Denoiser(
    V, L, width=width, depth=2, num_heads=num_heads, latent_dim=latent_dim, block_size=block_size, **options
  )
  encoder = None
  if latent_dim:
    encoder = networks.PosteriorEncoder(
      V, L, latent_dim, width=width, num_heads=num_heads, block_size=block_size
    )
  model = networks.VMDModel(denoiser, encoder)
  params = jax.jit(model.init)(
    jax.random.PRNGKey(0), jnp.zeros((1, L), jnp.int32), jnp.ones((1, L), bool), jnp.ones((1,))
  )
  return model, params


def _apply(model):
  """model.apply, jitted (eagerly, each op of the network is compiled on its own)."""
  return jax.jit(model.apply, static_argnames="method")


def _inputs():
  key = jax.random.PRNGKey(1)
  x_t = jax.random.randint(key, (4, L), 0, V + 1)  # includes the mask id V
  t = jax.random.uniform(jax.random.fold_in(key, 1), (4,))
  return x_t, t


@pytest.mark.parametrize("latent_path", networks.LATENT_PATHS)
def test_latent_denoiser_at_init_ignores_z_and_equals_the_mdm_denoiser(latent_path):
  vmd, vmd_params = _init(latent_dim=8, latent_path=latent_path)
  mdm, mdm_params = _init(latent_dim=0)
  x_t, t = _inputs()
  z1, z2 = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 8))
  out1 = _apply(vmd)(vmd_params, x_t, t, z1, method="denoise")
  out2 = _apply(vmd)(vmd_params, x_t, t, z2, method="denoise")
  np.testing.assert_array_equal(out1, out2)
  # The MDM is the same network without the latent projection (and without the encoder).
  shared = jax.tree.map(lambda x: x, mdm_params)
  latent_only = ("latent_path", "latent_proj", "latent_code", "adaln_code")
  shared["params"]["denoiser"] = {
    k: {n: w for n, w in v.items() if n not in latent_only} if k.startswith("block_") else v
    for k, v in vmd_params["params"]["denoiser"].items()
    if k not in latent_only
  }
  assert jax.tree.structure(shared) == jax.tree.structure(mdm_params)
  np.testing.assert_allclose(_apply(mdm)(shared, x_t, t, None, method="denoise"), out1, rtol=1e-6, atol=1e-6)
  assert "encoder" not in mdm_params["params"] and "latent_path" not in mdm_params["params"]["denoiser"]


@pytest.mark.parametrize("latent_path", networks.LATENT_PATHS)
def test_latent_changes_the_output_once_the_latent_path_is_trained(latent_path):
  vmd, params = _init(latent_dim=8, latent_path=latent_path)
  params = jax.tree.map(lambda x: x + 0.1 * jnp.ones_like(x), params)  # any step away from zero
  x_t, t = _inputs()
  z1, z2 = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 8))
  out1 = _apply(vmd)(params, x_t, t, z1, method="denoise")
  out2 = _apply(vmd)(params, x_t, t, z2, method="denoise")
  assert float(jnp.max(jnp.abs(out1 - out2))) > 1e-3


def test_posterior_depends_on_tokens_and_mask():
  vmd, params = _init(latent_dim=8)
  x0 = jax.random.randint(jax.random.PRNGKey(3), (2, L), 0, V)
  all_masked = _apply(vmd)(params, x0, jnp.ones((2, L), bool), method="posterior")
  some_masked = _apply(vmd)(params, x0, jnp.arange(L)[None, :].repeat(2, 0) < 2, method="posterior")
  assert all_masked.mean.shape == (2, 8) and all_masked.log_std.shape == (2, 8)
  assert not np.allclose(all_masked.mean, some_masked.mean)
  assert not np.allclose(all_masked.mean[0], all_masked.mean[1])


@pytest.mark.parametrize("block_size", [0, 3])
def test_position_pooling_tells_apart_what_the_mean_cannot(block_size):
  """Two sequences of each block holding the same tokens in another order, with no position embedding
  (a solved Sudoku's rows, columns and boxes hold the same digits in every grid): the mean-pooled
  posterior is the same for both, one pooled with a weight per position is not."""
  x0 = jnp.asarray([[0, 1, 2, 3, 4, 0], [2, 0, 1, 0, 3, 4]])
  masked = jnp.zeros((2, L), bool)
  means = {}
  for pool in networks.ENCODER_POOLS:
    encoder = networks.PosteriorEncoder(V, L, 8, width=32, block_size=block_size, pool=pool)
    params = encoder.init(jax.random.PRNGKey(0), x0, masked)
    params = jax.tree_util.tree_map_with_path(
      lambda path, p: jnp.zeros_like(p) if "pos_embed" in jax.tree_util.keystr(path) else p, params
    )
    posterior = jax.jit(encoder.apply)(params, x0, masked)
    assert posterior.mean.shape == ((2, 8) if block_size == 0 else (2, 2, 8))
    means[pool] = np.asarray(posterior.mean)
  np.testing.assert_allclose(means["mean"][0], means["mean"][1], atol=1e-5)
  assert np.abs(means["position"][0] - means["position"][1]).max() > 0.1


@pytest.mark.parametrize("block_size", [0, 3])
def test_latent_signal_counts_only_what_differs_between_examples(block_size):
  """objectives.latent_signal's z_share: 0 when every example is the same (a posterior that carries
  nothing about its example), above 0 when they differ, and a share of the batch's own spread, so a
  batch holding each example twice gives the same value; positions marked as given (clues, a prompt)
  reach the encoder as unmasked, which changes its posterior."""
  model, params = _init(latent_dim=8, block_size=block_size)
  x0 = jax.random.randint(jax.random.PRNGKey(4), (4, L), 0, V)
  signal = jax.jit(lambda p, x, g: objectives.latent_signal(model, p, x, g))
  same = signal(params, jnp.repeat(x0[:1], 4, axis=0), None)
  assert float(same["z_share"]) < 1e-9
  differ = signal(params, x0, None)
  assert 1e-4 < float(differ["z_share"]) <= 1.0
  twice = signal(params, jnp.concatenate([x0, x0]), None)
  np.testing.assert_allclose(twice["z_share"], differ["z_share"], rtol=1e-5)
  np.testing.assert_allclose(twice["z_kl"], differ["z_kl"], rtol=1e-5)
  given = jnp.zeros(x0.shape, bool).at[:, :2].set(True)
  assert float(signal(params, x0, given)["z_kl"]) != float(differ["z_kl"])


def test_bfloat16_compute_keeps_float32_parameters_and_outputs_close_to_float32():
  """Mixed precision: the same float32 parameters, bf16 matmuls, float32 logits and posterior."""
  model, params = _init(latent_dim=8)
  denoiser = model.denoiser.clone(dtype=jnp.bfloat16)
  encoder = model.encoder.clone(dtype=jnp.bfloat16)
  mixed = networks.VMDModel(denoiser, encoder)
  mixed_params = jax.jit(mixed.init)(
    jax.random.PRNGKey(0), jnp.zeros((1, L), jnp.int32), jnp.ones((1, L), bool), jnp.ones((1,))
  )
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(mixed_params))
  trained = jax.tree.map(lambda x: x + 0.05 * jnp.sign(jnp.sin(jnp.arange(x.size))).reshape(x.shape), params)
  x_t, t = _inputs()
  z = jax.random.normal(jax.random.PRNGKey(3), (4, 8))
  full = _apply(model)(trained, x_t, t, z, method="denoise")
  half = _apply(mixed)(trained, x_t, t, z, method="denoise")
  assert half.dtype == jnp.float32
  assert not np.array_equal(full, half)  # the computation did run in bfloat16
  np.testing.assert_allclose(half, full, atol=0.1)
  masked = x_t == V
  q_full = _apply(model)(trained, jnp.minimum(x_t, V - 1), masked, method="posterior")
  q_half = _apply(mixed)(trained, jnp.minimum(x_t, V - 1), masked, method="posterior")
  assert q_half.mean.dtype == jnp.float32
  np.testing.assert_allclose(q_half.mean, q_full.mean, atol=0.1)


def test_the_logits_layer_computes_in_float32_under_bfloat16():
  """The last matmul of the bf16 denoiser (hidden state -> logits) takes float32 operands: its logits,
  which every sampler and bound reads, are not rounded to bfloat16."""
  model, params = _init(latent_dim=0)
  mixed = networks.VMDModel(model.denoiser.clone(dtype=jnp.bfloat16), None)
  x_t, t = _inputs()
  jaxpr = jax.make_jaxpr(lambda p: mixed.apply(p, x_t, t, None, method="denoise"))(params)
  dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
  assert any(v.aval.dtype == jnp.bfloat16 for e in dots[:-1] for v in e.invars)  # the body is bf16
  assert dots[-1].outvars[0].aval.shape[-1] == V
  assert all(v.aval.dtype == jnp.float32 for v in dots[-1].invars), [v.aval for v in dots[-1].invars]


def _layer_norm(x):
  mean = x.mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-6)


def _dense(p, x):
  return x @ p["kernel"] + p["bias"]


def _reference_denoiser(params, denoiser, x_t, t, z, context):
  """The denoiser written out in numpy (float64), each position with its own conditioning vector.

  Position i of block b has the conditioning vector time_mlp(t_b) + z_b's share (clean positions:
  time_mlp(0)), which every layer's adaLN MLP maps to that position's modulation. z_b's share: for
  the adaln path its projection at i (its index within the block); for the low_rank path z_b
  W_condition, and the position adds z_b's features at i times the embedding kernel to its input; for
  the low_rank_adaln path none, but each layer adds W_code silu(c_i) W_layer to position i's shifts and
  scales, c_i the vector of the adaln path.
  Attention is the textbook softmax(q k^T / sqrt(d)) v under the BD3-LM mask.
  t: [batch, blocks]; z: [batch, blocks, d] or None.
  """
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params["params"]["denoiser"])
  batch, n = x_t.shape
  blocks, size = networks.block_layout(n, denoiser.block_size)
  w, heads = denoiser.width, denoiser.num_heads
  silu = lambda x: x / (1 + np.exp(-x))  # noqa: E731
  gelu = lambda x: np.asarray(jax.nn.gelu(jnp.asarray(x, jnp.float32)), np.float64)  # noqa: E731

  def time_mlp(times):  # times: [m] -> [m, w]
    emb = np.asarray(networks.timestep_embedding(jnp.asarray(times, jnp.float32), w), np.float64)
    return _dense(p["Dense_0"], silu(_dense(p["Dense_1"], emb)))

  pos = np.arange(n)
  # Each noisy position's conditioning vector [batch, n, w] (t part; z part below); clean: t = 0.
  c_time = time_mlp(np.asarray(t).reshape(-1)).reshape(batch, blocks, w)[:, pos // size]
  h = p["token_embed"]["embedding"][np.asarray(x_t)] + p["pos_embed"][:n]
  c_noisy, code = c_time, None
  if z is not None and denoiser.latent_path in ("adaln", "low_rank_adaln"):  # z_b's projection at i
    lp = p["latent_proj"]
    rows = lp["bias"].size // w  # max_length, or 1 if shared
    index = pos % size if denoiser.latent_per_position else np.zeros_like(pos)
    kernel = lp["kernel"].reshape(-1, rows, w)[:, index]  # [d, n, w]
    c_noisy = c_time + np.einsum("bnd,dnw->bnw", np.asarray(z, np.float64)[:, pos // size], kernel)
    c_noisy = c_noisy + lp["bias"].reshape(rows, w)[index]
    if denoiser.latent_path == "low_rank_adaln":
      code = silu(c_noisy) @ p["latent_code"]["kernel"]  # [batch, n, rank]
      c_noisy = c_time
  elif z is not None:
    z_pos = np.asarray(z, np.float64)[:, pos // size]  # [batch, n, d]: each position's z_b
    fmap = p["latent_path"]["features"]  # [d, max_length (1 if shared), d]
    index = pos % size if denoiser.latent_per_position else np.zeros_like(pos)
    feats = np.einsum("bnd,dne->bne", z_pos, fmap[:, index])  # z_b's features at each position
    h = h + feats @ p["latent_path"]["embed"]
    c_noisy = c_time + z_pos @ p["latent_path"]["condition"]
  streams = [c_noisy]
  mask = np.ones((n, n), bool)
  if blocks > 1:
    h = np.concatenate([h, p["token_embed"]["embedding"][np.asarray(context)] + p["pos_embed"][:n]], 1)
    streams.append(np.broadcast_to(time_mlp(np.zeros(1)), (batch, n, w)))
    mask = networks.block_attention_mask(n, size)

  def modulation(dense):  # each position's modulation from its own conditioning vector
    m = np.concatenate([_dense(dense, silu(c)) for c in streams], axis=1)
    return np.split(m, m.shape[-1] // w, axis=-1)

  for i in range(denoiser.depth):
    b = p[f"block_{i}"]
    shift1, scale1, gate1, shift2, scale2, gate2 = modulation(b["adaln"])
    if code is not None:  # the noisy positions' own shares; none for clean ones
      share = np.zeros(shift1.shape[:2] + (4 * w,))
      share[:, :n] = code @ b["adaln_code"]["kernel"]
      parts = np.split(share, 4, axis=-1)
      shift1, scale1, shift2, scale2 = (
        m + s for m, s in zip((shift1, scale1, shift2, scale2), parts, strict=True)
      )
    a = b["MultiHeadDotProductAttention_0"]
    x = _layer_norm(h) * (1 + scale1) + shift1
    q, k, v = (
      np.einsum("bnw,whd->bnhd", x, a[s]["kernel"]) + a[s]["bias"] for s in ("query", "key", "value")
    )
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(w // heads)
    logits = np.where(mask, logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    att = np.einsum("bhqk,bkhd->bqhd", weights, v)
    h = h + gate1 * (np.einsum("bqhd,hdw->bqw", att, a["out"]["kernel"]) + a["out"]["bias"])
    x = _layer_norm(h) * (1 + scale2) + shift2
    h = h + gate2 * _dense(b["Dense_1"], gelu(_dense(b["Dense_0"], x)))
  streams = streams[:1]
  shift, scale = modulation(p["final_adaln"])
  return _dense(p["logits"], _layer_norm(h[:, :n]) * (1 + scale) + shift)


def _random_params(params, scale=0.2):
  """Every parameter moved off its initial value (the zero-initialised paths included)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
  return tree.unflatten(
    [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
  )


@pytest.mark.parametrize(
  "latent_dim,block_size,per_position,latent_path",
  [
    (0, 0, True, "adaln"),
    (0, 3, True, "adaln"),
    (4, 0, True, "adaln"),
    (4, 2, True, "adaln"),
    (4, 0, True, "low_rank"),
    (4, 2, True, "low_rank"),
    (4, 3, False, "low_rank"),
    (4, 0, True, "low_rank_adaln"),
    (4, 2, True, "low_rank_adaln"),
    (4, 3, False, "low_rank_adaln"),
  ],
  ids=[
    "mdm",
    "mdm_blocks",
    "adaln",
    "adaln_blocks",
    "low_rank",
    "low_rank_blocks",
    "low_rank_blocks_shared",
    "low_rank_adaln",
    "low_rank_adaln_blocks",
    "low_rank_adaln_blocks_shared",
  ],
)
def test_denoiser_equals_a_reference_that_conditions_every_position(
  latent_dim, block_size, per_position, latent_path
):
  """The modulation from t and z computed once per block (once for the clean stream), and z's input
  through its low-rank path, equal conditioning each position on its own vector, for the same
  (trained-looking) parameters."""
  model, params = _init(
    latent_dim, 16, 2, block_size, latent_per_position=per_position, latent_path=latent_path
  )
  denoiser = model.denoiser
  params = _random_params(params)
  blocks = L // (block_size or L)
  x_t, _ = _inputs()
  context = jax.random.randint(jax.random.PRNGKey(4), (4, L), 0, V)
  t = jax.random.uniform(jax.random.PRNGKey(5), (4, blocks))
  z = jax.random.normal(jax.random.PRNGKey(6), (4, blocks, latent_dim)) if latent_dim else None
  args = (t, z) if blocks > 1 else (t[:, 0], None if z is None else z[:, 0])
  got = _apply(model)(params, x_t, *args, context=context, method="denoise")
  want = _reference_denoiser(params, denoiser, x_t, t, z, context)
  if not per_position and latent_path == "low_rank":  # one feature map, read by every position
    assert params["params"]["denoiser"]["latent_path"]["features"].shape == (latent_dim, 1, latent_dim)
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


def test_softmax_and_its_backward_equal_jax_nn_softmax():
  """The attention's softmax, whose backward reads its saved output, against jax.nn.softmax: values and
  vector-Jacobian products, with masked (float32 min) logits in some rows."""
  logits = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 7))
  logits = jnp.where(networks.block_attention_mask(7, 3)[:5, :7], logits, jnp.finfo(jnp.float32).min)
  cotangent = jax.random.normal(jax.random.PRNGKey(1), logits.shape)
  ours, ours_vjp = jax.vjp(networks.softmax, logits)
  ref, ref_vjp = jax.vjp(lambda x: jax.nn.softmax(x, axis=-1), logits)
  np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(ours_vjp(cotangent)[0], ref_vjp(cotangent)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_fused_attention_equals_the_written_out_attention(dtype, tol):
  """jax.nn.dot_product_attention (the uncached path) against softmax(q k^T / sqrt(d)) v written out
  (the cached path), with the block diffusion mask and without a mask."""
  q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, 8, 2, 4)).astype(dtype) for i in range(3))
  for mask in (None, networks.block_attention_mask(4, 2)):
    fused = jax.jit(networks.fused_attention)(q, k, v, mask)
    weights = networks._einsum_attention(q, k, v, mask, dtype)
    written = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    assert fused.dtype == dtype and fused.shape == q.shape
    np.testing.assert_allclose(
      np.asarray(fused, np.float32), np.asarray(written, np.float32), atol=tol, rtol=tol
    )
  if jax.default_backend() == "cpu":
    assert networks.attention_implementation(jnp.float32, 64, train=False) == "xla"
    assert networks.attention_implementation(jnp.float32, 64, train=True) is None
