"""Batches: deterministic minibatch indices (a pure function of (seed, step), so a resumed run sees the same
batches), and the one padding of a last, short batch (`pad_rows`, `map_batches`) that every evaluation uses."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from srjax import checks


def batch_indices(step: int, batch_size: int, num_examples: int, *, seed: int = 0,
                  process_index: int = 0, process_count: int = 1) -> np.ndarray:
  """Indices of this process's shard of the global batch at `step`.

  Epoch e is a permutation of range(num_examples) drawn from (seed, e); the global batch at `step` is the
  slice [step * batch_size, (step + 1) * batch_size) of the concatenated epochs, and process i takes the
  i-th of `process_count` equal parts of it.

  Returns:
    [batch_size // process_count] int64 indices.
  """
  if batch_size % process_count:
    checks.fail('batch_size', batch_size, f'a multiple of process_count={process_count}')
  if batch_size > num_examples:
    checks.fail('batch_size', batch_size, f'at most the number of examples, {num_examples}')
  start = step * batch_size
  positions = np.arange(start, start + batch_size)
  epochs, offsets = np.divmod(positions, num_examples)
  out = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    perm = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
    sel = epochs == epoch
    out[sel] = perm[offsets[sel]]
  local = batch_size // process_count
  return out[process_index * local:(process_index + 1) * local]


def pad_rows(a: np.ndarray, size: int, *, fill: float | int | None = 0) -> np.ndarray:
  """`a` [n, ...] padded along axis 0 to `size` rows (n <= size), so a compiled function sees one shape.

  Args:
    a: [n, ...] array.
    size: rows wanted.
    fill: the value of the new rows, or None to repeat the last row (a real example: no zeros reach the
      model, which matters for functions that normalise over the batch or refuse out-of-range inputs).

  Returns:
    [size, ...] array of a's dtype; `a` itself when n == size.

  Raises:
    ValueError: n > size, or fill None with n == 0.
  """
  a = np.asarray(a)
  n = a.shape[0]
  if n > size:
    checks.fail('size', size, f'at least the {n} rows of the array')
  if n == size:
    return a
  if fill is None:
    if n == 0:
      checks.fail('a', a, 'at least one row to repeat (fill=None)')
    extra = np.repeat(a[-1:], size - n, axis=0)
  else:
    extra = np.full((size - n,) + a.shape[1:], fill, a.dtype)
  return np.concatenate([a, extra], axis=0)


def map_batches(fn: Callable[..., Any], arrays: Sequence[np.ndarray], batch_size: int, *,
                fill: float | int | None = 0) -> Any:
  """Applies `fn(*batch)` to consecutive slices of `arrays` (each [N, ...]), the last slice padded to
  `batch_size` rows by `pad_rows` (one compile), and concatenates its outputs (any pytree of [batch_size, ...]
  arrays) along axis 0 with the padding removed.

  `fn` is called as `fn(*batch, i)` with i the batch's index (for example to fold a per-batch key).

  Returns:
    The outputs' pytree with leaves [N, ...] as host NumPy arrays.
  """
  n = len(arrays[0])
  if any(len(a) != n for a in arrays):
    checks.fail('arrays', [len(a) for a in arrays], 'arrays with the same number of rows')
  checks.integer('batch_size', batch_size, 1)
  outs = []
  for i, start in enumerate(range(0, n, batch_size)):
    k = min(batch_size, n - start)
    batch = [pad_rows(a[start:start + k], batch_size, fill=fill) for a in arrays]
    out = fn(*batch, i)
    outs.append(jax.tree_util.tree_map(lambda o, k=k: np.asarray(o)[:k], out))
  return jax.tree_util.tree_map(lambda *o: np.concatenate(o, axis=0), *outs)
