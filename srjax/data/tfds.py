"""Adapter for prepared TensorFlow Datasets, read with `tfds.data_source` (array_record, no TensorFlow needed).

Data is never downloaded: when `data_dir/<name>/<version>/dataset_info.json` is absent, `load` fails at once with
a message that says how to prepare it (without the guard, tfds retries the network for minutes).
"""
from __future__ import annotations

import glob
import os

import numpy as np

from srjax.data.dataset import Dataset

PREPARE_HINT = (
    'Prepare it on a machine with network access, in array_record format, then copy the folder:\n'
    '  pip install tensorflow tensorflow-datasets\n'
    "  tfds build {name} --data_dir {data_dir} --file_format array_record\n"
    "or in Python: tfds.builder('{name}', data_dir='{data_dir}', file_format='array_record')"
    '.download_and_prepare()')


def find_prepared(name: str, data_dir: str) -> str | None:
  """Returns the newest prepared version folder of `name` under `data_dir`, or None."""
  infos = sorted(glob.glob(os.path.join(data_dir, name, '*', 'dataset_info.json'))
                 + glob.glob(os.path.join(data_dir, name, '*', '*', 'dataset_info.json')))
  return os.path.dirname(infos[-1]) if infos else None


def load(split: str = 'train', *, name: str = 'mnist', data_dir: str | None = None,
         image_key: str = 'image', label_key: str = 'label', limit: int | None = None) -> Dataset:
  """Loads a split of a prepared TFDS dataset into memory.

  Args:
    split: a TFDS split name ('train', 'test', 'train[:10%]', ...).
    name: the TFDS dataset name (mnist, cifar10, fashion_mnist, ...).
    data_dir: the folder that holds `<name>/<version>/`. Required.
    image_key, label_key: feature names of the image ([H, W, C] uint8) and the integer label.
    limit: read at most this many examples.

  Returns:
    A `Dataset` with images [N, H, W, C] float32 in [0, 1].

  Raises:
    FileNotFoundError: the dataset is not prepared under `data_dir` (checked before tfds is touched).
  """
  if not data_dir:
    raise ValueError("data_dir is required for source 'tfds' (set data.tfds_dir); got none. "
                     + PREPARE_HINT.format(name=name, data_dir='DATA_DIR'))
  data_dir = os.path.expanduser(data_dir)
  if find_prepared(name, data_dir) is None:
    raise FileNotFoundError(
        f'TFDS dataset {name!r} is not prepared under data_dir={data_dir!r} '
        f'(no {name}/<version>/dataset_info.json). ' + PREPARE_HINT.format(name=name, data_dir=data_dir))
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  source = tfds.data_source(name, split=split, data_dir=data_dir, download=False, try_gcs=False)
  n = len(source) if limit is None else min(limit, len(source))
  records = source.__getitems__(list(range(n))) if hasattr(source, '__getitems__') else [
      source[i] for i in range(n)]
  images = np.stack([np.asarray(r[image_key]) for r in records]).astype(np.float32) / 255.0
  if images.ndim == 3:
    images = images[..., None]
  labels = np.asarray([int(r[label_key]) for r in records], np.int32)
  num_classes = source.dataset_info.features[label_key].num_classes
  return Dataset(images, labels, num_classes=int(num_classes))
