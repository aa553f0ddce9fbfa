"""scikit-learn's 1,797 8x8 handwritten digits (bundled with scikit-learn), scaled to [0, 1]."""
from __future__ import annotations

import functools

import numpy as np

from srjax.data.split import Dataset, split_indices


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  bunch = load_digits()
  images = (np.asarray(bunch.images, np.float32) / 16.0)[..., None]
  return images, np.asarray(bunch.target, np.int32)


def load(split: str = 'train', *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """Loads a split of scikit-learn's digits.

  Returns:
    A `Dataset` with images [N, 8, 8, 1] float32 in [0, 1] and 10 classes.
  """
  images, labels = _raw()
  idx = split_indices(len(labels), split, test_fraction=test_fraction, seed=seed)
  return Dataset(images[idx], labels[idx], num_classes=10)
