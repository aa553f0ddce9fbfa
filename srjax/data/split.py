"""The `Dataset` record and the dispatcher over embedded and TFDS sources."""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
  """An in-memory labelled image dataset.

  Attributes:
    images: [N, H, W, C] float32 in [0, 1].
    labels: [N] int32.
    num_classes: number of classes.
  """
  images: np.ndarray
  labels: np.ndarray
  num_classes: int

  def __post_init__(self):
    if self.images.ndim != 4:
      raise ValueError(f'images must be [N, H, W, C], got shape {self.images.shape}')
    if self.labels.shape != self.images.shape[:1]:
      raise ValueError(f'labels must be [N] with N={self.images.shape[0]}, got shape {self.labels.shape}')

  def __len__(self) -> int:
    return int(self.labels.shape[0])


def split_indices(n: int, split: str, *, test_fraction: float, seed: int) -> np.ndarray:
  """Indices of `split` ('train' or 'test') after a deterministic shuffle of range(n) with `seed`."""
  if split not in ('train', 'test'):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction}')
  order = np.random.default_rng(seed).permutation(n)
  n_test = int(round(n * test_fraction))
  return order[n_test:] if split == 'train' else order[:n_test]


def _loaders() -> dict[str, Callable[..., Dataset]]:
  from srjax.data import digits, mnist, spectro, tfds
  return {'mnist': mnist.load, 'digits': digits.load, 'spectro': spectro.load, 'tfds': tfds.load}


SOURCES = ('mnist', 'digits', 'spectro', 'tfds')


def load(source: str, split: str = 'train', **kwargs) -> Dataset:
  """Loads `split` of a dataset source.

  Args:
    source: 'mnist' (embedded 5,000-digit subset), 'digits' (scikit-learn 8x8 digits), 'spectro'
      (synthetic EM-waveform spectrograms) or 'tfds'
      (a prepared TFDS dataset; pass `name=` and `data_dir=`).
    split: 'train' or 'test'.
    **kwargs: forwarded to the source's `load`.

  Returns:
    A `Dataset`.
  """
  loaders = _loaders()
  if source not in loaders:
    raise ValueError(f'data source {source!r} is unknown; accepted: {", ".join(SOURCES)}')
  return loaders[source](split=split, **kwargs)
