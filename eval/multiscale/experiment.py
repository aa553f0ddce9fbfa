"""What eval.multiscale computes: its settings, its rows (one grid search each) and how a row is run."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any

import jax
import numpy as np

from srjax import signals
from srjax import threshold as th
from srjax import wavelet as wv

DETECTORS = th.DETECTORS
DOMAINS = th.DOMAINS
MODES = ('correct', 'quirks')
IMAGES = ('barbara', 'cameraman', 'mandrill', 'peppers')


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that determines the numbers (hashed into each row's key, so a changed setting recomputes)."""
  n: int = 1024
  size: int = 256
  n_trials: int = 100
  sigmas: tuple[float, ...] = tuple(np.linspace(0.1, 3.0, 24).round(6))
  bandwidths_1d: tuple[float, ...] = (0.5, 1., 2., 4., 8., 16., 32., 64.)
  bandwidths_1d_ref: tuple[float, ...] = tuple(np.linspace(0.1, 1.0, 6).round(6))
  bandwidths_2d: tuple[float, ...] = (0.01, 1., 2., 4., 8.)
  a: float = -2.0
  b: float = 2.0
  wavelet: str = 'sym8'
  level_1d: int = 3
  level_2d: int = 3
  fig9_levels: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
  seed: int = 0
  noise_seeds: int = 5     # table rows: one grid search per noise seed seed, seed + 1, ... (the orderings' interval)

  def bandwidths(self, dim: int, mode: str) -> tuple[float, ...]:
    if dim == 2:
      return self.bandwidths_2d
    return self.bandwidths_1d_ref if mode == 'quirks' else self.bandwidths_1d

  def digest(self) -> str:
    return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


QUICK = dict(n=128, size=32, n_trials=10, sigmas=tuple(np.linspace(0.1, 3.0, 6).round(6)), bandwidths_1d=(4.,),
             bandwidths_1d_ref=(0.1,), bandwidths_2d=(1.,), level_1d=2, level_2d=2, fig9_levels=(1, 2, 3),
             noise_seeds=3)   # a smoke run: 3 seeds still give every row an interval, at 60% of the cost


def make_settings(quick: bool, **overrides: Any) -> Settings:
  """Default (full) or quick settings, with command-line overrides (None values are ignored)."""
  base = dict(QUICK) if quick else {}
  base.update({k: v for k, v in overrides.items() if v is not None})
  return Settings(**base)


@dataclasses.dataclass(frozen=True)
class Job:
  """One row: a grid search of one signal in one domain (and, for Fig. 9, one wavelet level)."""
  table: str          # 'I', 'II' or 'levels'
  name: str           # signal or image name
  dim: int            # 1 or 2
  domain: str         # 'data' or 'wavelet'
  level: int = 0      # wavelet level (0 in the data domain)

  def key(self, mode: str, digest: str) -> str:
    return f'{mode}|{self.table}|{self.name}|{self.domain}|{self.level}|{digest}'


def dim_of(name: str) -> int:
  return 2 if name in IMAGES or name == 'sinusoid_2d' else 1


def table_level(dim: int, domain: str, s: Settings) -> int:
  """The wavelet level of the tables' rows (0 in the data domain)."""
  return 0 if domain == 'data' else (s.level_1d if dim == 1 else s.level_2d)


def table_jobs(s: Settings) -> list[Job]:
  """The rows of Tables I and II, in the paper's order."""
  names = [('I', 'sine'), ('I', 'sinusoid_2d')] + [('II', name) for name in signals.BENCHMARK_1D + IMAGES]
  return [Job(table, name, dim_of(name), dom, table_level(dim_of(name), dom, s))
          for table, name in names for dom in DOMAINS]


def level_jobs(s: Settings) -> list[Job]:
  """Fig. 9: the 1D sine in the wavelet domain at each decomposition level."""
  return [Job('levels', 'sine', 1, 'wavelet', level) for level in s.fig9_levels]


def get_row(rows, mode: str, s: Settings, table: str, name: str, domain: str, level: int | None = None) -> dict:
  """The finished row of (table, signal, domain[, level]) in `rows` (a RowStore or a dict by key)."""
  dim = dim_of(name)
  level = table_level(dim, domain, s) if level is None else level
  key = Job(table, name, dim, domain, level).key(mode, s.digest())
  row = rows.get(key)
  if row is None:
    raise KeyError(key)
  return row


def signal_for(name: str, s: Settings) -> np.ndarray:
  if name == 'sinusoid_2d':
    return signals.sinusoid_2d(s.size)
  if name in IMAGES:
    return signals.image(name, s.size)
  return signals.get(name, s.n)


def wavelet_arg(dim: int, length: int, level: int, mode: str, s: Settings) -> Any:
  """The wavelet argument of grid_search/recover: PyWavelets' alignment, or the reference's in quirks mode."""
  if mode == 'correct':
    return s.wavelet
  if dim == 1:  # the reference's dwtr with WaveLab's Symmlet 8 (= sym8.dec_lo reversed).
    return wv.dwt_matrix(length, s.wavelet, level, roll=wv.dwtr_roll(s.wavelet), reverse_filter=True)
  # The reference's Wavmat correlates with WaveLab's filter (reversed sym8.dec_lo), i.e. convolves with dec_lo.
  mat = wv.dwt_matrix(length, s.wavelet, level, roll=wv.wavmat_roll(s.wavelet), reverse_filter=False)
  return (mat, mat)


def threshold_settings(job: Job, mode: str, s: Settings, shape: tuple[int, ...]) -> dict[str, Any]:
  """The `srjax.threshold.Settings` fields of a row (keywords of grid_search and recover)."""
  kw = dict(a=s.a, b=s.b, n_trials=s.n_trials, domain=job.domain, reference_quirks=mode == 'quirks',
            pooling='rates' if job.dim == 2 else 'estimates')
  if job.domain == 'wavelet':
    kw['wavelet'] = wavelet_arg(job.dim, shape[0], job.level, mode, s)
    if isinstance(kw['wavelet'], str):
      kw['level'] = job.level
  return kw


def run_row(job: Job, mode: str, s: Settings) -> dict[str, Any]:
  """One grid search per noise seed (`s.noise_seeds` for table rows, one for Fig. 9's); returns a
  JSON-serialisable row: the first seed's surfaces and optimum ('best', 'amse') and every seed's optimum
  ('best_seeds': detector -> [[sigma, bandwidth, AMSE] per seed])."""
  sig = signal_for(job.name, s)
  start = time.perf_counter()
  search = lambda seed: th.grid_search(sig, jax.random.PRNGKey(seed), sigmas=s.sigmas,
                                       bandwidths=s.bandwidths(job.dim, mode),
                                       **threshold_settings(job, mode, s, sig.shape))
  res = search(s.seed)
  others = [search(s.seed + k) for k in range(1, s.noise_seeds if job.table in ('I', 'II') else 1)]
  seconds = time.perf_counter() - start
  return dict(key=job.key(mode, s.digest()), mode=mode, **dataclasses.asdict(job), seconds=round(seconds, 3),
              best={d: list(res.best[d]) for d in DETECTORS},
              best_seeds={d: [[float(v) for v in r.best[d]] for r in [res] + others] for d in DETECTORS},
              amse={d: np.round(res.amse[d], 8).tolist() for d in DETECTORS},
              sigmas=res.sigmas.tolist(), bandwidths=res.bandwidths.tolist())


def recover_at(name: str, domain: str, mode: str, s: Settings, best, detector: str) -> tuple[np.ndarray, np.ndarray]:
  """(signal, recovered estimate) at a row's optimum (sigma, bandwidth) = best[:2], for the figures."""
  sig = signal_for(name, s)
  job = Job('fig', name, sig.ndim, domain, table_level(sig.ndim, domain, s))
  est = th.recover(sig, jax.random.PRNGKey(s.seed), sigma=best[0], bandwidth=best[1], detector=detector,
                   **threshold_settings(job, mode, s, sig.shape))
  return sig, np.asarray(est)
