"""Samplers for masked diffusion: reveal the masked tokens of x_1 over nfe denoiser calls.

x_t holds tokens in {0..V-1} and the mask id V. Step j = 0..nfe-1 goes from t_j = 1 - j/nfe to
t_{j+1}: the denoiser gives logits of p_theta(x_0 | x_t, t_j, z), every position gets a candidate
value (the token rule) and a score (the order rule), and the highest-scoring masked positions are
revealed, as many as the schedule says stop being masked between t_j and t_{j+1}
(`remaining_masked`). With the 'random' order this is the ancestral sampler of the MDM; 'top_prob'
and 'margin' reveal the positions where the denoiser is most confident first.

For VMD the denoiser is conditioned on z ~ N(0, I), drawn once per sequence ('fixed', as the VMD
paper samples), anew at every step ('per_step', as VADD does), or 'scheduled': the fixed z at the
steps where the schedule reveals several tokens of a row (parallel steps), a fresh one at the steps
that reveal one, or 'parallel_only': the fixed z at parallel steps and z = 0 (no latent) at the others;
for the MDM latent_dim = 0 and the denoiser gets z = None. Token values are the denoiser's argmax, a
draw at the temperature, 'argmax_parallel' (the argmax at parallel steps and a draw at the others) or
'argmax_confident' (as argmax_parallel, but the argmax only where its probability reaches
options.confidence).

Remasking (remask_eta > 0, in the manner of ReMDM's capped schedule): at step j a share
sigma_j = min(eta, (1 - alpha(t_{j+1})) / alpha(t_j)) of the tokens the sampler has revealed so far,
chosen uniformly, is masked again, and as many more masked positions are revealed, so the number of
masks after each step still follows the schedule; the last step remasks nothing.

`make_block_sampler` generates block diffusion models: blocks left to right, each with the steps above
against the clean blocks before it, whose keys and values are cached (or recomputed, for reference).
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vmd_jax.errors import ConfigError
from vmd_jax.schedules import TIME_INPUTS, Schedule, remaining_masked, step_time

# denoise_fn(params, x_t [batch, length] int32, t [batch] float32, z [batch, d] or None)
#   -> logits [batch, length, vocab] float32
DenoiseFn = Callable[[Any, jax.Array, jax.Array, jax.Array | None], jax.Array]


class SampleResult(NamedTuple):
  """The sampled x_0 and the step at which each of its positions was revealed."""

  tokens: jax.Array  # [batch, length] int32, no mask id left
  reveal_step: jax.Array  # [batch, length] int32 in 0..nfe-1, -1 where the token was given


def _random_score(logits: jax.Array, key: jax.Array) -> jax.Array:
  """Uniform scores: a uniformly random set of positions is revealed, as in ancestral sampling."""
  return jax.random.uniform(key, logits.shape[:-1])  # [batch, length]


def _top_prob_score(logits: jax.Array, key: jax.Array) -> jax.Array:
  """max_v p_theta(x_0 = v | x_t): the denoiser's confidence in its top token."""
  del key
  return jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1)  # [batch, length]


def _margin_score(logits: jax.Array, key: jax.Array) -> jax.Array:
  """p(top token) - p(second token): confident and unambiguous positions first."""
  del key
  top2 = jax.lax.top_k(jax.nn.softmax(logits, axis=-1), 2)[0]  # [batch, length, 2]
  return top2[..., 0] - top2[..., 1]


def _argmax_tokens(logits: jax.Array, key: jax.Array, options, parallel: jax.Array) -> jax.Array:
  """The mode of p_theta(x_0 | x_t) at every position (the temperature does not change it)."""
  del key, options, parallel
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [batch, length]


def _sample_tokens(logits: jax.Array, key: jax.Array, options, parallel: jax.Array) -> jax.Array:
  """A draw from softmax(logits / temperature) at every position."""
  del parallel
  return jax.random.categorical(key, logits / options.temperature, axis=-1).astype(jnp.int32)


def _argmax_parallel_tokens(logits, key, options, parallel):
  """The mode given z in a row whose step reveals several tokens (z's joint choice), a draw at
  temperature where it reveals one (its value then needs no agreement with others)."""
  sampled = _sample_tokens(logits, key, options, parallel)
  return jnp.where(parallel[:, None], _argmax_tokens(logits, key, options, parallel), sampled)


def _argmax_confident_tokens(logits, key, options, parallel):
  """argmax_parallel where z has made up its mind: the mode at a position of a parallel step whose top
  probability (at temperature 1) is at least options.confidence, a draw at temperature elsewhere. A
  token that z determines is taken as z's choice; one that z leaves open keeps its spread."""
  top = jnp.max(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), axis=-1)  # [batch, length]
  mode = parallel[:, None] & (top >= options.confidence)
  sampled = _sample_tokens(logits, key, options, parallel)
  return jnp.where(mode, _argmax_tokens(logits, key, options, parallel), sampled)


def _fixed_z(key: jax.Array, step: jax.Array, parallel: jax.Array, shape) -> jax.Array:
  """The same z at every step: one z per sequence for the whole trajectory."""
  del step, parallel
  return jax.random.normal(key, shape)


def _per_step_z(key: jax.Array, step: jax.Array, parallel: jax.Array, shape) -> jax.Array:
  """A fresh z ~ N(0, I) at every denoiser call."""
  del parallel
  return jax.random.normal(jax.random.fold_in(key, step), shape)


def _scheduled_z(key: jax.Array, step: jax.Array, parallel: jax.Array, shape) -> jax.Array:
  """The sequence's fixed z in a row whose step reveals several tokens, a fresh one where it reveals
  one: z ties together the tokens revealed at once, and a lone token needs no partner."""
  fixed, fresh = _fixed_z(key, step, parallel, shape), _per_step_z(key, step, parallel, shape)
  return jnp.where(parallel[:, None], fixed, fresh)


def _parallel_only_z(key: jax.Array, step: jax.Array, parallel: jax.Array, shape) -> jax.Array:
  """The sequence's fixed z in a row whose step reveals several tokens, none (the fixed input z = 0,
  at which the zero-initialised latent paths start out adding nothing) where it reveals one: a lone
  token's law is a categorical, which the denoiser gives directly, so a latent there could only cost
  bits."""
  return jnp.where(parallel[:, None], _fixed_z(key, step, parallel, shape), 0.0)


# score(logits [batch, length, vocab], key) -> [batch, length]; higher is revealed first.
ORDERS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
  "random": _random_score,
  "top_prob": _top_prob_score,
  "margin": _margin_score,
}
# tokens(logits [batch, length, vocab], key, SamplerOptions, parallel [batch] bool: the row's step reveals
# more than one token) -> candidate x_0 [batch, length] int32.
TOKEN_RULES: dict[str, Callable[..., jax.Array]] = {
  "argmax": _argmax_tokens,
  "sample": _sample_tokens,
  "argmax_parallel": _argmax_parallel_tokens,
  "argmax_confident": _argmax_confident_tokens,
}
# z(key, step, parallel [batch] bool, shape [batch, latent_dim]) -> that step's z.
Z_POLICIES: dict[str, Callable[..., jax.Array]] = {
  "fixed": _fixed_z,
  "per_step": _per_step_z,
  "scheduled": _scheduled_z,
  "parallel_only": _parallel_only_z,
}


BLOCK_Z_POLICIES = ("fresh", "shared")


@dataclasses.dataclass(frozen=True)
class SamplerOptions:
  """How a sampler chooses positions and values: one object for both samplers, built once.

  order: which masked positions are revealed first (a name in ORDERS); token_rule: how a revealed
  position's value is chosen (TOKEN_RULES); temperature: of the sampled values; confidence: the top
  probability above which token_rule argmax_confident takes the mode at a parallel step; gumbel_scale: Gumbel
  noise added to the order's scores; z_policy: one z per sequence or block ('fixed'), one per step
  ('per_step'), the fixed z at parallel steps and a fresh one elsewhere ('scheduled'), or the fixed z at
  parallel steps and none (z = 0) elsewhere ('parallel_only'); remask_eta:
  remasking share cap, 0 = off; block_z (block models): a fresh z_b ~ N(0, I) per block or one shared
  z; kv_cache (block models): cache the keys and values of finished blocks. Raises ConfigError,
  naming the option, for an unknown name or a number out of range.
  """

  order: str = "random"
  token_rule: str = "sample"
  temperature: float = 1.0
  confidence: float = 0.35
  gumbel_scale: float = 0.0
  z_policy: str = "fixed"
  remask_eta: float = 0.0
  block_z: str = "fresh"
  kv_cache: bool = True

  def __post_init__(self):
    for option, registry in (
      ("order", ORDERS),
      ("token_rule", TOKEN_RULES),
      ("z_policy", Z_POLICIES),
      ("block_z", BLOCK_Z_POLICIES),
    ):
      if getattr(self, option) not in registry:
        raise ConfigError(f"{option}={getattr(self, option)!r}: choose one of {', '.join(registry)}")
    if not 0.0 <= self.remask_eta <= 1.0:
      raise ConfigError(f"remask_eta={self.remask_eta}: must be in [0, 1]")
    if self.temperature <= 0:
      raise ConfigError(f"temperature={self.temperature}: must be positive")
    if not 0.0 <= self.confidence <= 1.0:  # also rejects NaN
      raise ConfigError(f"confidence={self.confidence}: must be in [0, 1]")
    if self.gumbel_scale < 0:
      raise ConfigError(f"gumbel_scale={self.gumbel_scale}: must be non-negative")

  def replace(self, **changes) -> "SamplerOptions":
    """A copy with some options changed (checked again)."""
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_config(cls, eval_config, has_latent: bool) -> "SamplerOptions":
    """The options a config's `eval` section names. token_rule 'auto' resolves to argmax given z for
    latent models (the paper's VMD sampler) and to sample for an MDM. Errors name the eval field."""
    e = eval_config
    rule = e.token_rule
    if rule == "auto":
      rule = "argmax" if has_latent else "sample"
    try:
      return cls(
        order=e.order,
        token_rule=rule,
        temperature=e.temperature,
        confidence=e.confidence,
        gumbel_scale=e.gumbel_scale,
        z_policy=e.z_policy,
        remask_eta=e.remask_eta,
        block_z=e.block_z,
        kv_cache=e.kv_cache,
      )
    except ConfigError as error:
      raise ConfigError(f"eval.{error}") from None


def _reveal(
  x: jax.Array,
  reveal_step: jax.Array,
  candidates: jax.Array,
  score: jax.Array,
  num_reveal: jax.Array,
  step: jax.Array,
  mask_id: int,
) -> tuple[jax.Array, jax.Array]:
  """Write candidates at the num_reveal highest-scoring masked positions of each row.

  x, reveal_step, candidates, score: [batch, length]; num_reveal: [batch]. The count differs between
  rows, so the top-k is taken through ranks rather than lax.top_k, whose k must be static.
  """
  masked = x == mask_id  # [batch, length]
  # -inf puts every given or already revealed position behind all masked ones.
  score = jnp.where(masked, score, -jnp.inf)
  rank = jnp.argsort(jnp.argsort(-score, axis=-1), axis=-1)  # [batch, length], 0 = highest score
  reveal = masked & (rank < num_reveal[:, None])  # [batch, length]
  return jnp.where(reveal, candidates, x), jnp.where(reveal, step, reveal_step)


def _remask(x, sampled, num_remask, key, mask_id):
  """Mask again num_remask [batch] uniformly chosen positions of `sampled` [batch, n] (revealed by the
  sampler, not given) in x [batch, n]."""
  score = jnp.where(sampled, jax.random.uniform(key, x.shape), -jnp.inf)
  rank = jnp.argsort(jnp.argsort(-score, axis=-1), axis=-1)
  return jnp.where(sampled & (rank < num_remask[:, None]), mask_id, x)


class _Steps(NamedTuple):
  """The reveal loop's resolved options: the step count, the schedule and the looked-up rules."""

  nfe: int
  mask_id: int
  schedule: Schedule
  score_fn: Callable[[jax.Array, jax.Array], jax.Array]
  token_fn: Callable[..., jax.Array]
  z_fn: Callable[..., jax.Array]
  latent_dim: int
  options: SamplerOptions
  time_input: str


def _steps(
  nfe: int, mask_id: int, schedule: Schedule, latent_dim: int, options: SamplerOptions, time_input: str
) -> _Steps:
  """Resolve the options' names to their functions (ConfigError for nfe or latent_dim out of range)."""
  if nfe < 1:
    raise ConfigError(f"nfe must be at least 1, got {nfe}")
  if latent_dim < 0:
    raise ConfigError(f"latent_dim must be non-negative, got {latent_dim}")
  if time_input not in TIME_INPUTS:
    raise ConfigError(f"time_input={time_input!r}: choose one of {', '.join(TIME_INPUTS)}")
  return _Steps(
    nfe=nfe,
    mask_id=mask_id,
    schedule=schedule,
    score_fn=ORDERS[options.order],
    token_fn=TOKEN_RULES[options.token_rule],
    z_fn=Z_POLICIES[options.z_policy],
    latent_dim=latent_dim,
    options=options,
    time_input=time_input,
  )


def _reveal_loop(opts: _Steps, logits_fn, x_init, z_key, loop_key, first_step=0):
  """Run opts.nfe reveal steps on x_init [batch, n]: logits_fn(x, t [batch], z) -> [batch, n, vocab].

  z is drawn from z_key (under opts.z_fn), everything else from loop_key. Returns (tokens,
  reveal_step) [batch, n]; reveal steps are numbered from first_step.
  """
  batch = x_init.shape[0]
  x_init = x_init.astype(jnp.int32)
  given = x_init != opts.mask_id
  remaining = remaining_masked(opts.schedule, jnp.sum(~given, axis=-1), opts.nfe)  # [nfe + 1, batch]
  alpha, o = opts.schedule.alpha, opts.options

  def step(j, carry):
    x, reveal_step = carry
    keys = jax.random.split(jax.random.fold_in(loop_key, j), 4)
    parallel = remaining[j] - remaining[j + 1] > 1  # [batch]: the schedule reveals several tokens
    z = None
    if opts.latent_dim > 0:
      # the step counted over the whole run, so that per-step z's differ between blocks (block_z shared)
      z = opts.z_fn(z_key, first_step + j, parallel, (batch, opts.latent_dim))
    t = jnp.full((batch,), step_time(j, opts.nfe, opts.time_input), jnp.float32)
    logits = logits_fn(x, t, z)  # [batch, n, vocab]
    candidates = opts.token_fn(logits, keys[0], o, parallel)  # [batch, n]
    score = opts.score_fn(logits, keys[1])  # [batch, n]
    if o.gumbel_scale > 0:
      score = score + o.gumbel_scale * jax.random.gumbel(keys[2], score.shape)
    num_remask = jnp.zeros((batch,), jnp.int32)
    if o.remask_eta > 0:
      s = 1.0 - (j + 1) / opts.nfe
      sigma = jnp.minimum(o.remask_eta, (1.0 - alpha(s)) / alpha(1.0 - j / opts.nfe))
      sampled = (x != opts.mask_id) & ~given
      num_remask = jnp.floor(sigma * jnp.sum(sampled, axis=-1)).astype(jnp.int32)
      num_remask = jnp.minimum(num_remask, remaining[j + 1])  # never more masks than the schedule keeps
    num_reveal = jnp.sum(x == opts.mask_id, axis=-1) - remaining[j + 1] + num_remask  # [batch]
    new_x, reveal_step = _reveal(x, reveal_step, candidates, score, num_reveal, first_step + j, opts.mask_id)
    if o.remask_eta > 0:
      new_x = _remask(new_x, (x != opts.mask_id) & ~given, num_remask, keys[3], opts.mask_id)
    return new_x, reveal_step

  return jax.lax.fori_loop(0, opts.nfe, step, (x_init, jnp.full_like(x_init, -1)))


def make_sampler(
  denoise_fn: DenoiseFn,
  *,
  nfe: int,
  mask_id: int,
  schedule: Schedule,
  latent_dim: int = 0,
  options: SamplerOptions = SamplerOptions(),
  time_input: str = "start",
) -> Callable[[Any, jax.Array, jax.Array], SampleResult]:
  """A jitted sampler (params, key, x_init [batch, length] int32) -> SampleResult.

  x_init has mask_id at the positions to generate and given tokens (clues, prompts) elsewhere, which
  are kept. The sampler makes exactly nfe denoiser calls, at t_j = 1 - j/nfe for j = 0..nfe-1 (or at
  the step's end 1 - (j+1)/nfe with time_input 'end', for a denoiser trained so), and
  after step j leaves remaining_masked(schedule, m, nfe)[j + 1] positions of a row masked, where m is
  the row's initial number of masks. latent_dim > 0 gives the denoiser a z ~ N(0, I) of that size;
  `options` (SamplerOptions) picks the order, token rule, z policy and remasking (module docstring).
  Raises ConfigError for nfe < 1 or (at the first call) nfe > length.
  """
  opts = _steps(nfe, mask_id, schedule, latent_dim, options, time_input)

  @jax.jit
  def sample(params: Any, key: jax.Array, x_init: jax.Array) -> SampleResult:
    if nfe > x_init.shape[1]:
      raise ConfigError(f"nfe must be at most the sequence length {x_init.shape[1]}, got {nfe}")
    logits_fn = lambda x, t, z: denoise_fn(params, x, t, z)  # noqa: E731
    return SampleResult(*_reveal_loop(opts, logits_fn, x_init, *jax.random.split(key)))

  return sample


class BlockModelFns(NamedTuple):
  """The pure functions of a block diffusion model that the block sampler calls.

  denoise(params, x_t [batch, L], t [batch, blocks], z [batch, blocks, d] or None, context [batch, L])
    -> logits [batch, L, vocab]: the whole-sequence denoiser (the uncached path).
  denoise_cached(params, x_block [batch, k], t [batch], z [batch, d] or None, cache, offset)
    -> logits [batch, k, vocab]: one noisy block against the cached clean blocks before `offset`.
  cache_block(params, x0_block [batch, k], cache, offset) -> per layer (keys, values), each
    [batch, k, heads, head_dim]: the clean block at `offset`.
  empty_cache(batch, length) -> per layer (keys, values), each [batch, length, heads, head_dim] zeros.
  """

  denoise: Callable[..., jax.Array]
  denoise_cached: Callable[..., jax.Array]
  cache_block: Callable[..., Any]
  empty_cache: Callable[[int, int], Any]


def _block_logits_fn(fns: BlockModelFns, params, x, cache, offset, block_size: int, mask_id: int):
  """logits_fn(x_block, t [batch], z) -> [batch, block_size, vocab] of the block at `offset` of x
  [batch, L], against the cached clean blocks before it (cache given) or, with cache None, through the
  whole-sequence denoiser with the clean blocks of x as context."""
  if cache is not None:
    return lambda xb, t, z: fns.denoise_cached(params, xb, t, z, cache, offset)
  batch, blocks = x.shape[0], x.shape[1] // block_size

  def logits_fn(xb, t, z):
    x_t = jax.lax.dynamic_update_slice_in_dim(jnp.full_like(x, mask_id), xb, offset, axis=1)
    t_all = jnp.broadcast_to(t[:, None], (batch, blocks))
    z_all = None if z is None else jnp.broadcast_to(z[:, None], (batch, blocks, z.shape[-1]))
    logits = fns.denoise(params, x_t, t_all, z_all, x)
    return jax.lax.dynamic_slice_in_dim(logits, offset, block_size, axis=1)

  return logits_fn


def make_block_sampler(
  fns: BlockModelFns,
  *,
  block_size: int,
  nfe_per_block: int,
  mask_id: int,
  schedule: Schedule,
  latent_dim: int = 0,
  options: SamplerOptions = SamplerOptions(),
  time_input: str = "start",
) -> Callable[[Any, jax.Array, jax.Array], SampleResult]:
  """A jitted block sampler (params, key, x_init [batch, L]) -> SampleResult, L a multiple of block_size.

  Blocks are generated left to right; block b runs the nfe_per_block steps of `make_sampler` (same
  options) against the clean blocks before it, then becomes clean itself. Given tokens of x_init (a
  prompt, anywhere) are kept. options.block_z: 'fresh' draws an independent z_b ~ N(0, I) for every
  block (the model's prior), 'shared' uses one z for all blocks; with options.z_policy 'per_step'
  every step of every block draws its own z, whatever block_z says (with 'scheduled', the steps that
  reveal one token do). options.kv_cache: keep the keys and values of finished blocks (each block's
  clean tokens pass through the network once); otherwise every denoiser call runs the whole sequence
  (same logits, for reference and benchmarks). reveal_step counts steps over the whole run (block b's
  steps are b * nfe_per_block + j).
  """
  opts = _steps(nfe_per_block, mask_id, schedule, latent_dim, options, time_input)
  block_z, cached = options.block_z, options.kv_cache
  if block_size < 1 or nfe_per_block > block_size:
    raise ConfigError(f"need 1 <= nfe per block ({nfe_per_block}) <= block size ({block_size})")

  @jax.jit
  def sample(params: Any, key: jax.Array, x_init: jax.Array) -> SampleResult:
    batch, length = x_init.shape
    if length % block_size:
      raise ConfigError(f"the sequence length {length} is not a multiple of the block size {block_size}")
    blocks = length // block_size
    z_key, loop_key = jax.random.split(key)

    def one_block(b, carry):
      x, reveal_step, cache = carry
      offset = b * block_size
      block_z_key = jax.random.fold_in(z_key, b) if block_z == "fresh" else z_key
      x_block = jax.lax.dynamic_slice_in_dim(x, offset, block_size, axis=1)
      logits_fn = _block_logits_fn(fns, params, x, cache, offset, block_size, mask_id)
      block_loop_key = jax.random.fold_in(loop_key, b)
      done, steps = _reveal_loop(opts, logits_fn, x_block, block_z_key, block_loop_key, b * nfe_per_block)
      x = jax.lax.dynamic_update_slice_in_dim(x, done, offset, axis=1)
      reveal_step = jax.lax.dynamic_update_slice_in_dim(reveal_step, steps, offset, axis=1)
      if cached:
        kvs = fns.cache_block(params, done, cache, offset)
        cache = jax.tree.map(
          lambda full, new: jax.lax.dynamic_update_slice_in_dim(full, new.astype(full.dtype), offset, axis=1),
          cache,
          kvs,
        )
      return x, reveal_step, cache

    cache = fns.empty_cache(batch, length) if cached else None
    init = (x_init.astype(jnp.int32), jnp.full(x_init.shape, -1, jnp.int32), cache)
    tokens, reveal_step, _ = jax.lax.fori_loop(0, blocks, one_block, init)
    return SampleResult(tokens=tokens, reveal_step=reveal_step)

  return sample
