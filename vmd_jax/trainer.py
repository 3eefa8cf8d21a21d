"""One trainer for every experiment: state, data-parallel train step, loop, checkpoints and metrics.

Data parallelism is jit over a 1-D device mesh with axis 'data': the state is replicated, each global
batch is sharded along its batch axis, and XLA inserts the gradient all-reduce (the modern form of
pmap + pmean). Several hosts work the same way: each process loads its own slice of the global batch
and the slices are joined into one global array. The global batch is fixed by the config; when
train.per_device_batch_size caps what a device holds, the step accumulates gradients over
microbatches. The objective is reached only through `objectives.loss_fn`.

The loop survives what pods do to it: SIGTERM (a preemption) saves a checkpoint and returns; a step
whose loss or gradient is not finite is not applied, and the run stops with the last good checkpoint
kept; a run killed at any moment resumes from its checkpoint to exactly the uninterrupted result.
"""

import contextlib
import signal
import threading
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from vmd_jax import checkpoints, distributed, objectives
from vmd_jax.data import pipeline
from vmd_jax.errors import ConfigError, TrainingError
from vmd_jax.metrics import MetricWriter, Progress
from vmd_jax.model import build_model


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data position (which is a function of step)."""

  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any
  rng: jax.Array


def check_config(train_config) -> None:
  """Raise ConfigError, naming the field, for train options no run could use."""
  t = train_config
  if t.per_device_batch_size < 0:
    raise ConfigError(f"train.per_device_batch_size={t.per_device_batch_size}: must be >= 0")
  for name in ("steps", "batch_size", "log_every", "checkpoint_every", "max_to_keep"):
    if t[name] <= 0:
      raise ConfigError(f"train.{name}={t[name]}: must be positive")
  if t.learning_rate <= 0:
    raise ConfigError(f"train.learning_rate={t.learning_rate}: must be positive")
  if not 0.0 <= t.ema_decay < 1.0:
    raise ConfigError(f"train.ema_decay={t.ema_decay}: must be in [0, 1)")
  if t.warmup_steps < 0:
    raise ConfigError(f"train.warmup_steps={t.warmup_steps}: must be >= 0")


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
  """The jit-compiled step (state, batch) -> (state, metrics).

  batch["tokens"] (and batch["given"], if any) is [accumulation, microbatch, length], sharded over 'data'
  along the microbatch axis;
  the gradient is the mean over the microbatches. A step whose loss or gradient norm is not finite
  leaves the state unchanged and reports metrics["finite"] = False.
  """

  def grads_and_metrics(params, micro, key, step):
    def loss(params):
      return objectives.loss_fn(model, params, micro, key, settings, step)

    (_, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return grads, metrics

  def train_step(state: TrainState, batch):
    rng, step_key = jax.random.split(state.rng)
    accumulation = batch["tokens"].shape[0]
    if accumulation == 1:
      only = jax.tree.map(lambda x: x[0], batch)
      grads, metrics = grads_and_metrics(state.params, only, step_key, state.step)
    else:

      def add_microbatch(grad_sum, inputs):
        micro, key = inputs
        grads, metrics = grads_and_metrics(state.params, micro, key, state.step)
        return jax.tree.map(jnp.add, grad_sum, grads), metrics

      keys = jax.random.split(step_key, accumulation)
      zeros = jax.tree.map(jnp.zeros_like, state.params)
      grad_sum, metrics = jax.lax.scan(add_microbatch, zeros, (batch, keys))
      grads = jax.tree.map(lambda g: g / accumulation, grad_sum)
      metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # The decay ramps up as (1 + step) / (10 + step), so that short runs' EMA is not the init.
    decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
    ema_params = optax.incremental_update(params, state.ema_params, 1.0 - decay)
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["finite"] = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
    new_state = TrainState(
      step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params, rng=rng
    )
    new_state = jax.tree.map(lambda new, old: jnp.where(metrics["finite"], new, old), new_state, state)
    return new_state, metrics

  replicated = NamedSharding(mesh, P())
  return jax.jit(
    train_step,
    in_shardings=(replicated, NamedSharding(mesh, P(None, "data"))),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )


def accumulation_steps(config, mesh) -> int:
  """Microbatches per step: the fixed global batch over (devices x train.per_device_batch_size).

  Raises ConfigError when the global batch does not split evenly over devices, processes and
  microbatches. per_device_batch_size = 0 means global batch / devices (no accumulation).
  """
  batch, per_device, n = config.train.batch_size, config.train.per_device_batch_size, mesh.devices.size
  if batch <= 0 or batch % n or batch % jax.process_count():
    raise ConfigError(f"train.batch_size={batch} must be a positive multiple of the device count {n}")
  if per_device == 0:
    return 1
  if per_device < 0 or batch % (per_device * n):
    raise ConfigError(
      f"train.per_device_batch_size={per_device}: {n} devices x it must divide train.batch_size={batch}"
    )
  return batch // (per_device * n)


def global_batch(
  tokens: np.ndarray, step: int, config, mesh, accumulation: int = 1, given: np.ndarray | None = None
) -> dict[str, jax.Array]:
  """This process's slice of global batch `step`, joined with the other processes' into one array.

  tokens: [accumulation, batch_size // accumulation, length], sharded over 'data' on axis 1; with
  `given` (clue cells [N, length] bool, rows matching tokens) the batch also holds the same rows of it.
  """
  arrays = {"tokens": tokens} if given is None else {"tokens": tokens, "given": given}
  sharding = NamedSharding(mesh, P(None, "data"))
  batch = {}
  for name, array in arrays.items():
    local = pipeline.process_batch(
      array, step, config.train.batch_size, config.data.seed, jax.process_index(), jax.process_count()
    )
    local = local.reshape(accumulation, -1, local.shape[-1])  # [accumulation, local microbatch, length]
    batch[name] = jax.make_array_from_process_local_data(sharding, local)
  return batch


@contextlib.contextmanager
def _sigterm_flag():
  """An Event set by SIGTERM while the block runs (single process, main thread; jax.distributed
  handles SIGTERM itself when there are several processes)."""
  flag = threading.Event()
  if distributed.is_multiprocess() or threading.current_thread() is not threading.main_thread():
    yield flag
    return
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
  try:
    yield flag
  finally:
    signal.signal(signal.SIGTERM, previous)


class Run:
  """A model, its optimiser, train state and jitted train step for one config and dataset, restored
  from workdir's latest checkpoint when there is one. With workdir None nothing is read or written
  (benchmarks, tests): `train_step(state, batch(step))` then takes steps by hand. `evaluate_only`: the
  run is evaluated or sampled, never trained, so the checkpoint may have been trained on sequences of
  another data.seq_length (checkpoints.EVALUATION_FREE)."""

  def __init__(self, config, workdir: str | None, dataset, mesh=None, evaluate_only: bool = False):
    self.config, self.workdir, self.dataset = config, workdir, dataset
    self.evaluate_only = evaluate_only
    self.mesh = make_mesh() if mesh is None else mesh
    self.accumulation = accumulation_steps(config, self.mesh)
    self.model = build_model(config, dataset.vocab_size, dataset.length)
    self.tx = make_optimizer(config.train)
    self.settings = objectives.settings_from_config(config.objective)
    self.train_step = make_train_step(self.model, self.tx, self.settings, config.train.ema_decay, self.mesh)
    # logged beside the loss: whether z tells the training examples apart (objectives.latent_signal)
    self.latent_signal = jax.jit(
      lambda params, tokens, given: objectives.latent_signal(
        self.model, params, tokens[0], None if given is None else given[0]
      )
    )
    self.state = init_state(self.model, self.tx, config, dataset.length, self.mesh)
    self.checkpointer = None
    if workdir is not None:
      self.checkpointer = checkpoints.Checkpointer(workdir, config.train.max_to_keep)
      restored = self.checkpointer.restore_latest(
        checkpoints.abstract_like(self.state), config, dataset.content, evaluating=evaluate_only
      )
      if restored is not None:
        self.state, _ = restored

  def batch(self, step: int) -> dict[str, jax.Array]:
    """Global train batch `step` of the dataset (tokens and any given cells), sharded over the mesh."""
    return global_batch(
      self.dataset.train, step, self.config, self.mesh, self.accumulation, self.dataset.train_given
    )

  @property
  def step(self) -> int:
    """The number of train steps taken so far."""
    return int(self.state.step)

  def eval_params(self):
    """EMA parameters when an EMA is kept, else the raw parameters (a host copy with several
    processes, so that each process evaluates on its own devices without collectives)."""
    params = self.state.ema_params if self.config.train.ema_decay > 0 else self.state.params
    return jax.device_get(params) if distributed.is_multiprocess() else params

  def save(self) -> None:
    """Checkpoint the current state with the data position, the config fingerprint, the whole config
    and the data's shape (what `vmd_jax.load` rebuilds the model from)."""
    if self.evaluate_only:  # its config may differ from the checkpoint's where training may not
      raise ValueError("this Run was restored for evaluation only (evaluate_only=True): it cannot save")
    meta = {
      "config": checkpoints.config_record(self.config),
      "data_shape": {"vocab_size": self.dataset.vocab_size, "length": self.dataset.length},
      "step": self.step,
      "data_position": {
        "next_batch": self.step,
        "global_batch": self.config.train.batch_size,
        "seed": self.config.data.seed,
      },
      "fingerprint": checkpoints.fingerprint(self.config),
      "data_content": self.dataset.content,
    }
    self.checkpointer.save(self.step, self.state, meta)

  def train(self, until_step: int | None = None) -> bool:
    """Train from the current step to config.train.steps (or until_step), checkpointing on the way.

    Returns False when SIGTERM stopped it early (after saving a checkpoint at the step reached), True
    otherwise. Raises TrainingError, without saving, when a step's loss or gradient is not finite.
    """
    if self.workdir is None:
      raise ValueError("Run.train needs a workdir for its checkpoints and metrics")
    if self.evaluate_only:
      raise ValueError("this Run was restored for evaluation only (evaluate_only=True): it cannot train")
    c = self.config.train
    end = c.steps if until_step is None else min(until_step, c.steps)
    if self.step >= end:
      return True
    writer = MetricWriter(self.workdir, resume_step=self.step)
    step = self.step  # counted on the host
    progress = Progress(c.steps, step)
    history, metrics = [], None
    with _sigterm_flag() as sigterm, contextlib.closing(writer):
      while step < end:
        if distributed.stop_requested(step, sigterm.is_set()):
          self._save_on_preemption()
          return False
        batch = self.batch(step)
        # One step in flight at most: the host prepares this batch while the previous step runs. Deeper
        # queues stalled XLA's CPU all-reduce rendezvous on forced host devices (and abort the process).
        jax.block_until_ready(self.state.step)
        if metrics is not None:
          self._check_finite(metrics, step)
        self.state, metrics = self.train_step(self.state, batch)
        history.append(metrics)
        step += 1
        log, save = step % c.log_every == 0 or step == end, step % c.checkpoint_every == 0 or step == end
        if log or save:  # the checks above see this step only at the next one
          self._check_finite(metrics, step)
        if log:
          means = {k: float(np.mean([jax.device_get(m[k]) for m in history])) for k in history[0]}
          means.pop("finite")
          history = []
          if self.model.latent_dim > 0:
            means.update(self._latent_signal(batch))
          writer.write(step, means)
          if jax.process_index() == 0:
            shown = ("loss", "kl", "z_share")
            print(progress.line(step, {k: means[k] for k in shown if k in means}), flush=True)
        if save:
          self.save()
    return True

  def _latent_signal(self, batch) -> dict[str, float]:
    """objectives.latent_signal of the current parameters on the first microbatch of `batch`."""
    values = self.latent_signal(self.state.params, batch["tokens"], batch.get("given"))
    return {name: float(jax.device_get(value)) for name, value in values.items()}

  def _check_finite(self, metrics, step: int) -> None:
    """Raise TrainingError when the step that ended at `step` had a non-finite loss or gradient."""
    if bool(jax.device_get(metrics["finite"])):
      return
    loss, grad_norm = (float(jax.device_get(metrics[k])) for k in ("loss", "grad_norm"))
    latest = self.checkpointer.latest_step()
    kept = f"the last checkpoint (step {latest}) is kept" if latest is not None else "no checkpoint was saved"
    raise TrainingError(
      f"step {step}: loss {loss} and gradient norm {grad_norm} are not all finite, so the run stopped "
      f"before applying it; {kept}. Lower train.learning_rate, or raise train.warmup_steps"
    )

  def _save_on_preemption(self) -> None:
    """Checkpoint the step reached (unless just saved) and wait for the write to finish."""
    if self.checkpointer.latest_step() != self.step:
      self.save()
    self.checkpointer.wait()
    if jax.process_index() == 0:
      print(
        f"preempted (SIGTERM) at step {self.step}: checkpoint saved in {self.checkpointer.directory}; "
        "run the same command again to resume",
        flush=True,
      )

  def close(self) -> None:
    """Finish pending checkpoint writes."""
    if self.checkpointer is not None:
      self.checkpointer.close()
