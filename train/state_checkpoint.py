"""The training state's checkpoints (orbax) for the shared loop: save every N steps, keep K, resume from the
latest, fail loudly. (Named `train.checkpoint` before; pretrained weights files are `srjax.models.pretrained`.)

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
  """A CheckpointManager over `workdir/checkpoints` (one folder that every process sees).

  Its item handler is declared up front, so the metadata of a saved step is read through the manager
  (`item_metadata`). Reading an item folder with a standalone checkpointer instead makes orbax look for the
  step's `_CHECKPOINT_METADATA` inside the item folder and log "Metadata file does not exist" on every run; the
  save itself had finished (the loop waits for it), so that warning never meant a race.
  """
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(directory, options=options, item_handlers=ocp.StandardCheckpointHandler())


def restore_latest(mngr: ocp.CheckpointManager, target: Any) -> tuple[Any, int] | None:
  """Restores the latest checkpoint into the structure, shapes, dtypes and shardings of `target`.

  The checkpoint's stored metadata (its tree, and each array's shape and dtype) is compared with `target` before
  anything is restored: orbax would otherwise cast a float32 checkpoint into a bfloat16 or int32 target without a
  word, and a user who switched a model's dtype would resume from silently converted weights.

  Returns:
    (state, step), or None when the workdir holds no checkpoint.

  Raises:
    CheckpointError: the latest checkpoint is unreadable, or its tree, shapes or dtypes differ from `target`'s
      (the message names the leaves that differ). The checkpoint is left untouched.
  """
  step = mngr.latest_step()
  if step is None:
    return None
  path = os.path.join(str(mngr.directory), str(step))
  untouched = 'It was left untouched: move it away or pass another --workdir to start afresh.'
  try:
    saved = leaf_specs(mngr.item_metadata(step).tree)
  except Exception as e:  # orbax raises many types; all mean the same to the user.
    raise CheckpointError(f'checkpoint {path} is corrupt or incompatible: its metadata cannot be read '
                          f'({_first_line(e)}). '
                          + untouched) from e
  differences = spec_differences(saved, leaf_specs(target))
  if differences:
    more = f' (and {len(differences) - 5} more)' if len(differences) > 5 else ''
    raise CheckpointError(f'checkpoint {path} is incompatible with this config: {"; ".join(differences[:5])}{more}. '
                          + untouched)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  try:
    restored = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as e:  # orbax raises many types; all mean the same to the user.
    raise CheckpointError(f'checkpoint {path} is corrupt or incompatible with this config ({_first_line(e)}). '
                          + untouched) from e
  return restored, step


def _first_line(error: BaseException) -> str:
  text = str(error).splitlines()[0] if str(error) else ''
  return f'{type(error).__name__}: {text}'


def leaf_specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """{'params/Dense_0/kernel': (shape, dtype name), ...} for every array leaf of a state or of orbax metadata.

  Path parts are attribute names, dict keys and sequence indices alike, so a dataclass state and the nested
  dicts orbax stores for it give the same paths.
  """
  specs = {}
  for key_path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if not hasattr(leaf, 'shape') or not hasattr(leaf, 'dtype'):
      continue
    parts = [str(getattr(k, 'name', getattr(k, 'key', getattr(k, 'idx', k)))) for k in key_path]
    specs['/'.join(parts)] = (tuple(int(d) for d in leaf.shape), np.dtype(leaf.dtype).name)
  return specs


def spec_differences(saved: dict[str, tuple], expected: dict[str, tuple]) -> list[str]:
  """Human-readable differences between two `leaf_specs` results (empty when they match)."""
  out = []
  for name in sorted(set(saved) | set(expected)):
    if name not in expected:
      out.append(f'{name}: in the checkpoint, not in this config')
    elif name not in saved:
      out.append(f'{name}: expected {_spec(expected[name])}, missing from the checkpoint')
    elif saved[name] != expected[name]:
      out.append(f'{name}: saved {_spec(saved[name])} vs expected {_spec(expected[name])}')
  return out


def _spec(spec: tuple) -> str:
  shape, dtype = spec
  return f'{dtype}{list(shape)}'


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
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'no checkpoint under {directory}')
  mngr = ocp.CheckpointManager(directory, item_handlers=ocp.PyTreeCheckpointHandler())
  try:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint under {directory}')
    tree = mngr.item_metadata(step).tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return mngr.restore(step, args=ocp.args.PyTreeRestore(restore_args=restore_args)), step
  finally:
    mngr.close()
