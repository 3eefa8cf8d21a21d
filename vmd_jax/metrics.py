"""Metric output: a jsonl file and TensorBoard event files in the workdir, and a progress line.

Only process 0 writes; other processes get a writer that does nothing.
"""

import json
import os
import time

import jax
import numpy as np


def _step_of(line: str) -> float:
  """The step of a metrics line; infinite for a line cut short by a kill (dropped)."""
  try:
    return json.loads(line)["step"]
  except (ValueError, KeyError, TypeError):
    return float("inf")


def _drop_after(path: str, step: int) -> None:
  """Remove the lines of a metrics.jsonl whose step is beyond `step`: a run killed after its last
  checkpoint logged steps that the resumed run logs again."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  kept = [line for line in lines if _step_of(line) <= step]
  if len(kept) != len(lines):
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(kept)


class MetricWriter:
  """Appends {"step": s, **scalars} lines to workdir/metrics.jsonl and scalars to workdir/tensorboard.

  resume_step: the step the run starts from; lines of earlier runs beyond it are dropped first, so
  that every step appears once."""

  def __init__(self, workdir: str, resume_step: int = 0):
    self._active = jax.process_index() == 0
    if not self._active:
      return
    from tensorboardX import SummaryWriter  # imported lazily: only process 0 writes

    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    _drop_after(path, resume_step)
    self._jsonl = open(path, "a", encoding="utf-8")
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
    return f"step {step}/{self.total} | {shown} | {rate:.3g} steps/s | ETA {eta_text}"
