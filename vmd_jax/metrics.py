"""Metric output: a jsonl file and TensorBoard event files in the workdir, and a progress line.

Only process 0 writes; other processes get a writer that does nothing.
"""

import json
import os
import time

import jax
import numpy as np


class MetricWriter:
  """Appends {"step": s, **scalars} lines to workdir/metrics.jsonl and scalars to workdir/tensorboard."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    if not self._active:
      return
    from tensorboardX import SummaryWriter  # imported lazily: only process 0 writes

    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    """Write one record of scalars at step."""
    if not self._active:
      return
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    self._jsonl.flush()
    for key, value in scalars.items():
      self._tb.add_scalar(key, value, int(step))

  def close(self) -> None:
    """Flush and close the files."""
    if self._active:
      self._jsonl.close()
      self._tb.close()


class Progress:
  """Formats `step s/N | metrics | steps/s | ETA` from wall-clock time between calls."""

  def __init__(self, total_steps: int, start_step: int):
    self.total = total_steps
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def line(self, step: int, scalars: dict[str, float]) -> str:
    """The progress line at step; the rate is measured since the previous call."""
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    shown = " ".join(f"{k} {float(v):.4f}" for k, v in sorted(scalars.items()))
    eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if np.isfinite(eta) else "?"
    return f"step {step}/{self.total} | {shown} | {rate:.1f} steps/s | ETA {eta_text}"
