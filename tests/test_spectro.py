"""srjax.data.spectro: deterministic, cached, split 70/15/15, learnable but not trivially at low SNR."""
from __future__ import annotations

import os
import warnings

import chex
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from srjax import data
from srjax.data import spectro

SMALL = dict(num_examples=160, size=16)


def test_same_seed_same_data_and_the_cache_is_read_back(tmp_path, monkeypatch):
  monkeypatch.setenv(spectro.CACHE_ENV, str(tmp_path))
  a = data.load('spectro', 'test', **SMALL)
  files = os.listdir(tmp_path / 'spectro')
  assert len(files) == 1 and files[0].endswith('.npz')            # atomic write: no temp file left behind
  fresh = spectro.load('test', cache=False, **SMALL)
  np.testing.assert_array_equal(a.images, fresh.images)
  np.testing.assert_array_equal(a.extras['snr_db'], fresh.extras['snr_db'])

  def fail(*args, **kwargs):
    raise AssertionError('generate called on a cache hit')
  monkeypatch.setattr(spectro, 'generate', fail)
  b = spectro.load('test', **SMALL)
  np.testing.assert_array_equal(a.images, b.images)
  np.testing.assert_array_equal(a.labels, b.labels)
  with pytest.raises(AssertionError, match='cache hit'):            # another setting is another cache entry
    spectro.load('test', snr_db=(0.0, 5.0), **SMALL)
  monkeypatch.undo()
  # Another seed is another data set (not only another split of the same one).
  same = [spectro.generate(40, size=16, seed=0)[0] for _ in range(2)]
  np.testing.assert_array_equal(same[0], same[1])
  assert not np.array_equal(spectro.generate(40, size=16, seed=1)[0], same[0])


def test_splits_shapes_classes_and_snr():
  n = 200
  parts = {s: spectro.load(s, num_examples=n, size=(16, 12), cache=False) for s in ('train', 'val', 'test')}
  assert [len(parts[s]) for s in ('train', 'val', 'test')] == [140, 30, 30]
  ds = parts['train']
  chex.assert_shape(ds.images, (140, 16, 12, 1))
  chex.assert_type([ds.images, ds.labels, ds.extras['snr_db']], [np.float32, np.int32, np.float32])
  assert ds.images.min() >= 0 and ds.images.max() == 1.0
  assert set(ds.labels) == set(range(len(spectro.CLASSES))) and ds.num_classes == 8
  assert -10 <= ds.extras['snr_db'].min() and ds.extras['snr_db'].max() <= 20
  rows = {r.tobytes() for r in ds.images}
  assert not any(r.tobytes() in rows for r in parts['test'].images)
  two = spectro.load('test', num_examples=40, size=16, classes=('chirp', 'comb'), cache=False)
  assert two.num_classes == 2 and set(two.labels) <= {0, 1}


def test_tone_spectrogram_peaks_at_its_frequency():
  n_freq, n_time = 32, 16
  f0 = 0.25  # cycles per sample -> row f0 * 2 * n_freq of the STFT
  wave = np.sin(2 * np.pi * f0 * np.arange(n_freq * (n_time + 1)))
  image = spectro.spectrogram(wave, freq_bins=n_freq, time_bins=n_time)
  assert np.all(np.argmax(image, axis=0) == int(f0 * 2 * n_freq))
  assert image.max() == 1.0 and image.min() >= 0.0


def test_logistic_regression_is_well_above_chance_but_not_perfect_at_low_snr():
  images, labels, snr = spectro.generate(2000, size=24)
  x = images.reshape(len(images), -1) / 255.0
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', ConvergenceWarning)
    clf = LogisticRegression(max_iter=100, C=0.05).fit(x[:1400], labels[:1400])
  correct = clf.predict(x[1400:]) == labels[1400:]
  low, high = snr[1400:] < -3, snr[1400:] > 10
  chance = 1 / len(spectro.CLASSES)
  print(f'accuracy {correct.mean():.3f}, low SNR {correct[low].mean():.3f}, high SNR {correct[high].mean():.3f}')
  assert correct.mean() > 2.5 * chance
  assert correct[low].mean() < 0.8
  assert correct[high].mean() > correct[low].mean() + 0.1


def test_errors_name_the_argument():
  with pytest.raises(ValueError, match='classes'):
    spectro.load('test', classes=('am', 'wifi'), cache=False)
  with pytest.raises(ValueError, match='size'):
    spectro.load('test', size=4, cache=False)
  with pytest.raises(ValueError, match='size'):
    spectro.load('test', size=(64, 1000), cache=False)
  with pytest.raises(ValueError, match='snr_db'):
    spectro.load('test', snr_db=(10.0, -10.0), cache=False)
  with pytest.raises(ValueError, match='impairments'):
    spectro.load('test', impairments=('rain',), cache=False)
