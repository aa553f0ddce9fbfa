"""Synthetic electromagnetic-waveform spectrograms: the embedded default of the NSDE spectrogram task.

The paper's data (EM waveforms injected into building wiring, 10,000 STFT spectrograms; Sec. 3 of arXiv
2409.01532) is not public. This generator stands in for it with eight waveform classes,

  0 am       amplitude-modulated carrier           4 chirp     repeated linear frequency sweeps
  1 fm       sinusoidal frequency modulation       5 ofdm      8-16 subcarriers with random phases per symbol
  2 bpsk     binary PSK, rectangular symbols       6 comb      harmonic comb (a fundamental and its harmonics)
  3 qpsk     quaternary PSK, half-sine pulses      7 pwm       switching (PWM square wave) plus impulsive spikes

on top of wiring-like impairments: a random carrier phase and frequency offset, a narrowband interferer, pink
noise, mains hum (1st, 3rd, 5th harmonics) and white Gaussian noise at a per-example SNR drawn uniformly from
`snr_db` (signal power over AWGN power, over the full band). A log-power spectrogram cannot tell BPSK from QPSK
when they share a pulse shape and symbol rate (their power spectra are identical), so here they differ in what a
spectrogram sees: BPSK uses rectangular symbols of 16-32 samples (a narrow sinc^2 main lobe with sidelobes), QPSK
half-sine pulses of 6-12 samples (a wide lobe, fast sidelobe decay).

The whole set is generated with array operations over examples (no Python loop per example), in chunks of
`CHUNK` examples, each chunk from its own NumPy generator seeded with (seed, chunk index); labels cycle through
the classes (index mod K), and the 70/15/15 split is `split_indices` over the whole set. Spectrograms are stored
with 8-bit resolution (x = round(255 x) / 255) so that the on-disk cache (uint8) and a fresh generation give the
same arrays. The cache file name is a hash of every generator setting and `GENERATOR_VERSION`.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Sequence

import numpy as np

from srjax import checks
from srjax.data.dataset import Dataset, split_indices

CLASSES = ('am', 'fm', 'bpsk', 'qpsk', 'chirp', 'ofdm', 'comb', 'pwm')
IMPAIRMENTS = ('phase', 'freq_offset', 'interferer', 'pink', 'hum')
GENERATOR_VERSION = 1
CHUNK = 500
CACHE_ENV = 'SRJAX_CACHE_DIR'
_QUARTER_TURNS = np.array([1, 1j, -1, -1j])


def spectrogram(waves: np.ndarray, *, freq_bins: int, time_bins: int,
                dynamic_range_db: float = 50.0) -> np.ndarray:
  """Log-power STFT (Hann window of 2*freq_bins samples, 50% overlap), scaled to [0, 1] per example.

  Power in dB relative to each example's peak, clipped at -dynamic_range_db: 1 is the peak, 0 is
  dynamic_range_db below it or less. The Nyquist bin is dropped.

  Args:
    waves: [L] or [N, L] float waveforms with L >= freq_bins * (time_bins + 1).
    freq_bins: number of frequency rows F (the window is 2F samples, the hop F).
    time_bins: number of frames T.
    dynamic_range_db: dB range mapped onto [0, 1].

  Returns:
    [F, T] (or [N, F, T]) float32 in [0, 1], low frequencies at row 0.
  """
  waves = np.asarray(waves)
  single = waves.ndim == 1
  waves = np.atleast_2d(waves)
  window, hop = 2 * freq_bins, freq_bins
  n_frames = (waves.shape[-1] - window) // hop + 1
  if n_frames < time_bins:
    checks.fail('waves', waves, f'waveforms of at least {freq_bins * (time_bins + 1)} samples')
  starts = np.arange(time_bins) * hop
  frames = waves[:, starts[:, None] + np.arange(window)[None, :]]          # [N, T, 2F]
  spec = np.fft.rfft(frames * np.hanning(window), axis=-1)[..., :freq_bins]
  power_db = 10.0 * np.log10(spec.real ** 2 + spec.imag ** 2 + 1e-20)
  power_db -= power_db.max(axis=(1, 2), keepdims=True)
  image = np.clip(1.0 + power_db / dynamic_range_db, 0.0, 1.0).transpose(0, 2, 1).astype(np.float32)
  return image[0] if single else image


def _pink(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
  white = rng.normal(size=(n, length))
  shaped = np.fft.rfft(white, axis=-1) / np.sqrt(np.arange(1, length // 2 + 2))
  pink = np.fft.irfft(shaped, length, axis=-1)
  return pink / pink.std(axis=-1, keepdims=True)


def _u(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
  return rng.uniform(low, high, size=(n, 1))


def _symbols(rng: np.random.Generator, n: int, length: int, period: np.ndarray, values: int) -> tuple:
  """Per-sample symbol index (position // period) and a random symbol value per (example, symbol)."""
  idx = np.arange(length)[None, :]
  which = (idx // period).astype(np.int64)                                 # [n, L]
  table = rng.integers(0, values, size=(n, length // 6 + 2))
  return np.take_along_axis(table, which, axis=1), (idx % period) / period


def _tones(rng: np.random.Generator, freq: np.ndarray, step: np.ndarray, count: int, length: int,
           weights: np.ndarray) -> np.ndarray:
  """sum_k weights[:, k] cos(2 pi (freq + k step) n + random phase_k), k < count, by the recurrence
  z_k = z_{k-1} e^{i 2 pi step n} (one complex multiply per tone instead of a cosine)."""
  idx = np.arange(length, dtype=np.float64)[None, :]
  z = np.exp(2j * np.pi * freq * idx)
  rot = np.exp(2j * np.pi * step * idx)
  total = np.zeros(z.shape)
  for k in range(count):  # tones (at most 24), not examples
    total += weights[:, k:k + 1] * (z * np.exp(1j * rng.uniform(0, 2 * np.pi, size=(len(z), 1)))).real
    z = z * rot
  return total


def _class_wave(k: int, rng: np.random.Generator, n: int, length: int, impairments: Sequence[str]) -> np.ndarray:
  """[n, L] waveforms of class CLASSES[k]."""
  idx = np.arange(length, dtype=np.float64)[None, :]
  phase = _u(rng, 0, 2 * np.pi, n) if 'phase' in impairments else np.zeros((n, 1))
  offset = _u(rng, -0.02, 0.02, n) if 'freq_offset' in impairments else np.zeros((n, 1))
  fc = _u(rng, 0.08, 0.38, n) + offset
  name = CLASSES[k]
  if name == 'am':
    m, fm = _u(rng, 0.5, 1.0, n), _u(rng, 0.001, 0.006, n)
    return (1 + m * np.sin(2 * np.pi * fm * idx + _u(rng, 0, 6.3, n))) * np.cos(2 * np.pi * fc * idx + phase)
  if name == 'fm':
    fmod, dev = _u(rng, 0.0015, 0.006, n), _u(rng, 0.02, 0.06, n)
    return np.cos(2 * np.pi * fc * idx + dev / fmod * np.sin(2 * np.pi * fmod * idx) + phase)
  if name == 'bpsk':
    bits, _ = _symbols(rng, n, length, rng.integers(16, 33, size=(n, 1)), 2)
    return np.cos(2 * np.pi * fc * idx + np.pi * bits + phase)
  if name == 'qpsk':
    quads, frac = _symbols(rng, n, length, rng.integers(6, 13, size=(n, 1)), 4)
    return np.sin(np.pi * frac) * np.cos(2 * np.pi * fc * idx + np.pi / 4 + np.pi / 2 * quads + phase)
  if name == 'chirp':
    f0 = _u(rng, 0.03, 0.2, n) + offset
    f1 = np.clip(f0 + rng.choice([-1.0, 1.0], size=(n, 1)) * _u(rng, 0.1, 0.25, n), 0.02, 0.48)
    period = _u(rng, length / 4, length, n)
    inst = f0 + (f1 - f0) * ((idx / period) % 1.0)
    return np.cos(2 * np.pi * np.cumsum(inst, axis=1) + phase)
  if name == 'ofdm':
    # 8-16 subcarriers; each holds a QPSK phase for one OFDM symbol of 32-128 samples.
    n_sub, spacing = rng.integers(8, 17, size=(n, 1)), _u(rng, 0.004, 0.01, n)
    sym, _ = _symbols(rng, n, length, rng.integers(32, 129, size=(n, 1)), 4)
    z = np.exp(2j * np.pi * (fc - 0.06) * idx + 1j * phase)
    rot = np.exp(2j * np.pi * spacing * idx)
    total = np.zeros((n, length))
    for k in range(16):  # subcarriers, not examples
      total += (k < n_sub) * (z * _QUARTER_TURNS[(sym * (k + 3)) % 4]).real
      z = z * rot
    return total
  if name == 'comb':
    fund, decay = _u(rng, 0.02, 0.06, n) * (1 + offset), _u(rng, 0.3, 1.2, n)
    h = np.arange(1, 25)[None, :]
    return _tones(rng, fund, fund, 24, length, (h * fund < 0.48) * h ** -decay)
  fsw, duty = _u(rng, 0.005, 0.03, n) * (1 + offset), _u(rng, 0.2, 0.8, n)
  square = np.where(((fsw * idx + phase / (2 * np.pi)) % 1.0) < duty, 1.0, -1.0)
  spikes = (rng.random((n, length)) < _u(rng, 0.001, 0.004, n)) * rng.normal(0, 8, size=(n, length))
  kernel = np.exp(-np.arange(length) / 3.0) * np.cos(2 * np.pi * 0.3 * np.arange(length))
  ring = np.fft.irfft(np.fft.rfft(spikes, axis=-1) * np.fft.rfft(kernel), length, axis=-1)
  return square + ring


def _waveforms(labels: np.ndarray, rng: np.random.Generator, length: int, impairments: Sequence[str]) -> np.ndarray:
  """[n, L] unit-power clean waveforms; each class is computed on its own rows (a loop over the 8 classes)."""
  out = np.zeros((len(labels), length))
  for k in range(len(CLASSES)):
    rows = np.flatnonzero(labels == k)
    if len(rows):
      out[rows] = _class_wave(k, rng, len(rows), length, impairments)
  return out / np.sqrt(np.mean(out ** 2, axis=1, keepdims=True) + 1e-12)


def _background(rng: np.random.Generator, n: int, length: int, impairments: Sequence[str]) -> np.ndarray:
  idx = np.arange(length, dtype=np.float64)[None, :]
  out = np.zeros((n, length))
  if 'interferer' in impairments:
    out += _u(rng, 0.1, 0.5, n) * np.cos(2 * np.pi * _u(rng, 0.02, 0.48, n) * idx + _u(rng, 0, 6.3, n))
  if 'pink' in impairments:
    out += _u(rng, 0.05, 0.3, n) * _pink(rng, n, length)
  if 'hum' in impairments:
    mains, level = _u(rng, 0.002, 0.006, n), _u(rng, 0.2, 0.6, n)
    for k in (1, 3, 5):
      out += level / k * np.sin(2 * np.pi * k * mains * idx + _u(rng, 0, 6.3, n))
  return out


def generate(num_examples: int, *, seed: int = 0, size: int | tuple[int, int] = 64,
             snr_db: tuple[float, float] = (-10.0, 20.0), classes: Sequence[str] = CLASSES,
             impairments: Sequence[str] = IMPAIRMENTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Generates the whole synthetic set (no cache, no split).

  Args:
    num_examples: N, the number of spectrograms.
    seed: generator seed; the same settings give the same arrays.
    size: F (square F x F) or (F, T): frequency rows and time frames, each in [8, 512].
    snr_db: (low, high) range of the per-example SNR in dB, drawn uniformly.
    classes: names from `CLASSES`; label k is classes[k].
    impairments: names from `IMPAIRMENTS` to apply (AWGN is always applied).

  Returns:
    (images [N, F, T] uint8, labels [N] int32, snr_db [N] float32).

  Raises:
    ValueError: a bad size, SNR range, class or impairment name.
  """
  freq_bins, time_bins, classes, impairments = _check(num_examples, size, snr_db, classes, impairments)
  length = freq_bins * (time_bins + 1)
  labels = (np.arange(num_examples) % len(classes)).astype(np.int32)
  class_ids = np.asarray([CLASSES.index(c) for c in classes])
  images = np.empty((num_examples, freq_bins, time_bins), np.uint8)
  snrs = np.empty((num_examples,), np.float32)
  for chunk, start in enumerate(range(0, num_examples, CHUNK)):  # chunks of CHUNK examples, to bound memory
    stop = min(start + CHUNK, num_examples)
    rng = np.random.default_rng([seed, chunk])
    n = stop - start
    wave = _waveforms(class_ids[labels[start:stop]], rng, length, impairments)
    snr = rng.uniform(snr_db[0], snr_db[1], size=n)
    wave = wave + _background(rng, n, length, impairments)
    wave += rng.normal(size=(n, length)) * 10.0 ** (-snr[:, None] / 20.0)
    image = spectrogram(wave, freq_bins=freq_bins, time_bins=time_bins)
    images[start:stop] = np.round(image * 255.0).astype(np.uint8)
    snrs[start:stop] = snr
  return images, labels, snrs


def _check(num_examples, size, snr_db, classes, impairments):
  checks.integer('num_examples', num_examples, 2)
  if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
    size = (int(size), int(size))
  if not (isinstance(size, (tuple, list)) and len(size) == 2
          and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and 8 <= s <= 512 for s in size)):
    checks.fail('size', size, 'an integer F or a pair (F, T) of integers in [8, 512]')
  if not (isinstance(snr_db, (tuple, list)) and len(snr_db) == 2 and float(snr_db[0]) <= float(snr_db[1])):
    checks.fail('snr_db', snr_db, 'a pair (low, high) of dB values with low <= high')
  checks.all_in_range('snr_db', snr_db, -60.0, 60.0)
  classes = tuple(classes)
  if not classes or len(set(classes)) != len(classes):
    checks.fail('classes', classes, 'distinct names from ' + ', '.join(CLASSES))
  for name in classes:
    checks.one_of('classes', name, CLASSES)
  impairments = tuple(impairments)
  for name in impairments:
    checks.one_of('impairments', name, IMPAIRMENTS)
  return int(size[0]), int(size[1]), classes, impairments


def default_cache_dir() -> str:
  """`$SRJAX_CACHE_DIR/spectro` when the variable is set, else `~/.cache/srjax/spectro`."""
  root = os.environ.get(CACHE_ENV) or os.path.join('~', '.cache', 'srjax')
  return os.path.join(os.path.expanduser(root), 'spectro')


def cache_key(**settings) -> str:
  """A hex digest of every generator setting (and GENERATOR_VERSION): the cache file's name."""
  blob = json.dumps({'version': GENERATOR_VERSION, **settings}, sort_keys=True, default=list)
  return hashlib.sha256(blob.encode()).hexdigest()[:24]


def generate_cached(num_examples: int, *, seed: int = 0, size: int | tuple[int, int] = 64,
                    snr_db: tuple[float, float] = (-10.0, 20.0), classes: Sequence[str] = CLASSES,
                    impairments: Sequence[str] = IMPAIRMENTS, cache_dir: str | None = None,
                    cache: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`generate`, read from / written to an on-disk cache keyed by every setting.

  The file is written to a temporary name in the cache folder and renamed into place, so a crash never leaves a
  partial cache file; an unreadable cache file is regenerated and replaced.

  Args:
    num_examples, seed, size, snr_db, classes, impairments: as in `generate`.
    cache_dir: cache folder; default `default_cache_dir()`.
    cache: False skips the cache (generate in memory only).

  Returns:
    As `generate`.
  """
  freq_bins, time_bins, classes, impairments = _check(num_examples, size, snr_db, classes, impairments)
  settings = dict(num_examples=int(num_examples), seed=int(seed), size=[freq_bins, time_bins],
                  snr_db=[float(s) for s in snr_db], classes=list(classes), impairments=list(impairments))
  gen = lambda: generate(num_examples, seed=seed, size=(freq_bins, time_bins), snr_db=snr_db, classes=classes,
                         impairments=impairments)
  if not cache:
    return gen()
  folder = os.path.expanduser(cache_dir) if cache_dir else default_cache_dir()
  path = os.path.join(folder, f'spectro-{cache_key(**settings)}.npz')
  if os.path.exists(path):
    try:
      with np.load(path) as f:
        return f['images'], f['labels'], f['snr_db']
    except Exception:  # pylint: disable=broad-except  # unreadable: regenerate and replace it below
      pass
  images, labels, snrs = gen()
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.spectro-', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, images=images, labels=labels, snr_db=snrs)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return images, labels, snrs


def load(split: str = 'train', *, num_examples: int = 10_000, test_fraction: float = 0.15,
         val_fraction: float = 0.15, seed: int = 0, size: int | tuple[int, int] = 64,
         snr_db: tuple[float, float] = (-10.0, 20.0), classes: Sequence[str] = CLASSES,
         impairments: Sequence[str] = IMPAIRMENTS, cache_dir: str | None = None, cache: bool = True) -> Dataset:
  """The `split` part of the synthetic spectrogram set (70/15/15 train/val/test by default).

  Args:
    split: 'train', 'val' (when val_fraction > 0) or 'test'.
    num_examples: size N of the whole set before the split (the paper has 10,000).
    test_fraction, val_fraction: split fractions, as in `srjax.data.dataset.split_indices`.
    seed: seed of the generator and of the split.
    size, snr_db, classes, impairments: as in `generate`.
    cache_dir, cache: as in `generate_cached`.

  Returns:
    A `Dataset`: images [n, F, T, 1] float32 in [0, 1] (multiples of 1/255), labels [n] int32 indexing
    `classes`, and extras['snr_db'] [n] float32, each example's SNR in dB.

  Raises:
    ValueError: a bad split, size, SNR range, class or impairment name.

  References:
    Sec. 3 of arXiv 2409.01532 (10,000 STFT spectrograms of EM waveforms); the classes are this library's.
  """
  idx = split_indices(num_examples, split, test_fraction=test_fraction, seed=seed, val_fraction=val_fraction)
  images, labels, snrs = generate_cached(num_examples, seed=seed, size=size, snr_db=snr_db, classes=classes,
                                         impairments=impairments, cache_dir=cache_dir, cache=cache)
  return Dataset((images[idx, :, :, None] / np.float32(255.0)).astype(np.float32), labels[idx],
                 num_classes=len(tuple(classes)), extras={'snr_db': snrs[idx]})
