"""Orbax checkpointing for the shared loop: save every N steps, keep K, resume from the latest, fail loudly.

A checkpoint that cannot be read, or whose arrays do not match the state this config builds, raises
`CheckpointError`; it is never deleted or overwritten.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint in the workdir is corrupt or does not match the run's state."""


def manager(workdir: str, *, keep: int) -> ocp.CheckpointManager:
  """A CheckpointManager over `workdir/checkpoints` (one folder that every process sees)."""
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(directory, options=options)


def restore_latest(mngr: ocp.CheckpointManager, target: Any) -> tuple[Any, int] | None:
  """Restores the latest checkpoint into the structure, shapes, dtypes and shardings of `target`.

  Returns:
    (state, step), or None when the workdir holds no checkpoint.

  Raises:
    CheckpointError: the latest checkpoint is unreadable or incompatible with `target`.
  """
  step = mngr.latest_step()
  if step is None:
    return None
  path = os.path.join(str(mngr.directory), str(step))
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  try:
    restored = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as e:  # orbax raises many types; all mean the same to the user.
    raise CheckpointError(
        f'checkpoint {path} is corrupt or incompatible with this config ({type(e).__name__}: '
        f'{str(e).splitlines()[0] if str(e) else ""}). It was left untouched: move it away or pass another '
        '--workdir to start afresh.') from e
  want = jax.tree.map(lambda x: (x.shape, x.dtype), target)
  got = jax.tree.map(lambda x: (x.shape, x.dtype), restored)
  if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
    mismatches = [f'{jax.tree_util.keystr(k)}: saved {g} vs expected {w}'
                  for (k, w), g in zip(jax.tree_util.tree_leaves_with_path(want, is_leaf=_is_pair),
                                       jax.tree.leaves(got, is_leaf=_is_pair)) if w != g]
    raise CheckpointError(f'checkpoint {path} does not match this config: {"; ".join(mismatches[:3])}. '
                          'It was left untouched: move it away or pass another --workdir.')
  return restored, step


def _is_pair(x: Any) -> bool:
  return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], tuple)


def save(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Saves `state` at `step` (asynchronously; call `mngr.wait_until_finished()` before exiting)."""
  mngr.save(step, args=ocp.args.StandardSave(state), force=True)


def load_numpy(workdir: str, step: int | None = None) -> tuple[dict[str, Any], int]:
  """Reads a checkpoint of `workdir` as NumPy arrays, on any device topology (for eval scripts and tests).

  Args:
    workdir: the run's workdir (holds checkpoints/).
    step: the step to read; the latest when None.

  Returns:
    ({'step', 'params', 'opt_state', 'model_state'} as nested dicts of np.ndarray, step).
  """
  mngr = manager(workdir, keep=1_000_000)
  step = mngr.latest_step() if step is None else step
  mngr.close()
  if step is None:
    raise FileNotFoundError(f'no checkpoint under {os.path.join(workdir, "checkpoints")}')
  path = os.path.join(os.path.abspath(workdir), 'checkpoints', str(step), 'default')
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(path).item_metadata.tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return checkpointer.restore(path, restore_args=restore_args), step
