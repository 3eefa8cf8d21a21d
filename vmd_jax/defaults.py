"""The defaults every experiment config starts from, and the method presets (vmd, mdm, global).

configs/<experiment>.py calls `base_config()`, applies a method with `apply_method`, and sets what the
experiment changes. Every field is documented here, once.
"""

import ml_collections

from vmd_jax.errors import ConfigError

# method -> (objective, whether the model has a latent)
METHODS = {"vmd": ("vmd", True), "mdm": ("mdm", False), "global": ("global", True)}


def base_config() -> ml_collections.ConfigDict:
  """A complete config with library defaults; experiments override parts of it."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # parameter init and the train rng
  c.task = "synthetic"  # evaluation suite: synthetic | sequences | sudoku
  # call jax.distributed.initialize(): TPU pods, SLURM and Open MPI are detected; elsewhere set
  # VMD_COORDINATOR_ADDRESS, VMD_NUM_PROCESSES and VMD_PROCESS_ID (see vmd_jax/distributed.py)
  c.jax_distributed = False

  c.data = ml_collections.ConfigDict()
  # pair | pair_nonuniform | pair_corr | d1 | d2 | sequences | sudoku | sudoku_file | text8 | text_file
  c.data.name = "d1"
  c.data.p = ml_collections.FieldReference(None, field_type=float)  # pair_corr strength in [0, 1]
  c.data.num_train = 100_000
  c.data.num_test = 10_000
  c.data.seed = 0  # data generation, split and batch order
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # tfds dir; None: tfds default
  # name=sequences: a .npy file of token ids; name=sudoku_file: a Shah-format or 'puzzle,solution' CSV file;
  # name=text8: text8.zip, or a folder holding it or the extracted text8 (None: download it);
  # name=text_file: a UTF-8 text file, or a folder whose files (recursively, sorted) form the corpus
  c.data.path = ml_collections.FieldReference(None, field_type=str)
  c.data.test_fraction = 0.05  # held-out share for name=sequences, sudoku_file and text_file
  c.data.clues = 30  # sudoku: clues left in each generated puzzle (17..80)
  c.data.difficulty = "singles"  # sudoku: singles (solvable by singles) | beyond_singles | any
  c.data.base_train = 10_000  # sudoku: distinct base puzzles behind the train split's symmetry copies
  c.data.vocab_size = ml_collections.FieldReference(None, field_type=int)  # None: max token + 1
  c.data.seq_length = 256  # text8 and text_file: tokens per example
  c.data.level = "char"  # text_file tokens: char | byte (UTF-8) | subword (GPT-2 BPE, the 'text' extra)

  c.model = ml_collections.ConfigDict()
  c.model.max_length = 64  # positional table size; must be >= the data's length
  c.model.width = 64
  c.model.depth = 3
  c.model.num_heads = 4
  c.model.mlp_ratio = 4
  c.model.dropout = 0.0
  c.model.latent_dim = 16  # 0 = no latent (MDM)
  c.model.time_conditioning = True
  c.model.latent_per_position = True  # z projected separately for each position's adaLN
  # block diffusion (BD3-LM): tokens per block, each block with its own t and z; 0 = one block (no blocks)
  c.model.block_size = 0
  c.model.encoder_sees_prefix = False  # block posterior q(z_b | ...) also reads the clean blocks before b
  c.model.encoder_width = 64
  c.model.encoder_depth = 1
  c.model.encoder_init_log_std = 0.0
  c.model.dtype = "auto"  # computation: auto (bfloat16 on GPU/TPU, float32 on CPU) | float32 | bfloat16

  c.objective = ml_collections.ConfigDict()
  c.objective.name = "vmd"  # vmd | mdm | global
  c.objective.schedule = "linear"  # linear | cosine | poly<K>
  c.objective.eps = 1e-4  # alpha(1) = eps
  c.objective.antithetic = True  # antithetic (stratified) t across the batch
  c.objective.beta = 1.0  # KL weight after warm-up
  c.objective.kl_warmup_steps = 0  # beta rises linearly from 0 over these steps
  c.objective.free_bits = 0.0  # nats per latent dimension below which the KL is not penalised
  c.objective.kl_time_weight = False  # vmd: whether the KL term carries w(t) (True collapses z on D1)

  c.train = ml_collections.ConfigDict()
  c.train.steps = 6000
  c.train.batch_size = 128  # global, over all devices and processes, whatever their number
  c.train.per_device_batch_size = 0  # memory cap per device; gradients accumulate over the rest (0: none)
  c.train.learning_rate = 1e-3
  c.train.final_lr_fraction = 0.1
  c.train.warmup_steps = 200
  c.train.weight_decay = 0.01
  c.train.b1 = 0.9
  c.train.b2 = 0.99
  c.train.grad_clip = 1.0
  c.train.ema_decay = 0.999  # 0 disables the EMA; evaluation uses the EMA parameters
  c.train.log_every = 500
  c.train.checkpoint_every = 2000
  c.train.max_to_keep = 2

  c.eval = ml_collections.ConfigDict()
  c.eval.nfes = (1, 2, 4)  # sampler steps to evaluate, each in 1..length
  c.eval.num_samples = 20_000  # samples per NFE for accuracy and KL
  c.eval.batch_size = 5_000
  c.eval.order = "random"  # random | top_prob | margin
  c.eval.decoders = ("margin", "top_prob")  # sudoku: the orders tabulated (the first one is drawn)
  c.eval.token_rule = "auto"  # auto (argmax with a latent, sample without) | argmax | sample
  c.eval.temperature = 1.0
  c.eval.gumbel_scale = 0.0
  c.eval.z_policy = "fixed"  # fixed | per_step (within a block)
  c.eval.block_z = "fresh"  # block models: fresh (a new z_b ~ N(0, I) per block, the prior) | shared
  c.eval.kv_cache = True  # block models: cache the keys and values of finished blocks
  c.eval.remask_eta = 0.0  # remasking (ReMDM-style capped schedule) for every sampler; 0 = off
  c.eval.prompt_length = 0  # text: samples continue the first prompt_length tokens of test sequences
  c.eval.kl_smoothing = 0.01  # pseudo-count per sequence in the empirical model frequencies
  c.eval.bound_examples = 2_000  # test sequences for the likelihood bounds
  c.eval.bound_draws = 64  # (t, M_t, z) draws per sequence for the continuous-time bound
  c.eval.iwae_k = 16  # importance samples for the IWAE bound (0 disables it)
  # where the bounds draw z from: posterior (the encoder, every position masked) | prior (N(0, I), no KL)
  c.eval.bound_proposal = "posterior"
  c.eval.seed = 1
  return c


def apply_method(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
  """Set the objective and latent for a method name: vmd, mdm or global."""
  if method not in METHODS:
    raise ConfigError(f"unknown method {method!r}: choose one of {sorted(METHODS)}")
  objective, has_latent = METHODS[method]
  config.objective.name = objective
  if not has_latent:
    config.model.latent_dim = 0
  return config


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raise ConfigError, naming the field, for values no run could use. Data-dependent checks
  (lengths, NFEs, batch against device count) happen where the data and devices are known."""
  from vmd_jax import evaluation, objectives, samplers, schedules

  o, m, t, e = config.objective, config.model, config.train, config.eval
  _require(
    o.name in objectives.OBJECTIVES,
    f"objective.name={o.name!r}: choose one of {sorted(objectives.OBJECTIVES)}",
  )
  schedules.get_schedule(o.schedule, o.eps)
  _require(0.0 <= o.eps < 1.0, f"objective.eps={o.eps}: must be in [0, 1)")
  has_latent = objectives.needs_latent(o.name)
  _require(
    (m.latent_dim > 0) == has_latent,
    f"model.latent_dim={m.latent_dim}: objective {o.name!r} needs "
    + ("a latent (latent_dim > 0)" if has_latent else "latent_dim = 0"),
  )
  _require(
    o.beta >= 0 and o.free_bits >= 0 and o.kl_warmup_steps >= 0,
    "objective.beta, free_bits and kl_warmup_steps must be >= 0",
  )
  for name in ("width", "depth", "num_heads", "mlp_ratio", "max_length", "encoder_width", "encoder_depth"):
    _require(m[name] > 0, f"model.{name}={m[name]}: must be positive")
  _require(
    m.width % m.num_heads == 0 and m.encoder_width % m.num_heads == 0,
    f"model.num_heads={m.num_heads} must divide model.width and model.encoder_width",
  )
  _require(0.0 <= m.dropout < 1.0, f"model.dropout={m.dropout}: must be in [0, 1)")
  dtypes = ["auto", "bfloat16", "float32"]
  _require(m.dtype in dtypes, f"model.dtype={m.dtype!r}: choose one of {dtypes}")
  per_device = t.per_device_batch_size
  _require(per_device >= 0, f"train.per_device_batch_size={per_device}: must be >= 0")
  for name in ("steps", "batch_size", "log_every", "checkpoint_every", "max_to_keep"):
    _require(t[name] > 0, f"train.{name}={t[name]}: must be positive")
  _require(t.learning_rate > 0, f"train.learning_rate={t.learning_rate}: must be positive")
  _require(0.0 <= t.ema_decay < 1.0, f"train.ema_decay={t.ema_decay}: must be in [0, 1)")
  _require(t.warmup_steps >= 0, f"train.warmup_steps={t.warmup_steps}: must be >= 0")
  _require(e.order in samplers.ORDERS, f"eval.order={e.order!r}: choose one of {sorted(samplers.ORDERS)}")
  rules = sorted(samplers.TOKEN_RULES) + ["auto"]
  _require(e.token_rule in rules, f"eval.token_rule={e.token_rule!r}: choose one of {rules}")
  _require(
    e.z_policy in samplers.Z_POLICIES,
    f"eval.z_policy={e.z_policy!r}: choose one of {sorted(samplers.Z_POLICIES)}",
  )
  _require(len(e.nfes) > 0, "eval.nfes is empty")
  _require(m.block_size >= 0, f"model.block_size={m.block_size}: must be >= 0 (0: no blocks)")
  _require(
    e.block_z in samplers.BLOCK_Z_POLICIES,
    f"eval.block_z={e.block_z!r}: choose one of {list(samplers.BLOCK_Z_POLICIES)}",
  )
  _require(0.0 <= e.remask_eta <= 1.0, f"eval.remask_eta={e.remask_eta}: must be in [0, 1]")
  _require(e.prompt_length >= 0, f"eval.prompt_length={e.prompt_length}: must be >= 0")
  _require(
    e.bound_proposal in objectives.PROPOSALS,
    f"eval.bound_proposal={e.bound_proposal!r}: choose one of {list(objectives.PROPOSALS)}",
  )
  bad_decoders = [d for d in e.decoders if d not in samplers.ORDERS]
  _require(
    len(e.decoders) > 0 and not bad_decoders,
    f"eval.decoders={tuple(e.decoders)}: each must be one of {sorted(samplers.ORDERS)}",
  )
  for name in ("num_samples", "batch_size", "bound_examples", "bound_draws"):
    _require(e[name] > 0, f"eval.{name}={e[name]}: must be positive")
  _require(e.iwae_k >= 0 and e.kl_smoothing > 0, "eval.iwae_k must be >= 0 and eval.kl_smoothing > 0")
  _require(
    config.task in evaluation.EVALUATORS,
    f"task={config.task!r}: choose one of {sorted(evaluation.EVALUATORS)}",
  )
  puzzles = config.data.name in ("sudoku", "sudoku_file")
  _require(
    (config.task == "sudoku") == puzzles,
    f"task={config.task!r} and data.name={config.data.name!r}: the sudoku task goes with the sudoku "
    "and sudoku_file datasets, and only with them",
  )
  _require(
    not (config.task == "sudoku" and m.block_size),
    f"model.block_size={m.block_size}: the sudoku task has no block diffusion (use 0)",
  )
  from vmd_jax.data.text import LEVELS

  _require(config.data.level in LEVELS, f"data.level={config.data.level!r}: choose one of {list(LEVELS)}")
  _require(config.data.seq_length > 0, f"data.seq_length={config.data.seq_length}: must be positive")
