"""The built-in default: VMD against MDM on synthetic sets, trained and evaluated one after another.

`configs/compare.py[:<dataset>+<dataset>...]` (default pair+d1+d2). Each run is a full
configs/synthetic.py config under config.runs.<dataset>_<method>, so any of its fields can be
overridden, e.g. --config.runs.d1_vmd.train.steps=3000.
"""

import importlib.util
import os

import ml_collections


def _synthetic():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "synthetic.py")
  spec = importlib.util.spec_from_file_location("vmd_configs_synthetic", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str = "pair+d1+d2"):
  """One synthetic config per (dataset, method) pair."""
  synthetic = _synthetic()
  config = ml_collections.ConfigDict()
  config.task = "compare"
  config.jax_distributed = False  # as in every config: join the other processes of a multi-process job
  config.runs = ml_collections.ConfigDict()
  for dataset in arg.split("+"):
    for method in ("mdm", "vmd"):
      config.runs[f"{dataset}_{method}"] = synthetic.get_config(f"{dataset},{method}")
  return config
