"""Several processes, one run: starting jax.distributed, barriers, and work done once for all.

On TPU pods, SLURM and Open MPI clusters `jax.distributed.initialize()` finds the coordinator, the
process count and this process's id by itself. Anywhere else (several processes on one machine, other
schedulers) the launcher sets them in the environment:

  VMD_COORDINATOR_ADDRESS=host:port  VMD_NUM_PROCESSES=n  VMD_PROCESS_ID=i  [VMD_LOCAL_DEVICE_IDS=0,1]
"""

import os

import jax
from jax.experimental import multihost_utils

from vmd_jax.errors import ConfigError

ENV_VARS = ("VMD_COORDINATOR_ADDRESS", "VMD_NUM_PROCESSES", "VMD_PROCESS_ID")


def _explicit_arguments() -> dict:
  """initialize() arguments from the VMD_* environment, or {} when none is set."""
  present = [name for name in ENV_VARS if os.environ.get(name)]
  if not present:
    return {}
  if len(present) < len(ENV_VARS):
    missing = sorted(set(ENV_VARS) - set(present))
    raise ConfigError(f"{', '.join(present)} set but {', '.join(missing)} not: set all three or none")
  try:
    kwargs = {
      "coordinator_address": os.environ["VMD_COORDINATOR_ADDRESS"],
      "num_processes": int(os.environ["VMD_NUM_PROCESSES"]),
      "process_id": int(os.environ["VMD_PROCESS_ID"]),
    }
    if os.environ.get("VMD_LOCAL_DEVICE_IDS"):
      kwargs["local_device_ids"] = [int(i) for i in os.environ["VMD_LOCAL_DEVICE_IDS"].split(",")]
  except ValueError:
    raise ConfigError("VMD_NUM_PROCESSES, VMD_PROCESS_ID and VMD_LOCAL_DEVICE_IDS must be integers") from None
  return kwargs


def initialize(config) -> None:
  """Join the other processes of the run when config.jax_distributed is set (once per process)."""
  if not config.jax_distributed or jax.distributed.is_initialized():
    return
  jax.distributed.initialize(**_explicit_arguments())


def is_multiprocess() -> bool:
  """Whether the run spans several processes."""
  return jax.process_count() > 1


def barrier(name: str) -> None:
  """Wait until every process reaches the barrier of this name (nothing to wait for in one process)."""
  if is_multiprocess():
    multihost_utils.sync_global_devices(name)


def once(name: str, fn):
  """fn() on process 0 first, then on the others after a barrier: for work with shared side effects
  (preparing a dataset in a shared directory) that later calls find done."""
  if jax.process_index() == 0:
    result = fn()
    barrier(name)
    return result
  barrier(name)
  return fn()


def stop_requested(step: int, local_flag: bool) -> bool:
  """Whether to stop for a preemption at this step, agreed by all processes.

  One process: the flag of its own SIGTERM handler. Several: JAX's preemption sync point, which the
  coordination service raises on every process at the same step when any of them receives SIGTERM.
  """
  if is_multiprocess():
    return multihost_utils.reached_preemption_sync_point(step)
  return local_flag
