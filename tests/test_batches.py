"""The one padding of a short last batch (`srjax.data.batches.pad_rows`, `map_batches`) and the evaluation
batches and masked metrics of `train.batches`, against unpadded brute force."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from srjax import data as srdata
from srjax.data.batches import map_batches, pad_rows
from train import batches


def test_pad_rows_fills_or_repeats_the_last_row_and_refuses_to_crop():
  a = np.arange(6, dtype=np.float32).reshape(3, 2)
  np.testing.assert_array_equal(pad_rows(a, 5), [[0, 1], [2, 3], [4, 5], [0, 0], [0, 0]])
  np.testing.assert_array_equal(pad_rows(a, 4, fill=-1), [[0, 1], [2, 3], [4, 5], [-1, -1]])
  np.testing.assert_array_equal(pad_rows(a, 5, fill=None), [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]])
  assert pad_rows(a, 3) is a and pad_rows(a, 5).dtype == np.float32
  with pytest.raises(ValueError, match='^size: got 2; accepted: at least the 3 rows'):
    pad_rows(a, 2)
  with pytest.raises(ValueError, match='^a: '):
    pad_rows(np.zeros((0, 2)), 2, fill=None)


@pytest.mark.parametrize('n, batch', [(7, 3), (6, 3), (2, 5), (1, 1)])
def test_map_batches_equals_the_unbatched_function_and_sees_one_shape(n, batch):
  x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
  y = np.arange(n)
  shapes, indices = set(), []

  def fn(xb, yb, i):
    shapes.add(xb.shape)
    indices.append(i)
    return {'s': xb.sum(-1) + yb, 'i': np.full(len(xb), i)}
  out = map_batches(fn, (x, y), batch)
  np.testing.assert_array_equal(out['s'], x.sum(-1) + y)           # padding removed, order kept
  np.testing.assert_array_equal(out['i'], np.arange(n) // batch)   # batch k got index k
  assert shapes == {(batch, 2)} and indices == list(range(-(-n // batch)))
  with pytest.raises(ValueError, match='^arrays: '):
    map_batches(fn, (x, y[:-1]), batch)


def test_eval_batches_cover_each_example_once_and_masked_metrics_ignore_the_padding():
  n, k = 7, 3
  rng = np.random.default_rng(0)
  ds = srdata.Dataset(images=rng.uniform(size=(n, 2, 2, 1)).astype(np.float32),
                      labels=rng.integers(0, k, n).astype(np.int32), num_classes=k)
  logits_of = lambda images: jnp.asarray(images.reshape(len(images), -1)[:, :k] * 5.0)
  seen, records = [], []
  for b in batches.eval_batches(ds, 4, 0, 1):
    assert b['image'].shape == (4, 2, 2, 1)
    seen += [img.tobytes() for img, m in zip(b['image'], b['mask']) if m]
    records.append(batches.masked_metrics(logits_of(b['image']), b['label'], b['mask']))
  assert sorted(seen) == sorted(img.tobytes() for img in ds.images)
  weights = np.asarray([float(r['weight']) for r in records])
  assert weights.tolist() == [4, 3]
  logits = np.asarray(logits_of(ds.images))
  want_acc = np.mean(logits.argmax(-1) == ds.labels)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want_loss = -np.mean(log_p[np.arange(n), ds.labels])
  got_acc = sum(float(r['accuracy']) * w for r, w in zip(records, weights)) / n
  got_loss = sum(float(r['loss']) * w for r, w in zip(records, weights)) / n
  np.testing.assert_allclose([got_acc, got_loss], [want_acc, want_loss], rtol=1e-5)
  # Two processes: each takes its half of every batch.
  halves = [list(batches.eval_batches(ds, 4, p, 2)) for p in (0, 1)]
  for b0, b1, whole in zip(*halves, batches.eval_batches(ds, 4, 0, 1)):
    np.testing.assert_array_equal(np.concatenate([b0['image'], b1['image']]), whole['image'])
