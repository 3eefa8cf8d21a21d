"""Sudoku solving, clue-conditioned: `configs/sudoku.py:<method>[,<size>]`, or `:compare[,<size>]`.

method: mdm, vmd (the paper's), vmd+ (the synthetic sets' recipe with T drawn first,
objective.step_draw = nfe, the 5-step sampler 3 times in 7, chosen on the validation puzzles; its z
goes unused with the default mean-pooled encoder: README) or global;
size: cpu (default; 5,000 steps of batch 64: 67 to 84 minutes of training per run on one CPU core beside
another run, and 40 (mdm), 49 (vmd+) and 57 (vmd) minutes alone on 2 cores by launch/sudoku_hour.sh) or
gpu (the paper's scale, a 6M-parameter denoiser).
`compare` trains and evaluates MDM, the paper's VMD and vmd+ in DIR/mdm, DIR/vmd and DIR/vmd+ (in
that order) and prints the accuracy tables with each VMD's paired difference from MDM and its 95% interval.

Data: generated unique-solution puzzles (data.clues, data.difficulty, data.num_train from
data.base_train base puzzles, a data.hard_fraction share of them hard: data.hard_clues clues, beyond
singles), an easy and a hard test set (data.num_test, data.num_hard_test) and validation sets of each
(data.num_validation; evaluated with eval.split=validation), or a file of the user's with
--config.data.name=sudoku_file --config.data.path=FILE (Shah et al. 325-int rows as .npy or text, or
'puzzle,solution' CSV).
Clues are never masked; the loss covers the blank cells; the posterior encoder sees the solution.
Evaluation: share of held-out puzzles solved with each decoder order (eval.decoders) at each NFE, and
the share of valid rows, columns and boxes in the grids left unsolved; per puzzle set.
"""

import ml_collections

from vmd_jax.defaults import METHODS, apply_method
from vmd_jax.errors import ConfigError
from vmd_jax.tasks import base_config

SIZES = ("cpu", "gpu")
# the runs of `compare` (trained in sorted order: mdm, vmd, vmd+)
COMPARED = ("mdm", "vmd", "vmd+")


def _single(method: str, size: str) -> ml_collections.ConfigDict:
  config = apply_method(base_config("sudoku"), method)
  config.data.name = "sudoku"
  config.data.num_test = 2_000  # the easy test set; the hard one is as large
  config.data.num_hard_test = 2_000
  config.data.num_validation = 1_000  # easy and hard validation puzzles: eval.split=validation
  config.data.hard_fraction = 0.5  # half the training base puzzles are hard (24-26 clues, beyond singles)
  config.model.max_length = 81
  config.model.num_heads = 4
  config.eval.nfes = (5, 10, 20, 50)
  config.eval.num_samples = 2_000  # held-out puzzles evaluated, per set
  config.eval.batch_size = 500
  config.eval.token_rule = "argmax"  # a puzzle has one answer: both methods fill in their mode
  config.objective.kl_warmup_steps = 1_000
  if method != "mdm":
    # Without a floor the logged KL fell to 0.03 nats per cell (2.4 per puzzle) by step 750 and z was
    # ignored: the denoiser first learns the row, column and box rules, which z cannot help with. 0.25
    # nats per dimension (4 nats per puzzle) keeps the KL up, but with the mean-pooled encoder the
    # posterior is still the same for every puzzle (z_share about 0: README, "Why z goes unused").
    config.objective.free_bits = 0.25
  if config.objective.name == "stepwise":
    # T first, not a step uniform among the 85 steps of the 5, 10, 20 and 50-step samplers: with T
    # uniform over (5, 5, 10, 10, 20, 20, 50) vmd+ went from 9.1 / 47.9 / 76.3% of the easy validation
    # puzzles solved at NFE 5 / 10 / 20 (margin) to 38.5 / 69.2 / 84.3% (README, "Drawing T first"), and
    # with the 5-step sampler drawn 3 times in 7 to 47.8 / 75.5 / 84.7%, the hard ones also better
    # (README, "The 5-step sampler drawn more often"). Chosen at the cpu size.
    config.objective.step_draw = "nfe"
    config.objective.nfes = (5, 5, 5, 10, 10, 20, 50)
  config.train.log_every = 250
  config.train.checkpoint_every = 1_000
  if size == "cpu":
    config.data.num_train = 1_000_000
    config.data.base_train = 10_000
    config.data.clues = 30
    config.data.difficulty = "singles"
    config.model.width = 128
    config.model.depth = 4
    config.model.encoder_width = 128
    config.model.encoder_depth = 1
    # 6,500 steps (the hour alone) lost 13.2 points at NFE 5 on the easy validation puzzles and tied
    # at NFE 20 and 50 (README, "Steps to fill the hour on validation")
    config.train.steps = 5_000
    config.train.batch_size = 64
    # 2e-3 was 7.5 points behind seed 0 at NFE 5 on the easy validation puzzles, inside the spread of
    # two training seeds, and 4 ahead of both at NFE 20 and 50: a candidate, not yet adopted (README,
    # "A second training seed"); 6 layers at 4,400 steps lost or tied everywhere
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 300
  else:
    config.data.num_train = 1_000_000
    config.data.base_train = 100_000
    config.data.clues = 24
    config.data.difficulty = "any"
    config.model.width = 256  # with depth 5: a 6.2M-parameter MDM denoiser (6.6M with the latent)
    config.model.depth = 5
    config.model.num_heads = 8
    config.model.encoder_width = 256
    config.model.encoder_depth = 2
    config.train.steps = 100_000
    config.train.batch_size = 256
    config.train.learning_rate = 3e-4
    config.train.warmup_steps = 2_000
    config.train.checkpoint_every = 5_000
    config.train.log_every = 1_000
  return config


def get_config(arg: str = "vmd"):
  """Config for one method at a size, or the MDM-then-VMD comparison."""
  parts = arg.split(",")
  method, size = parts[0], parts[1] if len(parts) > 1 else "cpu"
  if len(parts) > 2 or size not in SIZES or method not in (*METHODS, "compare"):
    raise ConfigError(
      f"sudoku config arg {arg!r}: expected <method>[,<size>] with method in "
      f"{sorted(METHODS) + ['compare']} and size in {list(SIZES)}"
    )
  if method != "compare":
    return _single(method, size)
  config = ml_collections.ConfigDict()
  config.task = "compare"
  config.jax_distributed = False
  config.runs = ml_collections.ConfigDict({m: _single(m, size) for m in COMPARED})
  return config
