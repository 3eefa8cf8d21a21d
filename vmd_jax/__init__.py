"""vmd_jax: Variational Masked Diffusion (VMD) in JAX/Flax.

A masked diffusion model whose denoiser is conditioned on a Gaussian latent z, trained with a
variational objective (Zhang, Schwing, Zhao, arXiv 2510.23606). The plain masked diffusion model
(MDM) is the same code with the latent switched off.

The Python API (vmd_jax/api.py): `vmd_jax.train(config, workdir)` and `vmd_jax.load(workdir)` return a
`Model` with `.sample`, `.nll_bound` and, for Sudoku, `.solve`.
"""

__version__ = "0.17.1"

_API = ("Model", "NLLBound", "compare", "load", "train")


def __getattr__(name):
  # The API is imported on first use, so that `import vmd_jax` stays cheap and leaves jax unconfigured.
  if name in _API:
    from vmd_jax import api

    return getattr(api, name)
  raise AttributeError(f"module 'vmd_jax' has no attribute {name!r}")


__all__ = [*_API, "__version__"]
