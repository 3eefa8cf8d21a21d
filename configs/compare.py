"""The built-in default: MDM, the paper's VMD and the recommended vmd+ on synthetic sets, trained and
evaluated one after another.

`configs/compare.py[:<dataset>+<dataset>...[@<method>,<method>...]]` (default pair+d1+d2@mdm,vmd,vmd+).
Each run is a full configs/synthetic.py config under config.runs.<dataset>_<method> (vmd+ is named
vmdplus there, vmd+0.4 vmdplus0_4), so any of its fields can be overridden, e.g.
--config.runs.d1_vmd.train.steps=3000.
"""

import importlib.util
import os

import ml_collections

METHODS = ("mdm", "vmd", "vmd+")


def _synthetic():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "synthetic.py")
  spec = importlib.util.spec_from_file_location("vmd_configs_synthetic", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str = "pair+d1+d2"):
  """One synthetic config per (dataset, method) pair."""
  synthetic = _synthetic()
  datasets, _, methods = arg.partition("@")
  config = ml_collections.ConfigDict()
  config.task = "compare"
  config.jax_distributed = False  # as in every config: join the other processes of a multi-process job
  config.runs = ml_collections.ConfigDict()
  for dataset in datasets.split("+"):
    for method in methods.split(",") if methods else METHODS:
      name = method.replace("+", "plus").replace(".", "_")  # a config key: vmd+0.4 -> vmdplus0_4
      config.runs[f"{dataset}_{name}"] = synthetic.get_config(f"{dataset},{method}")
  return config
