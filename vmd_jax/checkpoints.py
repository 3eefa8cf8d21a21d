"""Checkpoints with orbax: the whole train state (params, optimiser, EMA, step, rng) plus a JSON record
of the data position and of the config that shaped the state, so that a resumed run is exact and a
checkpoint written under another config is refused with a clear message.

A checkpoint that cannot be read (a partial write, a corrupt file) is skipped with a warning in favour
of the one before it, and moved to workdir/checkpoints_unreadable/ so that nothing is deleted.
"""

import os
import shutil
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp

from vmd_jax import distributed
from vmd_jax.errors import CheckpointError

# Config sections whose values change the shape or meaning of the saved state.
FINGERPRINT_SECTIONS = ("model", "objective", "data")
# Fingerprint keys that may differ from the checkpoint's when it is only evaluated or sampled: they
# shape the data, not the parameters (model.max_length, which sizes the positions, is not among them).
EVALUATION_FREE = ("data.seq_length",)


# Keys added to the fingerprint after a release, with the value that a checkpoint without them (one of
# that release) was made with.
IMPLIED_BY_OLDER_RELEASES = {
  "model.latent_path": "adaln",
  "model.latent_rank": 16,
  "model.time_input": "start",
  "objective.nfes": [],
  "objective.rao_blackwell": False,
  "objective.step_draw": "nfe",
  "objective.kl_hold_steps": 0,
  "model.encoder_pool": "mean",
}
# Keys that do not shape the state of a model without a latent: its path and encoder, the KL's weighting.
LATENT_ONLY = (
  "model.latent_path",
  "model.latent_rank",
  "model.encoder_width",
  "model.encoder_depth",
  "model.encoder_init_log_std",
  "model.encoder_sees_prefix",
  "model.encoder_pool",
  "objective.beta",
  "objective.kl_warmup_steps",
  "objective.kl_hold_steps",
  "objective.free_bits",
  "objective.kl_time_weight",
)
# Keys that only the stepwise objective reads.
STEPWISE_ONLY = ("objective.nfes", "objective.z_policy", "objective.rao_blackwell", "objective.step_draw")


def unread_keys(config) -> tuple[str, ...]:
  """The fingerprint keys that config's model and objective do not read: left out of the record and
  of the comparison, so that an option the run ignores never refuses its checkpoint."""
  unread = LATENT_ONLY if config.model.latent_dim == 0 else ()
  return unread + (STEPWISE_ONLY if config.objective.name != "stepwise" else ())


def fingerprint(config) -> dict[str, Any]:
  """The flat {"section.key": value} record of the config sections a checkpoint depends on."""
  flat = {}
  for section in FINGERPRINT_SECTIONS:
    for key, value in config[section].items():
      flat[f"{section}.{key}"] = list(value) if isinstance(value, tuple) else value
  for key in unread_keys(config):
    flat.pop(key, None)
  return flat


def config_record(config) -> dict[str, Any]:
  """The whole config as JSON values (tuples as lists), saved with each checkpoint."""

  def plain(value):
    if isinstance(value, dict):
      return {k: plain(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value

  return plain(config.to_dict())


def _directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


class Checkpointer:
  """Saves and restores the train state under workdir/checkpoints (created on the first save)."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self.directory = _directory(workdir)
    self._max_to_keep = max_to_keep
    self._manager = self._open(create=False) if os.path.isdir(self.directory) else None

  def _open(self, create: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=self._max_to_keep, create=create)
    return ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The step of the newest finished checkpoint, or None."""
    return self._manager.latest_step() if self._manager else None

  def read_meta(self, step: int) -> dict[str, Any]:
    """The JSON record saved with a checkpoint."""
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return restored["meta"]

  def latest_meta(self) -> dict[str, Any] | None:
    """The JSON record of the newest checkpoint that can be read, or None when there is none."""
    for step in sorted(self._manager.all_steps(), reverse=True) if self._manager else []:
      try:
        return self.read_meta(step)
      except Exception:  # noqa: BLE001, S112 - a damaged checkpoint: restore_latest sets it aside
        continue
    return None

  def check_matches(
    self, step: int, config, meta: dict[str, Any] | None = None, content: str = "", evaluating: bool = False
  ) -> None:
    """Raise CheckpointError naming the config values that differ from those the checkpoint was made with.

    data.path may differ when `content` (the dataset's, pipeline.Dataset.content) is the content the
    checkpoint was trained on: the same corpus moved, copied or mounted elsewhere. When `evaluating`
    (the checkpoint is evaluated or sampled, never trained further), data.seq_length may differ too:
    the parameters are those of model.max_length, which must still match, so a model trained on long
    windows can be scored on shorter ones."""
    meta = self.read_meta(step) if meta is None else meta
    saved, current = meta.get("fingerprint", {}), fingerprint(config)
    unread = unread_keys(config)
    saved = {k: v for k, v in saved.items() if k not in unread}
    saved = {**{k: v for k, v in IMPLIED_BY_OLDER_RELEASES.items() if k in current}, **saved}
    moved = bool(content) and meta.get("data_content") == content
    diffs = [
      f"{key}={saved.get(key)!r} (checkpoint) vs {current.get(key)!r} (config)"
      for key in sorted(set(saved) | set(current))
      if saved.get(key) != current.get(key)
      and not (moved and key == "data.path")
      and not (evaluating and key in EVALUATION_FREE)
    ]
    if diffs:
      raise CheckpointError(
        f"checkpoint at step {step} in {self.directory} does not match the config: " + "; ".join(diffs)
      )

  def restore(self, step: int, abstract_state) -> tuple[Any, dict[str, Any]]:
    """Restore (state, meta) at step; abstract_state gives shapes, dtypes and shardings."""
    try:
      restored = self._manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()),
      )
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(f"checkpoint at step {step} cannot be restored: {_first_line(e)}") from None
    return restored["state"], restored["meta"]

  def restore_latest(
    self, abstract_state, config, content: str = "", evaluating: bool = False
  ) -> tuple[Any, dict[str, Any]] | None:
    """(state, meta) of the newest readable checkpoint, or None when there is none.

    Unreadable checkpoints are skipped with a warning on stderr and moved aside; a readable one made
    under another config raises CheckpointError (that is a mistake in the command, not damage).
    `evaluating`: as in check_matches.
    """
    steps = sorted(self._manager.all_steps(), reverse=True) if self._manager else []
    for step in steps:
      try:
        meta = self.read_meta(step)
      except Exception as e:  # noqa: BLE001 - any failure to read means the checkpoint is damaged
        self._set_aside(step, e)
        continue
      self.check_matches(step, config, meta, content, evaluating)
      try:
        state, _ = self.restore(step, abstract_state)
      except Exception as e:  # noqa: BLE001
        self._set_aside(step, e)
        continue
      return state, meta
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    """Warn about an unreadable checkpoint and move it out of the manager's directory."""
    aside = os.path.join(os.path.dirname(self.directory), "checkpoints_unreadable", str(step))
    if jax.process_index() == 0:
      if os.path.exists(aside):  # an earlier unreadable checkpoint of the same step
        aside = f"{aside}.{os.getpid()}"
      print(
        f"warning: checkpoint at step {step} is unreadable ({_first_line(error)}); "
        f"moved to {aside}, falling back to the previous one",
        file=sys.stderr,
        flush=True,
      )
      os.makedirs(os.path.dirname(aside), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), aside)
    distributed.barrier(f"set_aside_{step}")
    self._manager.close()
    self._manager = self._open(create=False)

  def save(self, step: int, state, meta: dict[str, Any]) -> None:
    """Save asynchronously (all processes call this; orbax coordinates the writes)."""
    if self._manager is None:
      self._manager = self._open(create=True)
    self._manager.save(
      step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    )

  def wait(self) -> None:
    """Block until pending saves are written."""
    if self._manager is not None:
      self._manager.wait_until_finished()

  def close(self) -> None:
    """Wait for pending saves and release the manager."""
    if self._manager is not None:
      self._manager.wait_until_finished()
      self._manager.close()


def abstract_like(state):
  """ShapeDtypeStructs (with shardings) of a state, for restoring into the same layout."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
