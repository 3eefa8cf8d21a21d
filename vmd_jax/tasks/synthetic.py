"""The paper's synthetic token sets (pair, pair_nonuniform, pair_corr, d1, d2): samples against the exact
distribution.

Evaluation at each NFE of eval.nfes: the share of samples inside the data support (`acc@nfe{N}`, %) and
KL(p_data || smoothed sample frequencies) (`kl@nfe{N}`, nats), with the samples saved as
samples_nfe{N}.npy; the likelihood bounds of every task beside the entropy of the set; and the joint
histogram of the first two tokens of one-step samples (joint_nfe1.png, and joint_nfe1_<dataset>.png
side by side for the runs of a comparison).
"""

import os

import jax
import ml_collections
import numpy as np

from vmd_jax import evaluation, tables
from vmd_jax.data import synthetic
from vmd_jax.errors import ConfigError
from vmd_jax.tasks import base

LN2 = evaluation.LN2


def support_metrics(samples: np.ndarray, dist: synthetic.Distribution, smoothing: float) -> dict[str, float]:
  """Acc (% of samples inside the data support) and KL(p_data || smoothed empirical frequencies), nats.

  The model frequency of each support sequence is (count + smoothing) / (n + smoothing * V^L): every
  one of the V^L possible sequences gets the same pseudo-count, so a model that never produces a
  support sequence gets a large but finite KL.
  """
  index = synthetic.support_index(dist, samples)
  counts = np.bincount(index[index >= 0], minlength=len(dist.probs)).astype(np.float64)
  num_sequences = float(dist.vocab_size) ** samples.shape[1]
  q = (counts + smoothing) / (len(samples) + smoothing * num_sequences)
  kl = float(np.sum(dist.probs * (np.log(dist.probs) - np.log(q))))
  return {"acc": 100.0 * float(np.mean(index >= 0)), "kl": kl}


def plot_joint(samples_by_title: dict[str, np.ndarray], vocab_size: int, path: str) -> None:
  """Side-by-side heat maps of the joint frequency of the first two positions of each sample set."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  joints = {}
  for title, samples in samples_by_title.items():
    joint = np.zeros((vocab_size, vocab_size))  # joint: [x1, x2] frequencies
    np.add.at(joint, (samples[:, 0], samples[:, 1]), 1.0 / len(samples))
    joints[title] = joint
  vmax = max(joint.max() for joint in joints.values())  # one colour scale, so panels compare
  fig, axes = plt.subplots(1, len(joints), figsize=(4 * len(joints), 3.6), squeeze=False)
  for ax, (title, joint) in zip(axes[0], joints.items(), strict=True):
    image = ax.imshow(joint, cmap="viridis", origin="lower", vmin=0.0, vmax=vmax)
    ax.set_xlabel("x2")
    ax.set_ylabel("x1")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


class Synthetic(base.Task):
  """Accuracy and KL of samples against the exact distribution of a synthetic set."""

  name = "synthetic"
  datasets = synthetic.NAMES

  def add_defaults(self, config) -> None:
    config.data.p = ml_collections.FieldReference(None, field_type=float)  # pair_corr strength in [0, 1]
    config.eval.kl_smoothing = 0.01  # pseudo-count per sequence in the empirical model frequencies

  def check_config(self, config) -> None:
    super().check_config(config)
    if config.eval.kl_smoothing <= 0:
      raise ConfigError(f"eval.kl_smoothing={config.eval.kl_smoothing}: must be positive")
    synthetic.distribution(config.data.name, config.data.p)

  def evaluate(self, run, key) -> dict:
    config, dataset = run.config, run.dataset
    dist = synthetic.distribution(config.data.name, config.data.p)
    params = run.eval_params()
    results = {"entropy_bits_per_token": synthetic.entropy_nats(dist) / (dataset.length * LN2)}
    for nfe in config.eval.nfes:
      samples = evaluation.generate(
        run.model, params, config, nfe, config.eval.num_samples, dataset.length, jax.random.fold_in(key, nfe)
      )
      metrics = support_metrics(samples, dist, config.eval.kl_smoothing)
      results[f"acc@nfe{nfe}"], results[f"kl@nfe{nfe}"] = metrics["acc"], metrics["kl"]
      if jax.process_index() == 0:
        evaluation.write_samples(run.workdir, nfe, samples)
        if nfe == 1:
          path = os.path.join(run.workdir, "joint_nfe1.png")
          plot_joint({f"{config.objective.name}, NFE = 1": samples}, dataset.vocab_size, path)
    results.update(evaluation.common_results(run, key))
    return results

  def table(self, runs) -> str:
    results = {name: result for name, (result, _) in runs.items()}
    present = tables.keys(results)
    nfes = sorted({int(k.split("@nfe")[1]) for k in present if k.startswith("acc@nfe")})
    quality = [f"acc@nfe{n}" for n in nfes] + [f"kl@nfe{n}" for n in nfes]
    return (
      "Samples: acc (% inside the support) and KL (nats)\n\n"
      + tables.run_table(results, quality, quality)
      + "\n\n"
      + tables.likelihood_table(results)
    )

  def figures(self, runs, directory) -> list[str]:
    """joint_nfe1_<dataset>.png: the one-step joint histograms of the runs on each dataset, side by side."""
    paths = []
    for dataset in sorted({result["dataset"] for result, _ in runs.values()}):
      panels = {}
      for result, workdir in runs.values():
        samples_path = os.path.join(workdir, "samples_nfe1.npy")
        if result["dataset"] == dataset and os.path.exists(samples_path):
          panels[f"{result['method'].upper()}, NFE = 1"] = np.load(samples_path)
      if panels:
        vocab_size = next(r["vocab_size"] for r, _ in runs.values() if r["dataset"] == dataset)
        paths.append(os.path.join(directory, f"joint_nfe1_{dataset}.png"))
        plot_joint(panels, vocab_size, paths[-1])
    return paths


TASK = base.register(Synthetic())
