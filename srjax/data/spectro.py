"""Synthetic electromagnetic-waveform spectrograms: the embedded default of the NSDE spectrogram task.

The paper's data (EM waveforms injected into building wiring, 10,000 STFT spectrograms) is not public. This
generator stands in for it with six waveform classes on top of wiring-like background (mains harmonics plus
coloured noise) at a random signal-to-noise ratio, turned into log-magnitude STFT images:

  0 tone   continuous carrier          3 fsk    two-tone frequency-shift keying
  1 chirp  linear frequency sweep      4 am     amplitude-modulated carrier
  2 pulse  periodic carrier bursts     5 burst  broadband impulsive bursts

Each example is a pure function of (seed, index), so any subset can be regenerated exactly.
"""
from __future__ import annotations

import numpy as np

from srjax.data.dataset import Dataset, split_indices

CLASSES = ('tone', 'chirp', 'pulse', 'fsk', 'am', 'burst')


def _waveform(label: int, rng: np.random.Generator, n: int) -> np.ndarray:
  t = np.arange(n) / n
  f0 = rng.uniform(0.08, 0.4)                      # cycles per sample (Nyquist = 0.5)
  phase = rng.uniform(0, 2 * np.pi)
  idx = np.arange(n)
  if label == 0:
    return np.sin(2 * np.pi * f0 * idx + phase)
  if label == 1:
    f1 = np.clip(f0 + rng.choice([-1, 1]) * rng.uniform(0.1, 0.25), 0.03, 0.47)
    return np.sin(2 * np.pi * (f0 * idx + 0.5 * (f1 - f0) * idx * t) + phase)
  if label == 2:
    period = rng.integers(n // 8, n // 4)
    duty = rng.uniform(0.2, 0.4)
    gate = ((idx + rng.integers(period)) % period) < duty * period
    return 1.6 * gate * np.sin(2 * np.pi * f0 * idx + phase)
  if label == 3:
    symbols = rng.integers(0, 2, size=8).repeat(int(np.ceil(n / 8)))[:n]
    shift = rng.uniform(0.05, 0.12)
    return np.sin(2 * np.pi * np.cumsum(f0 + shift * symbols) + phase)
  if label == 4:
    rate = rng.uniform(2, 6)
    return (1 + 0.9 * np.sin(2 * np.pi * rate * t)) * np.sin(2 * np.pi * f0 * idx + phase)
  bursts = np.zeros(n)
  for start in rng.integers(0, n - n // 16, size=rng.integers(3, 6)):
    bursts[start:start + n // 32] = rng.normal(size=n // 32)
  return 2.5 * bursts


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
  idx = np.arange(n)
  mains = rng.uniform(0.005, 0.02)
  hum = sum(rng.uniform(0.2, 0.6) / k * np.sin(2 * np.pi * k * mains * idx + rng.uniform(0, 6.3))
            for k in (1, 3, 5))
  white = rng.normal(size=n)
  pink = np.fft.irfft(np.fft.rfft(white) / np.sqrt(np.arange(1, n // 2 + 2)), n)
  return hum + pink / pink.std()


def spectrogram(wave: np.ndarray, *, freq_bins: int, time_bins: int) -> np.ndarray:
  """Log-magnitude STFT (Hann window, 50% overlap) of a 1D waveform, scaled to [0, 1].

  Returns:
    [freq_bins, time_bins] float32 (low frequencies at row 0).
  """
  window = 2 * freq_bins
  hop = window // 2
  n_frames = (len(wave) - window) // hop + 1
  if n_frames < time_bins:
    raise ValueError(f'wave of length {len(wave)} gives {n_frames} frames < time_bins={time_bins}')
  frames = np.stack([wave[i * hop:i * hop + window] for i in range(time_bins)])
  mag = np.abs(np.fft.rfft(frames * np.hanning(window), axis=-1))[:, :freq_bins].T
  logmag = np.log1p(mag)
  return ((logmag - logmag.min()) / max(np.ptp(logmag), 1e-6)).astype(np.float32)


def example(index: int, *, seed: int = 0, freq_bins: int = 32, time_bins: int = 32,
            snr_db: tuple[float, float] = (-6.0, 6.0)) -> tuple[np.ndarray, int]:
  """The `index`-th example: ([freq_bins, time_bins, 1] float32 in [0, 1], label)."""
  rng = np.random.default_rng([seed, index])
  label = int(rng.integers(len(CLASSES)))
  n = freq_bins * (time_bins + 1)
  wave = _waveform(label, rng, n)
  noise = _background(rng, n)
  snr = 10 ** (rng.uniform(*snr_db) / 20)
  wave = snr * wave / max(wave.std(), 1e-6) + noise
  return spectrogram(wave, freq_bins=freq_bins, time_bins=time_bins)[..., None], label


def load(split: str = 'train', *, num_examples: int = 2000, test_fraction: float = 0.2, seed: int = 0,
         freq_bins: int = 32, time_bins: int = 32) -> Dataset:
  """Generates `num_examples` spectrograms and returns the `split` part of a deterministic split.

  Returns:
    A `Dataset` with images [N, freq_bins, time_bins, 1] float32 in [0, 1] and 6 classes.
  """
  if num_examples < 2:
    raise ValueError(f'num_examples must be >= 2, got {num_examples}')
  idx = split_indices(num_examples, split, test_fraction=test_fraction, seed=seed)
  pairs = [example(int(i), seed=seed, freq_bins=freq_bins, time_bins=time_bins) for i in idx]
  images = np.stack([p[0] for p in pairs])
  labels = np.asarray([p[1] for p in pairs], np.int32)
  return Dataset(images, labels, num_classes=len(CLASSES))
