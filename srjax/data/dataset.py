"""The `Dataset` record and the deterministic split that every embedded source uses. Imports no sibling module."""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from srjax import checks

SPLITS = ('train', 'val', 'test')


@dataclasses.dataclass(frozen=True)
class Dataset:
  """An in-memory labelled image dataset.

  Attributes:
    images: [N, H, W, C] float32 in [0, 1].
    labels: [N] int32.
    num_classes: number of classes.
    extras: per-example side information, each value an [N, ...] array (for example the spectrograms' 'snr_db').
  """
  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  extras: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.images.ndim != 4:
      checks.fail('images', self.images, 'an [N, H, W, C] array')
    if self.labels.shape != self.images.shape[:1]:
      checks.fail('labels', self.labels, f'an [N] array with N={self.images.shape[0]}')
    for key, value in self.extras.items():
      if np.shape(value)[:1] != self.images.shape[:1]:
        checks.fail(f'extras[{key!r}]', value, f'an [N, ...] array with N={self.images.shape[0]}')

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  def subset(self, idx: np.ndarray) -> Dataset:
    """The examples at `idx` (with their extras)."""
    return Dataset(self.images[idx], self.labels[idx], self.num_classes,
                   {k: np.asarray(v)[idx] for k, v in self.extras.items()})


def split_indices(n: int, split: str, *, test_fraction: float, seed: int, val_fraction: float = 0.0) -> np.ndarray:
  """Indices of `split` after a deterministic shuffle of range(n) with `seed`.

  The shuffled order is cut into [test | val | train]: the first round(n * test_fraction) indices are 'test', the
  next round(n * val_fraction) 'val', the rest 'train'. The three splits are disjoint and cover range(n).

  Args:
    n: number of examples.
    split: 'train', 'val' or 'test' ('val' needs val_fraction > 0).
    test_fraction: fraction held out for 'test', in (0, 1).
    seed: seed of the shuffle; the same seed gives the same, disjoint splits.
    val_fraction: fraction held out for 'val', in [0, 1 - test_fraction).

  Returns:
    [n_split] int64 indices into range(n).
  """
  checks.one_of('split', split, SPLITS if val_fraction > 0 else ('train', 'test'))
  checks.in_range('test_fraction', test_fraction, 0.0, 1.0, low_open=True, high_open=True)
  checks.in_range('val_fraction', val_fraction, 0.0, 1.0 - test_fraction, high_open=True)
  order = np.random.default_rng(seed).permutation(n)
  n_test = int(round(n * test_fraction))
  n_val = int(round(n * val_fraction))
  return {'test': order[:n_test], 'val': order[n_test:n_test + n_val], 'train': order[n_test + n_val:]}[split]


def embedded_split(images: np.ndarray, labels: np.ndarray, num_classes: int, split: str, *, test_fraction: float,
                   seed: int, val_fraction: float = 0.0) -> Dataset:
  """The `split` part of an in-memory (images, labels) table, by `split_indices`: the common body of the
  embedded loaders."""
  idx = split_indices(len(labels), split, test_fraction=test_fraction, seed=seed, val_fraction=val_fraction)
  return Dataset(images[idx], labels[idx], num_classes=num_classes)
