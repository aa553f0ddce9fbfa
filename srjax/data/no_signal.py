"""The "no-signal" class of the SR-in-classifiers paper: all-zero images with a label of their own.

With it, a classifier learns a detection threshold (answer "nothing there" to a blank input), and sub-threshold
inputs plus noise show stochastic resonance; without it they do not (arXiv 2502.14442, Sec. 3-4).
"""
from __future__ import annotations

import numpy as np

from srjax import checks
from srjax.data.dataset import Dataset


def with_no_signal(dataset: Dataset, ratio: float = 0.1) -> Dataset:
  """Appends round(ratio * N) all-zero images labelled `dataset.num_classes` (one class more).

  The authors' notebook adds 6,000 blank images to MNIST's 60,000 training digits and 1,000 to its 10,000 test
  digits (ratio 0.1, label 10, 11 classes); accuracy is then over all 11 classes, blanks included.

  Args:
    dataset: a `Dataset` with images [N, H, W, C].
    ratio: blank images per original image, in [0, 1].

  Returns:
    A `Dataset` with N + round(ratio * N) examples (the blanks last; shuffling is the batcher's job) and
    num_classes + 1 classes. Extras are dropped unless empty.

  Raises:
    ValueError: ratio outside [0, 1], or the dataset has extras (blanks have no side information).

  References:
    arXiv 2502.14442, Sec. 2 (the added no-signal class).
  """
  checks.in_range('ratio', ratio, 0.0, 1.0)
  if dataset.extras:
    checks.fail('dataset', f'a Dataset with extras {sorted(dataset.extras)}', 'a Dataset without extras')
  n_blank = int(round(ratio * len(dataset)))
  blanks = np.zeros((n_blank,) + dataset.images.shape[1:], np.float32)
  labels = np.full((n_blank,), dataset.num_classes, np.int32)
  return Dataset(np.concatenate([dataset.images.astype(np.float32), blanks]),
                 np.concatenate([dataset.labels.astype(np.int32), labels]), dataset.num_classes + 1)
