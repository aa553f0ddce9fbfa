"""Batches and metrics of the training entry points and evals: the loop's training batches, padded and masked
evaluation batches, and the masked metrics that ignore the padding. Every entry point imports them from here
(`train/classifier.py` is an entry point, not a library); the padding itself is `srjax.data.batches.pad_rows`.
"""
from __future__ import annotations

from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from srjax import data as srdata
from srjax.data.batches import batch_indices, pad_rows

Batch = dict[str, np.ndarray]


def eval_batches(dataset: srdata.Dataset, batch_size: int, process_index: int,
                 process_count: int) -> Iterator[Batch]:
  """This process's shards of fixed-size batches over `dataset`: the last batch repeats the last example to
  `batch_size` rows, with mask 0 on the repeats (`masked_metrics` ignores them).

  Yields:
    {'image': [batch_size // process_count, ...], 'label': [...], 'mask': [...] float32}.
  """
  n = len(dataset)
  local = batch_size // process_count
  part = slice(process_index * local, (process_index + 1) * local)
  for start in range(0, n, batch_size):
    real = np.arange(start, min(start + batch_size, n))
    idx = pad_rows(real, batch_size, fill=None)
    mask = pad_rows(np.ones(len(real), np.float32), batch_size, fill=0)
    yield {'image': dataset.images[idx][part], 'label': dataset.labels[idx][part], 'mask': mask[part]}


def labelled_batches(dataset: srdata.Dataset, config: ml_collections.ConfigDict
                     ) -> Callable[[int, int, int], Batch]:
  """The loop's `train_batch`: (step, process_index, process_count) -> this process's {'image', 'label'} shard."""
  def train_batch(step: int, process_index: int, process_count: int) -> Batch:
    idx = batch_indices(step, config.batch_size, len(dataset), seed=config.seed,
                        process_index=process_index, process_count=process_count)
    return {'image': dataset.images[idx], 'label': dataset.labels[idx]}
  return train_batch


def masked_metrics(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
  """Mean cross-entropy and accuracy over the examples with mask 1, plus their count as the batch 'weight'.

  Args:
    logits: [B, K]; labels: [B] int; mask: [B] float (0 for padding).
  """
  xent = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  count = mask.sum()
  weight = jnp.maximum(count, 1.0)
  return {'loss': jnp.sum(xent * mask) / weight, 'accuracy': jnp.sum(correct * mask) / weight, 'weight': count}
