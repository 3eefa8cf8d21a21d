"""One trainer for every experiment: state, data-parallel train step, loop, checkpoints and metrics.

Data parallelism is jit over a 1-D device mesh with axis 'data': the state is replicated, each global
batch is sharded along its first axis, and XLA inserts the gradient all-reduce (the modern form of
pmap + pmean). Several hosts work the same way: each process loads its own slice of the global batch
and the slices are joined into one global array. The objective is reached only through
`objectives.loss_fn`.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from vmd_jax import checkpoints, objectives
from vmd_jax.data import pipeline
from vmd_jax.errors import ConfigError
from vmd_jax.metrics import MetricWriter, Progress
from vmd_jax.networks import Denoiser, PosteriorEncoder, VMDModel


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data position (which is a function of step)."""

  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any
  rng: jax.Array


def build_model(config, vocab_size: int, length: int) -> VMDModel:
  """The model a config describes, for data of the given vocabulary and sequence length."""
  m = config.model
  if length > m.max_length:
    raise ConfigError(f"model.max_length={m.max_length} is shorter than the data's length {length}")
  denoiser = Denoiser(
    vocab_size=vocab_size,
    max_length=m.max_length,
    width=m.width,
    depth=m.depth,
    num_heads=m.num_heads,
    mlp_ratio=m.mlp_ratio,
    dropout=m.dropout,
    latent_dim=m.latent_dim,
    time_conditioning=m.time_conditioning,
    latent_per_position=m.latent_per_position,
  )
  encoder = None
  if m.latent_dim > 0:
    encoder = PosteriorEncoder(
      vocab_size=vocab_size,
      max_length=m.max_length,
      latent_dim=m.latent_dim,
      width=m.encoder_width,
      depth=m.encoder_depth,
      num_heads=m.num_heads,
      mlp_ratio=m.mlp_ratio,
      init_log_std=m.encoder_init_log_std,
    )
  return VMDModel(denoiser=denoiser, encoder=encoder)


def make_optimizer(train_config) -> optax.GradientTransformation:
  """AdamW with linear warm-up and cosine decay, after global-norm gradient clipping."""
  c = train_config
  lr = optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=c.learning_rate,
    warmup_steps=c.warmup_steps,
    decay_steps=max(c.steps, c.warmup_steps + 1),
    end_value=c.learning_rate * c.final_lr_fraction,
  )
  return optax.chain(
    optax.clip_by_global_norm(c.grad_clip),
    optax.adamw(lr, b1=c.b1, b2=c.b2, weight_decay=c.weight_decay),
  )


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh with axis 'data' over the given devices (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices), ("data",), axis_types=(AxisType.Auto,))


def init_state(model, tx, config, length: int, mesh) -> TrainState:
  """A fresh, replicated TrainState from config.seed."""
  key = jax.random.PRNGKey(config.seed)

  def init(key):
    init_key, rng = jax.random.split(key)
    x0 = jnp.zeros((1, length), jnp.int32)
    params = model.init(init_key, x0, jnp.ones((1, length), bool), jnp.ones((1,)))
    return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), ema_params=params, rng=rng
    )

  return jax.jit(init, out_shardings=NamedSharding(mesh, P()))(key)


def make_train_step(model, tx, settings: objectives.ObjectiveSettings, ema_decay: float, mesh):
  """The jit-compiled step (state, batch) -> (state, metrics), with the batch sharded over 'data'."""

  def train_step(state: TrainState, batch):
    rng, step_key = jax.random.split(state.rng)

    def loss(params):
      return objectives.loss_fn(model, params, batch, step_key, settings, state.step)

    (_, metrics), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # The decay ramps up as (1 + step) / (10 + step), so that short runs' EMA is not the init.
    decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
    ema_params = optax.incremental_update(params, state.ema_params, 1.0 - decay)
    metrics["grad_norm"] = optax.tree.norm(grads)
    new_state = TrainState(
      step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params, rng=rng
    )
    return new_state, metrics

  replicated = NamedSharding(mesh, P())
  return jax.jit(
    train_step,
    in_shardings=(replicated, NamedSharding(mesh, P("data"))),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )


def global_batch(tokens: np.ndarray, step: int, config, mesh) -> dict[str, jax.Array]:
  """This process's slice of global batch `step`, joined with the other processes' into one array."""
  local = pipeline.process_batch(
    tokens, step, config.train.batch_size, config.data.seed, jax.process_index(), jax.process_count()
  )
  sharding = NamedSharding(mesh, P("data"))
  return {"tokens": jax.make_array_from_process_local_data(sharding, local)}


def check_batch_size(config, mesh) -> None:
  """The global batch must split evenly over devices and processes."""
  batch, n = config.train.batch_size, mesh.devices.size
  if batch <= 0 or batch % n or batch % jax.process_count():
    raise ConfigError(f"train.batch_size={batch} must be a positive multiple of the device count {n}")


class Run:
  """A model, its optimiser and train state for one config, restored from workdir when possible."""

  def __init__(self, config, workdir: str, dataset, mesh=None):
    self.config, self.workdir, self.dataset = config, workdir, dataset
    self.mesh = make_mesh() if mesh is None else mesh
    check_batch_size(config, self.mesh)
    self.model = build_model(config, dataset.vocab_size, dataset.length)
    self.tx = make_optimizer(config.train)
    self.settings = objectives.settings_from_config(config.objective)
    self.checkpointer = checkpoints.Checkpointer(workdir, config.train.max_to_keep)
    self.state = init_state(self.model, self.tx, config, dataset.length, self.mesh)
    latest = self.checkpointer.latest_step()
    if latest is not None:
      self.checkpointer.check_matches(latest, config)
      self.state, _ = self.checkpointer.restore(latest, checkpoints.abstract_like(self.state))

  @property
  def step(self) -> int:
    """The number of train steps taken so far."""
    return int(self.state.step)

  def eval_params(self):
    """EMA parameters when an EMA is kept, else the raw parameters."""
    return self.state.ema_params if self.config.train.ema_decay > 0 else self.state.params

  def save(self) -> None:
    """Checkpoint the current state with the data position and the config fingerprint."""
    meta = {
      "step": self.step,
      "data_position": {
        "next_batch": self.step,
        "global_batch": self.config.train.batch_size,
        "seed": self.config.data.seed,
      },
      "fingerprint": checkpoints.fingerprint(self.config),
    }
    self.checkpointer.save(self.step, self.state, meta)

  def train(self, until_step: int | None = None) -> None:
    """Train from the current step to config.train.steps (or until_step), checkpointing on the way."""
    c = self.config.train
    end = c.steps if until_step is None else min(until_step, c.steps)
    if self.step >= end:
      return
    step_fn = make_train_step(self.model, self.tx, self.settings, c.ema_decay, self.mesh)
    writer = MetricWriter(self.workdir)
    step = self.step  # counted on the host
    progress = Progress(c.steps, step)
    history = []
    while step < end:
      batch = global_batch(self.dataset.train, step, self.config, self.mesh)
      # One step in flight at most: the host prepares this batch while the previous step runs. Deeper
      # queues stalled XLA's CPU all-reduce rendezvous on forced host devices (and abort the process).
      jax.block_until_ready(self.state.step)
      self.state, metrics = step_fn(self.state, batch)
      history.append(metrics)
      step += 1
      if step % c.log_every == 0 or step == end:
        means = {k: float(np.mean([jax.device_get(m[k]) for m in history])) for k in history[0]}
        history = []
        writer.write(step, means)
        if jax.process_index() == 0:
          print(progress.line(step, {k: means[k] for k in ("loss", "kl") if k in means}), flush=True)
      if step % c.checkpoint_every == 0 or step == end:
        self.save()
    writer.close()

  def close(self) -> None:
    """Finish pending checkpoint writes."""
    self.checkpointer.close()
