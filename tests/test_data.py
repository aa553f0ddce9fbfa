"""Embedded data sources and deterministic batching."""
from __future__ import annotations

import chex
import numpy as np
import pytest

from srjax import data
from srjax.data.batches import batch_indices
from tests import tfds_tiny


@pytest.mark.parametrize('source, shape', [('mnist', (28, 28, 1)), ('digits', (8, 8, 1))])
def test_embedded_splits_are_disjoint_balanced_and_deterministic(source, shape):
  train, test = data.load(source, 'train'), data.load(source, 'test')
  chex.assert_shape(train.images, (len(train),) + shape)
  chex.assert_type([train.images, train.labels], [np.float32, np.int32])
  assert 0.0 <= train.images.min() and train.images.max() <= 1.0
  train_rows = {r.tobytes() for r in train.images}
  assert not any(r.tobytes() in train_rows for r in test.images[:200])
  # The raw MNIST subset is sorted by label; a shuffled split must hold every class in both parts.
  assert set(np.unique(test.labels)) == set(range(10))
  np.testing.assert_array_equal(data.load(source, 'test').labels, test.labels)
  assert not np.array_equal(data.load(source, 'test', seed=1).labels, test.labels)


@pytest.mark.parametrize('source, kwargs, n, splits', [
    ('mnist', {}, 5000, ('train', 'test')), ('digits', {}, 1797, ('train', 'test')),
    ('spectro', {'num_examples': 200}, 200, ('train', 'val', 'test'))])
def test_no_test_image_is_in_train_and_the_splits_cover_the_data(source, kwargs, n, splits):
  parts = [data.load(source, split, **kwargs).images for split in splits]
  train_rows = {r.tobytes() for r in parts[0]}
  for held_out in parts[1:]:
    assert not any(r.tobytes() in train_rows for r in held_out)
  every = {r.tobytes() for r in np.concatenate(parts)}
  assert sum(map(len, parts)) == n == len(every)   # disjoint, and nothing dropped or repeated


@pytest.mark.parametrize('n, val_fraction', [(1797, 0.0), (5000, 0.0), (10000, 0.15), (7, 0.15)])
def test_split_indices_partition_range_n(n, val_fraction):
  splits = ('train', 'val', 'test') if val_fraction else ('train', 'test')
  parts = [data.split_indices(n, s, test_fraction=0.15 if val_fraction else 0.2, seed=3, val_fraction=val_fraction)
           for s in splits]
  joined = np.concatenate(parts)
  assert len(joined) == n and sorted(joined) == list(range(n))


def test_unknown_source_and_split():
  with pytest.raises(ValueError, match='source'):
    data.load('imagenet')
  with pytest.raises(ValueError, match='split'):
    data.load('digits', 'validation')


def test_tfds_reads_back_a_prepared_dataset(tmp_path):
  name = tfds_tiny.prepare(str(tmp_path))
  for split in ('train', 'test'):
    got = data.load('tfds', split, name=name, data_dir=str(tmp_path))
    images, labels = tfds_tiny.examples(split)
    order = np.lexsort(images.reshape(len(images), -1).T)   # TFDS shuffles on write: compare as sets of rows
    got_order = np.lexsort((got.images * 255).round().astype(np.uint8).reshape(len(got), -1).T)
    np.testing.assert_array_equal((got.images[got_order] * 255).round().astype(np.uint8), images[order])
    np.testing.assert_array_equal(got.labels[got_order], labels[order])
    assert got.num_classes == 10 and got.images.dtype == np.float32


def test_tfds_requires_data_dir_and_prepared_data(tmp_path):
  with pytest.raises(ValueError, match='data_dir'):
    data.load('tfds', name='mnist')
  with pytest.raises(FileNotFoundError, match='tfds build mnist'):
    data.load('tfds', name='mnist', data_dir=str(tmp_path))


def test_batch_indices_cover_each_epoch_once_and_split_across_processes():
  n, batch = 10, 4
  seen = np.concatenate([batch_indices(s, batch, n, seed=3) for s in range(5)])   # two full epochs
  assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
  whole = batch_indices(7, batch, n, seed=3)
  parts = [batch_indices(7, batch, n, seed=3, process_index=i, process_count=2) for i in range(2)]
  np.testing.assert_array_equal(np.concatenate(parts), whole)
  with pytest.raises(ValueError, match='process_count'):
    batch_indices(0, 5, n, process_count=2)
