"""Multi-host start-up: calls `jax.distributed.initialize()` when a multi-process environment is set.

Must run before any other JAX call. Recognised environments:
- explicit: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (any cluster, and CPU tests on localhost);
- cluster auto-detection by JAX itself: SLURM (SLURM_NTASKS > 1), Open MPI (OMPI_COMM_WORLD_SIZE > 1),
  Cloud TPU pod slices (TPU_WORKER_HOSTNAMES with several hosts).
"""
from __future__ import annotations

import os

import jax

_initialized = False


def _int_env(name: str, default: int = 1) -> int:
  try:
    return int(os.environ.get(name, default))
  except ValueError:
    return default


def maybe_initialize() -> bool:
  """Initialises jax.distributed if the environment asks for several processes. Returns True if it did."""
  global _initialized
  if _initialized:
    return True
  if os.environ.get('JAX_COORDINATOR_ADDRESS') and _int_env('JAX_NUM_PROCESSES') > 1:
    jax.distributed.initialize(coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
                               num_processes=_int_env('JAX_NUM_PROCESSES'),
                               process_id=_int_env('JAX_PROCESS_ID', 0))
  elif (_int_env('SLURM_NTASKS') > 1 or _int_env('OMPI_COMM_WORLD_SIZE') > 1
        or len(os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1):
    jax.distributed.initialize()
  else:
    return False
  _initialized = True
  return True
