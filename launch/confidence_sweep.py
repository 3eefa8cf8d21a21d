"""Choose eval.confidence (token_rule argmax_confident) on validation draws: acc and KL of trained
synthetic runs under argmax_parallel, sample and argmax_confident at several thresholds.

  python launch/confidence_sweep.py runs/never_loses/runs/{d1,d2,markov,pair_corr_p0.5}_vmdplus_s0

The samples are drawn with --seed (default 7), not the eval seed (eval.seed, 1) of the reported
tables, so the threshold is not chosen on the draws it is judged by. Prints one markdown table.
"""

import argparse

import numpy as np

from vmd_jax import api
from vmd_jax.data import synthetic
from vmd_jax.tasks.synthetic import support_metrics


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+", help="trained synthetic runs (a latent model each)")
  parser.add_argument("--thresholds", default="0.3,0.35,0.4,0.5", help="comma-separated confidences")
  parser.add_argument("--seed", type=int, default=7, help="sampling seed (not the tables' eval seed)")
  parser.add_argument("--num", type=int, default=20_000, help="samples per NFE")
  args = parser.parse_args()
  thresholds = [float(t) for t in args.thresholds.split(",")]
  rules = [("argmax_parallel", {}), ("sample", {})]
  for t in thresholds:
    rules.append((f"argmax_confident {t:g}", {"token_rule": "argmax_confident", "confidence": t}))
  rows = []
  for workdir in args.workdirs:
    model = api.load(workdir)
    config = model.config
    if config.model.latent_dim == 0:
      raise SystemExit(f"{workdir}: an MDM has no z to be confident about")
    dist = synthetic.distribution(config.data.name, config.data.p)
    name = workdir.rstrip("/").split("/")[-1]
    for rule, options in rules:
      options = options or {"token_rule": rule}
      cells = []
      for nfe in config.eval.nfes:
        samples = model.sample(args.num, nfe, seed=args.seed, **options)
        m = support_metrics(np.asarray(samples), dist, config.eval.kl_smoothing)
        cells.append(f"{m['acc']:.1f} / {m['kl']:.3f}")
      rows.append((name, rule, list(config.eval.nfes), cells))
  nfes = sorted({n for row in rows for n in row[2]})
  print("| run | token rule | " + " | ".join(f"acc / kl @nfe{n}" for n in nfes) + " |")
  print("|---|---|" + "---|" * len(nfes))
  for name, rule, run_nfes, cells in rows:
    by_nfe = dict(zip(run_nfes, cells, strict=True))
    print(f"| {name} | {rule} | " + " | ".join(by_nfe.get(n, "-") for n in nfes) + " |")


if __name__ == "__main__":
  main()
