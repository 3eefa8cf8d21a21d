"""The config schema every experiment starts from, and the method presets (vmd, mdm, global, vmd+).

A plain schema: the fields every task shares, each documented here once, with its default. A task adds
its own fields (vmd_jax/tasks/<task>.py, `add_defaults`); configs/<experiment>.py starts from
`vmd_jax.tasks.base_config(<task>)`, applies a method with `apply_method`, and sets what the experiment
changes. The checks live beside the code that reads each section (see vmd_jax/validation.py).
"""

import ml_collections

from vmd_jax.errors import ConfigError

# method -> (objective, whether the model has a latent, the "section.field" values it sets)
METHODS = {
  "vmd": ("vmd", True, {}),
  "mdm": ("mdm", False, {}),
  "global": ("global", True, {}),
  # the recommended recipe (README, "VMD that never loses"): the bound of its sampler trained step by
  # step (a step uniform among all the steps of the eval NFEs, every masked token scored), the denoiser
  # reading where each step ends; it samples with one z for the steps that reveal several tokens
  # (argmax values where z has made up its mind, p >= eval.confidence) and no latent (z = 0) for the
  # steps that reveal one (a drawn value), and is bounded with the encoder it trained
  "vmd+": (
    "stepwise",
    True,
    {
      "objective.z_policy": "parallel_only",
      "objective.rao_blackwell": True,
      "objective.step_draw": "step",
      "model.time_input": "end",
      "eval.z_policy": "parallel_only",
      "eval.token_rule": "argmax_confident",
      "eval.bound_proposal": "step",
      # a per-position code of (t, z) instead of per-position adaLN MLPs: as good with this objective
      # at a fraction of the cost (the paper's objective trained a weaker VMD on it); README, "How z
      # reaches the denoiser"
      "model.latent_path": "low_rank_adaln",
    },
  ),
  # release 0.4's recipe: a fresh z at the steps that reveal one token, T uniform from the eval NFEs
  # (each but the largest twice), only the revealed tokens scored, argmax at every parallel position
  "vmd+0.4": (
    "stepwise",
    True,
    {
      "objective.z_policy": "scheduled",
      "model.time_input": "end",
      "eval.z_policy": "scheduled",
      "eval.token_rule": "argmax_parallel",
      "eval.bound_proposal": "step",
    },
  ),
}


def _data() -> ml_collections.ConfigDict:
  """The dataset: which one, its size, seed and files (a task adds its own fields)."""
  s = ml_collections.ConfigDict()
  # pair | pair_nonuniform | pair_corr | d1 | d2 | markov | sequences | sudoku | sudoku_file | text8
  # | text_file
  s.name = "d1"
  s.num_train = 100_000
  s.num_test = 10_000
  s.seed = 0  # data generation, split and batch order
  s.data_dir = ml_collections.FieldReference(None, field_type=str)  # tfds dir; None: tfds default
  # name=sequences: a .npy file of token ids; name=sudoku_file: a Shah-format or 'puzzle,solution' CSV file;
  # name=text8: text8.zip, or a folder holding it or the extracted text8 (None: download it);
  # name=text_file: a UTF-8 text file, or a folder whose files (recursively, sorted) form the corpus
  s.path = ml_collections.FieldReference(None, field_type=str)
  s.test_fraction = 0.05  # held-out share for name=sequences, sudoku_file and text_file
  return s


def _model() -> ml_collections.ConfigDict:
  """The denoiser and the posterior encoder."""
  s = ml_collections.ConfigDict()
  s.max_length = 64  # positional table size; must be >= the data's length
  s.width = 64
  s.depth = 3
  s.num_heads = 4
  s.mlp_ratio = 4
  s.dropout = 0.0
  s.latent_dim = 16  # 0 = no latent (MDM)
  s.time_conditioning = True
  s.latent_per_position = True  # each position of a block reads its own map of z_b
  # adaln: z_b in each position's conditioning vector, every layer's adaLN MLP at every position;
  # low_rank_adaln (vmd+'s): each position's code of (t_b, z_b), latent_rank numbers, shifts and scales
  # every layer, the adaLN MLPs once per block; low_rank: z_b in the block's vector and, linear in z, in
  # each position's input. See README, "How z reaches the denoiser".
  s.latent_path = "adaln"
  s.latent_rank = 16
  # block diffusion (BD3-LM): tokens per block, each block with its own t and z; 0 = one block (no blocks)
  s.block_size = 0
  # the time of each sampler step the denoiser reads: start (t_j, as continuous-time objectives train it) |
  # end (s_j = t_{j+1}: how far the step goes, hence how many tokens it reveals; for the stepwise objective)
  s.time_input = "start"
  s.encoder_sees_prefix = False  # block posterior q(z_b | ...) also reads the clean blocks before b
  s.encoder_width = 64
  s.encoder_depth = 1
  s.encoder_init_log_std = 0.0
  # mean | position (a learned weight per position and feature: the mean of a solved Sudoku's cells is
  # nearly the same for every grid, so a mean-pooled encoder cannot tell solutions apart; README)
  s.encoder_pool = "mean"
  s.dtype = "auto"  # computation: auto (bfloat16 on GPU/TPU, float32 on CPU) | float32 | bfloat16
  return s


def _objective() -> ml_collections.ConfigDict:
  """The training objective and the masking schedule."""
  s = ml_collections.ConfigDict()
  s.name = "vmd"  # vmd | mdm | global | stepwise
  s.schedule = "linear"  # linear | cosine | poly<K>
  s.eps = 1e-4  # alpha(1) = eps
  s.antithetic = True  # antithetic (stratified) t across the batch
  s.beta = 1.0  # KL weight after warm-up
  s.kl_warmup_steps = 0  # beta rises linearly from 0 over these steps
  # steps at beta = 0 before the warm-up: the decoder learns to read z before z has a price
  s.kl_hold_steps = 0
  s.free_bits = 0.0  # nats per latent dimension below which the KL is not penalised
  s.kl_time_weight = False  # vmd: whether the KL term carries w(t) (not paid where nothing is masked)
  # stepwise: the sampler step counts (all blocks', like eval.nfes) whose bounds it trains, T drawn uniformly
  # from the list (list one twice to draw it twice as often); (): eval.nfes, each but the largest twice
  s.nfes = ()
  # stepwise: the sampler's z policy whose bound it trains: per_step | scheduled (one z, from q(z | x0),
  # shared by the steps that reveal several tokens; a fresh one for each step that reveals one) |
  # parallel_only (that shared z, and no latent, z = 0, at the steps that reveal one)
  s.z_policy = "per_step"
  # stepwise: where a step's z does not depend on the tokens it reveals (the shared z of scheduled and
  # parallel_only, and parallel_only's z = 0), score every masked token, weighted by the share the step
  # reveals: the same expected loss, lower variance (objectives.stepwise_loss)
  s.rao_blackwell = False
  # stepwise: nfe (T uniform from nfes, then a step j of it) | step (a step uniform among all the steps
  # of the T's in nfes): the same expected loss, the rows spread over steps rather than over T's
  s.step_draw = "nfe"
  return s


def _train() -> ml_collections.ConfigDict:
  """Optimisation, logging and checkpoints."""
  s = ml_collections.ConfigDict()
  s.steps = 6000
  s.batch_size = 128  # global, over all devices and processes, whatever their number
  s.per_device_batch_size = 0  # memory cap per device; gradients accumulate over the rest (0: none)
  s.learning_rate = 1e-3
  s.final_lr_fraction = 0.1
  s.warmup_steps = 200
  s.weight_decay = 0.01
  s.b1 = 0.9
  s.b2 = 0.99
  s.grad_clip = 1.0
  s.ema_decay = 0.999  # 0 disables the EMA; evaluation uses the EMA parameters
  s.log_every = 500
  s.checkpoint_every = 2000
  s.max_to_keep = 2
  return s


def _eval() -> ml_collections.ConfigDict:
  """Sampling, the likelihood bounds and their sample sizes."""
  s = ml_collections.ConfigDict()
  s.nfes = (1, 2, 4)  # sampler steps to evaluate, each in 1..length; (): the task's default
  s.num_samples = 20_000  # samples per NFE for accuracy and KL
  s.batch_size = 5_000
  s.order = "random"  # random | top_prob | margin
  # auto (argmax with a latent, sample without) | argmax | sample | argmax_parallel (argmax at the steps
  # that reveal several tokens, a draw at those that reveal one) | argmax_confident (argmax_parallel,
  # but the argmax only where its probability is at least `confidence`)
  s.token_rule = "auto"
  s.temperature = 1.0
  # token_rule argmax_confident: the top probability from which the mode is taken (chosen on validation
  # draws of the synthetic sets, README "VMD that never loses")
  s.confidence = 0.35
  s.gumbel_scale = 0.0
  # fixed | per_step (within a block) | scheduled (fixed at the steps that reveal several tokens, fresh
  # at those that reveal one) | parallel_only (fixed there, none: z = 0 at those that reveal one)
  s.z_policy = "fixed"
  s.block_z = "fresh"  # block models: fresh (a new z_b ~ N(0, I) per block, the prior) | shared
  s.kv_cache = True  # block models: cache the keys and values of finished blocks
  s.remask_eta = 0.0  # remasking (ReMDM-style capped schedule) for every sampler; 0 = off
  s.bound_examples = 2_000  # test sequences for the likelihood bounds
  s.iwae_k = 16  # importance samples of the headline bound, one token a step (0 disables it)
  s.step_draws = 4  # z_policy per_step: draws of z per step that each importance sample averages
  # the continuous-time bound too (z fixed; infinite variance under the linear schedule), with
  # bound_draws (t, M_t, z) draws per sequence
  s.continuous_bound = False
  s.bound_draws = 64
  # where the bounds draw z from: posterior (the encoder, every position masked; per step, at the step's
  # mask) | prior (N(0, I), no KL) | step (per step: the stepwise encoder, seeing what the step reveals)
  s.bound_proposal = "posterior"
  s.seed = 1
  return s


def base_config() -> ml_collections.ConfigDict:
  """A complete config with library defaults; experiments override parts of it."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # parameter init and the train rng
  c.task = ""  # a name in vmd_jax.tasks.REGISTRY, set by vmd_jax.tasks.base_config(<task>)
  c.label = ""  # the run's name in tables and figures (results' "method"); "": the objective's name
  # call jax.distributed.initialize(): TPU pods, SLURM and Open MPI are detected; elsewhere set
  # VMD_COORDINATOR_ADDRESS, VMD_NUM_PROCESSES and VMD_PROCESS_ID (see vmd_jax/distributed.py)
  c.jax_distributed = False
  c.data = _data()
  c.model = _model()
  c.objective = _objective()
  c.train = _train()
  c.eval = _eval()
  return c


def apply_method(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
  """Set the objective, the latent and the eval sampler for a method name (METHODS)."""
  if method not in METHODS:
    raise ConfigError(f"unknown method {method!r}: choose one of {sorted(METHODS)}")
  objective, has_latent, fields = METHODS[method]
  config.label = method
  config.objective.name = objective
  if not has_latent:
    config.model.latent_dim = 0
  for name, value in fields.items():
    section, field = name.split(".")
    config[section][field] = value
  return config
