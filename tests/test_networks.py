"""The zero-initialised latent path: at initialisation VMD's denoiser is exactly an MDM denoiser."""

import jax
import jax.numpy as jnp
import numpy as np

from vmd_jax import networks

V, L = 5, 6


def _init(latent_dim, latent_per_position=True):
  denoiser = networks.Denoiser(
    V, L, width=32, depth=2, num_heads=4, latent_dim=latent_dim, latent_per_position=latent_per_position
  )
  encoder = networks.PosteriorEncoder(V, L, latent_dim, width=32) if latent_dim else None
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


def test_latent_denoiser_at_init_ignores_z_and_equals_the_mdm_denoiser():
  vmd, vmd_params = _init(latent_dim=8)
  mdm, mdm_params = _init(latent_dim=0)
  x_t, t = _inputs()
  z1, z2 = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 8))
  out1 = _apply(vmd)(vmd_params, x_t, t, z1, method="denoise")
  out2 = _apply(vmd)(vmd_params, x_t, t, z2, method="denoise")
  np.testing.assert_array_equal(out1, out2)
  # The MDM is the same network without the latent projection (and without the encoder).
  shared = jax.tree.map(lambda x: x, mdm_params)
  shared["params"]["denoiser"] = {
    k: v for k, v in vmd_params["params"]["denoiser"].items() if k != "latent_proj"
  }
  np.testing.assert_allclose(_apply(mdm)(shared, x_t, t, None, method="denoise"), out1, rtol=1e-6, atol=1e-6)
  assert "encoder" not in mdm_params["params"] and "latent_proj" not in mdm_params["params"]["denoiser"]


def test_latent_changes_the_output_once_the_latent_path_is_trained():
  vmd, params = _init(latent_dim=8)
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
