"""A tiny TFDS dataset prepared for real (array_record, no TensorFlow needed), for the tests of the TFDS path."""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

SPLITS = {'train': (0, 64), 'test': (1, 24)}   # split -> (seed, size)


def examples(split: str) -> tuple[np.ndarray, np.ndarray]:
  """The split's (images [N, 8, 8, 1] uint8, labels [N] int64), as the builder writes them."""
  seed, n = SPLITS[split]
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % 10
  # Each class is a bright 2x2 block at its own place, plus noise: learnable in a few steps.
  images = rng.integers(0, 60, (n, 8, 8, 1)).astype(np.uint8)
  for i, label in enumerate(labels):
    r, c = divmod(int(label), 4)
    images[i, 2 * r:2 * r + 2, 2 * c:2 * c + 2, 0] = 250
  return images, labels


class TinyBlocks(tfds.core.GeneratorBasedBuilder):
  """10 classes of 8x8 grayscale images; 64 train and 24 test examples."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
        'label': tfds.features.ClassLabel(num_classes=10)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split):
    images, labels = examples(split)
    for i in range(len(labels)):
      yield i, {'image': images[i], 'label': int(labels[i])}


def prepare(data_dir: str) -> str:
  """Builds the dataset under `data_dir`; returns its TFDS name."""
  builder = TinyBlocks(data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare()
  return builder.name
