"""Dataset sources. Every source has an embedded default that needs no network; 'tfds' reads prepared TFDS data.

`SOURCES` is the registry: a source name mapped to its `load(split, **kwargs) -> Dataset`. `load(name, split,
...)` dispatches over it, so an entry point takes the dataset name from a config, and a new source is one line
here. This package and the weight loaders in `srjax.models` are the only places where srjax reads files.
"""
from __future__ import annotations

from typing import Callable

from srjax import checks
from srjax.data import digits
from srjax.data import mnist
from srjax.data import spectro
from srjax.data import tfds
from srjax.data.dataset import Dataset
from srjax.data.dataset import split_indices

SOURCES: dict[str, Callable[..., Dataset]] = {
    'mnist': mnist.load,        # the embedded 5,000-digit MNIST subset (28x28)
    'digits': digits.load,      # scikit-learn's 8x8 digits
    'spectro': spectro.load,    # synthetic EM-waveform spectrograms
    'tfds': tfds.load,          # a prepared TFDS dataset (name=, data_dir=)
}


def load(source: str, split: str = 'train', **kwargs) -> Dataset:
  """Loads `split` of a dataset source.

  Args:
    source: a key of `SOURCES`.
    split: 'train' or 'test' (and 'val' where the source has one).
    **kwargs: forwarded to the source's `load`.

  Returns:
    A `Dataset`.

  Raises:
    ValueError: `source` is not a key of `SOURCES`.
  """
  return SOURCES[checks.one_of('source', source, SOURCES)](split=split, **kwargs)
