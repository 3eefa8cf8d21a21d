"""vmd_jax: Variational Masked Diffusion (VMD) in JAX/Flax.

A masked diffusion model whose denoiser is conditioned on a Gaussian latent z, trained with a
variational objective (Zhang, Schwing, Zhao, arXiv 2510.23606). The plain masked diffusion model
(MDM) is the same code with the latent switched off.
"""

__version__ = "0.1.0"
