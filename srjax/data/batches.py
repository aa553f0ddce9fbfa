"""Deterministic minibatch indices: a pure function of (seed, step), so a resumed run sees the same batches."""
from __future__ import annotations

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
