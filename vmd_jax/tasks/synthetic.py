"""The paper's synthetic token sets (pair, pair_nonuniform, pair_corr, d1, d2) and a Markov chain
(markov): samples against the exact distribution.

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


def _nfe_curve(group: list[dict], prefix: str, suffix: str = ""):
  """(NFEs, mean, seed standard deviation) of the results keys prefix{N}suffix over a group of runs."""
  nfes = sorted(
    {tables.nfe_order(k)[1] for r in group for k in r if k.startswith(prefix) and k.endswith(suffix)}
  )
  nfes = [n for n in nfes if all(f"{prefix}{n}{suffix}" in r for r in group)]
  values = np.array([[r[f"{prefix}{n}{suffix}"] for n in nfes] for r in group])  # [runs, nfes]
  spread = values.std(axis=0, ddof=1) if len(group) > 1 else np.zeros(len(nfes))
  return nfes, values.mean(axis=0), spread


CURVES = (
  ("acc@nfe", "", "accuracy (% inside the support)"),
  ("kl@nfe", "", "KL(data || samples), nats"),
  ("nelbo@nfe", "_bits_per_token", "valid bound of the sampler, bits per token"),
)


def plot_curves(groups: dict[str, list[dict]], title: str, path: str) -> None:
  """Accuracy, KL and the valid bound against NFE, one line per method (the mean over its runs, with
  the seeds' standard deviation as error bars), the entropy as a dashed line on the bound panel."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(CURVES), figsize=(4.6 * len(CURVES), 3.6))
  for ax, (prefix, suffix, label) in zip(axes, CURVES, strict=True):
    ticks = set()
    for method, group in groups.items():
      nfes, mean, spread = _nfe_curve(group, prefix, suffix)
      if nfes:
        ax.errorbar(nfes, mean, yerr=spread, marker="o", capsize=3, label=f"{method} ({len(group)})")
        ticks.update(nfes)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks), [str(n) for n in sorted(ticks)])
    ax.set_xlabel("NFE")
    ax.set_ylabel(label)
    if prefix == "kl@nfe":
      ax.set_yscale("log")
  entropy = next(iter(groups.values()))[0].get("entropy_bits_per_token")
  if entropy is not None:
    axes[-1].axhline(entropy, color="gray", linestyle="--", label="entropy")
  axes[0].legend(title="method (runs)")
  axes[-1].legend()
  fig.suptitle(title)
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
    if config.data.p is not None:  # pair_corr: the set depends on p, and so do the tables' rows
      results["dataset"] = f"{config.data.name}_p{config.data.p:g}"
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
    """joint_nfe1_<dataset>.png: the one-step joint histograms of the runs on each dataset, side by
    side; nfe_<dataset>[_block<k>].png: accuracy, KL and valid bound against NFE, a line per method."""
    paths = []
    by_set: dict[tuple, dict[str, list[dict]]] = {}
    for (dataset, block_size, method, _), group in tables.seed_groups(
      {name: result for name, (result, _) in runs.items()}
    ).items():
      by_set.setdefault((dataset, block_size), {}).setdefault(method, []).extend(group)
    for (dataset, block_size), groups in by_set.items():
      name = dataset + (f"_block{block_size}" if block_size else "")
      paths.append(os.path.join(directory, f"nfe_{name}.png"))
      plot_curves(groups, name.replace("_", ", "), paths[-1])
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
