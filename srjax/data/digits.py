"""scikit-learn's 1,797 8x8 handwritten digits (bundled with scikit-learn), scaled to [0, 1]."""
from __future__ import annotations

import functools

import numpy as np

from srjax.data.dataset import Dataset, embedded_split


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  bunch = load_digits()
  images = (np.asarray(bunch.images, np.float32) / 16.0)[..., None]
  return images, np.asarray(bunch.target, np.int32)


def load(split: str = 'train', *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """Loads a split of scikit-learn's digits (read from the file scikit-learn ships).

  Args:
    split: 'train' or 'test'.
    test_fraction: fraction held out for 'test'.
    seed: seed of the deterministic shuffle; the same seed gives disjoint train and test splits.

  Returns:
    A `Dataset` with images [N, 8, 8, 1] float32 in [0, 1] and 10 classes.
  """
  return embedded_split(*_raw(), 10, split, test_fraction=test_fraction, seed=seed)
