"""Checkpoints with orbax: the whole train state (params, optimiser, EMA, step, rng) plus a JSON record
of the data position and of the config that shaped the state, so that a resumed run is exact and a
checkpoint written under another config is refused with a clear message.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from vmd_jax.errors import CheckpointError

# Config sections whose values change the shape or meaning of the saved state.
FINGERPRINT_SECTIONS = ("model", "objective", "data")


def fingerprint(config) -> dict[str, Any]:
  """The flat {"section.key": value} record of the config sections a checkpoint depends on."""
  flat = {}
  for section in FINGERPRINT_SECTIONS:
    for key, value in config[section].items():
      flat[f"{section}.{key}"] = list(value) if isinstance(value, tuple) else value
  return flat


def _directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:
  """Saves and restores the train state under workdir/checkpoints (created on the first save)."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=False)
    self.directory = _directory(workdir)
    self._max_to_keep = max_to_keep
    self._manager = (
      ocp.CheckpointManager(self.directory, options=options) if os.path.isdir(self.directory) else None
    )

  def latest_step(self) -> int | None:
    """The step of the newest finished checkpoint, or None."""
    return self._manager.latest_step() if self._manager else None

  def read_meta(self, step: int) -> dict[str, Any]:
    """The JSON record saved with a checkpoint."""
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return restored["meta"]

  def check_matches(self, step: int, config) -> None:
    """Raise CheckpointError naming the config values that differ from those the checkpoint was made with."""
    saved = self.read_meta(step).get("fingerprint", {})
    current = fingerprint(config)
    diffs = [
      f"{key}={saved.get(key)!r} (checkpoint) vs {current.get(key)!r} (config)"
      for key in sorted(set(saved) | set(current))
      if saved.get(key) != current.get(key)
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
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CheckpointError(f"checkpoint at step {step} cannot be restored: {first_line}") from None
    return restored["state"], restored["meta"]

  def save(self, step: int, state, meta: dict[str, Any]) -> None:
    """Save asynchronously (all processes call this; orbax coordinates the writes)."""
    if self._manager is None:
      options = ocp.CheckpointManagerOptions(max_to_keep=self._max_to_keep, create=True)
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._manager.save(
      step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    )

  def close(self) -> None:
    """Wait for pending saves and release the manager."""
    if self._manager is not None:
      self._manager.wait_until_finished()
      self._manager.close()


def abstract_like(state):
  """ShapeDtypeStructs (with shardings) of a state, for restoring into the same layout."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
