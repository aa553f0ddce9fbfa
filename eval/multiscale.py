"""Multiscale threshold SR: reproduces Tables I-II and Figs. 3, 5-9 of arXiv 2510.20828.

    python -m eval.multiscale [--out results/multiscale] [--quick] [--reference-quirks | --correct-only]
                              [--no-figures] [--fresh] [--size 512] [--n-trials 100] [--n-sigma 24]

Cost (2 CPU cores): the default run computes every Table I and Table II row twice (48 grid searches), with
srjax's correct estimators and with `reference_quirks=True`: about 40 s wall at the default 256^2 image size
and 56 s with `--size 512` (measured with the FFT smoothing path, load average ~3.5). It then draws the figures,
the Fig. 9 level sweep included (about 1.5 min more). `--quick` runs everything on tiny grids (one bandwidth, 10 trials) in
~20-30 s, mostly XLA compile time, and draws the recovered-signal figures for the first mode only (the test).

What it does
------------
For every row (signal x domain x estimator mode) `srjax.threshold.grid_search` evaluates the AMSE (Eq. 18) of
the sub, sup and double detectors over a (sigma x bandwidth) grid in one jitted call, and keeps the minimum for
each detector. One compiled function serves every signal of the same shape (thresholds are the same for all
signals, and the wavelet matrix is an argument), so the run compiles 4 grid functions per estimator mode.

Settings (fixed before looking at any result; nothing was tuned toward the paper's numbers):

* thresholds a = -2, b = 2 for every signal: all of them satisfy |s| <= 1 (sine and sin*cos in [-1, 1], the
  benchmark signals in [0.2, 0.8], images in [0, 1]), so the thresholds are at least twice the largest signal
  value, the paper's definition of a weak signal (Sec. III-A1). The same numbers apply to the wavelet
  coefficients (as in the reference code).
* sigma grid linspace(0.1, 3, n_sigma) (the reference's range), n_trials = 100 (Sec. III-A), common random
  numbers across the grid (see srjax.threshold).
* 1D (n = 1024): Nadaraya-Watson rates, estimates averaged over trials (pooling='estimates', as the paper and
  the reference). Bandwidths: correct mode 0.5, 1, 2, 4, ..., 64 samples (Gaussian sd); quirks mode the reference's
  kernel_width linspace(0.1, 1, n_h) (sd 10..100 samples, cut at +-1 sd).
* 2D (images and sin*cos, size x size, default 256; the paper uses 512, `--size 512`): the paper's parametric
  approach (Sec. III-A1, "not a time-varying signal"): per-pixel rates pooled over the trials
  (pooling='rates'), optionally smoothed by a small Gaussian (bandwidths 0.01 = none, 1, 2, 4, 8 pixels).
* wavelet domain: Symmlet 8, periodic, level 3 in 1D (the paper's text, Sec. III-B2) and in 2D (the
  reference). Correct mode uses PyWavelets' alignment; quirks mode the reference's `dwtr` alignment (1D) and
  `Wavmat` alignment (2D) from `srjax.wavelet`. Fig. 9 sweeps the 1D level.
* images: Cameraman is `pywt.data.camera()`; Barbara, Mandrill and Peppers are stand-ins from scikit-image
  (astronaut, chelsea, coffee; see `srjax.signals.IMAGE_STANDINS`), grayscale, scaled to [0, 1].

Outputs in --out: `rows.jsonl` (one JSON line per finished row, appended as soon as the row finishes: nothing
is lost on a crash, and a rerun with the same --out and settings skips the rows already there; `--fresh`
recomputes everything), PNG figures and `results.md` (tables next to the paper's numbers, the orderings the
paper claims and whether they hold, figure links, settings, timings).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from typing import Any, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from tqdm import tqdm  # pylint: disable=wrong-import-position

from srjax import signals  # pylint: disable=wrong-import-position
from srjax import threshold as th  # pylint: disable=wrong-import-position
from srjax import wavelet as wv  # pylint: disable=wrong-import-position

DETECTORS = ('sub', 'sup', 'double')
DOMAINS = ('data', 'wavelet')
MODES = ('correct', 'quirks')
IMAGES = ('barbara', 'cameraman', 'mandrill', 'peppers')

# Paper, Table I (Sec. III-B1/III-B2): (optimal sigma, AMSE) per detector, for the 1D sine and the 2D sin*cos.
PAPER_TABLE1 = {
    ('sine', 'data'): {'sub': (2.4248, 0.0373), 'sup': (2.2733, 0.0375), 'double': (2.0713, 0.0325)},
    ('sine', 'wavelet'): {'sub': (2.2228, 0.0319), 'sup': (2.1723, 0.0291), 'double': (1.5663, 0.0018)},
    ('sinusoid_2d', 'data'): {'sub': (1.3553, 0.3187), 'sup': (1.3553, 0.3184), 'double': (1.5395, 0.0012)},
    ('sinusoid_2d', 'wavelet'): {'sub': (1.4474, 0.0212), 'sup': (1.4474, 0.0218), 'double': (1.3553, 0.0017)},
}
# Paper, Table II (Sec. III-B3), double detector: ((sigma, AMSE) data domain, (sigma, AMSE) multiscale domain).
PAPER_TABLE2 = {
    'wave': ((1.3273, 0.0020), (0.8172, 0.0006)),
    'doppler': ((1.4293, 0.0124), (0.7151, 0.0033)),
    'time_shifted_sine': ((1.1232, 0.0019), (0.6131, 0.0007)),
    'angles': ((1.2252, 0.0014), (0.7151, 0.0003)),
    'blip': ((1.1232, 0.0021), (0.7151, 0.0015)),
    'parabolas': ((1.1232, 0.0012), (0.6131, 0.0005)),
    'barbara': ((1.1156, 0.0087), (0.8944, 0.0082)),
    'cameraman': ((1.1156, 0.0150), (1.1156, 0.0062)),
    'mandrill': ((1.1156, 0.0075), (0.8944, 0.0141)),
    'peppers': ((1.1156, 0.0082), (0.8944, 0.0067)),
}
PRETTY = {'sine': 'sine (1D)', 'sinusoid_2d': 'sin(X)cos(Y) (2D)', 'wave': 'Wave', 'doppler': 'Doppler',
          'time_shifted_sine': 'Time-shifted sine', 'angles': 'Angles', 'blip': 'Blip', 'parabolas': 'Parabolas',
          'barbara': 'Barbara*', 'cameraman': 'Cameraman', 'mandrill': 'Mandrill*', 'peppers': 'Peppers*'}


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that determines the numbers (hashed into each row, so a changed setting recomputes)."""
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

  def bandwidths(self, dim: int, mode: str) -> tuple[float, ...]:
    if dim == 2:
      return self.bandwidths_2d
    return self.bandwidths_1d_ref if mode == 'quirks' else self.bandwidths_1d

  def digest(self) -> str:
    return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def make_settings(quick: bool, **overrides: Any) -> Settings:
  """Default (full) or quick settings, with command-line overrides (None values are ignored)."""
  base = {}
  if quick:
    base = dict(n=128, size=32, n_trials=10, sigmas=tuple(np.linspace(0.1, 3.0, 6).round(6)),
                bandwidths_1d=(4.,), bandwidths_1d_ref=(0.1,), bandwidths_2d=(1.,), level_1d=2,
                level_2d=2, fig9_levels=(1, 2, 3))
  for k, v in overrides.items():
    if v is not None:
      base[k] = v
  return Settings(**base)


# ----------------------------------------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Job:
  table: str          # 'I', 'II' or 'levels'
  name: str           # signal or image name
  dim: int            # 1 or 2
  domain: str         # 'data' or 'wavelet'
  level: int = 0      # wavelet level (0 in the data domain)

  def key(self, mode: str, digest: str) -> str:
    return f'{mode}|{self.table}|{self.name}|{self.domain}|{self.level}|{digest}'


def table_jobs(s: Settings) -> list[Job]:
  """The rows of Tables I and II, in the paper's order."""
  def lv(dim, dom):
    return 0 if dom == 'data' else (s.level_1d if dim == 1 else s.level_2d)
  jobs = [Job('I', name, dim, dom, lv(dim, dom)) for name, dim in (('sine', 1), ('sinusoid_2d', 2))
          for dom in DOMAINS]
  jobs += [Job('II', name, 1, dom, lv(1, dom)) for name in signals.BENCHMARK_1D for dom in DOMAINS]
  jobs += [Job('II', name, 2, dom, lv(2, dom)) for name in IMAGES for dom in DOMAINS]
  return jobs


def level_jobs(s: Settings) -> list[Job]:
  """Fig. 9: the 1D sine in the wavelet domain at each decomposition level."""
  return [Job('levels', 'sine', 1, 'wavelet', level) for level in s.fig9_levels]


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


def common_kwargs(job: Job, mode: str, s: Settings, shape: tuple[int, ...]) -> dict[str, Any]:
  kw = dict(a=s.a, b=s.b, n_trials=s.n_trials, domain=job.domain, reference_quirks=mode == 'quirks',
            pooling='rates' if job.dim == 2 else 'estimates')
  if job.domain == 'wavelet':
    kw['wavelet'] = wavelet_arg(job.dim, shape[0], job.level, mode, s)
    if isinstance(kw['wavelet'], str):
      kw['level'] = job.level
  return kw


def run_row(job: Job, mode: str, s: Settings) -> dict[str, Any]:
  """One grid search; returns a JSON-serialisable row."""
  sig = signal_for(job.name, s)
  start = time.perf_counter()
  res = th.grid_search(sig, jax.random.PRNGKey(s.seed), sigmas=s.sigmas, bandwidths=s.bandwidths(job.dim, mode),
                       **common_kwargs(job, mode, s, sig.shape))
  seconds = time.perf_counter() - start
  return dict(key=job.key(mode, s.digest()), mode=mode, **dataclasses.asdict(job), seconds=round(seconds, 3),
              best={d: list(res.best[d]) for d in DETECTORS},
              amse={d: np.round(res.amse[d], 8).tolist() for d in DETECTORS},
              sigmas=res.sigmas.tolist(), bandwidths=res.bandwidths.tolist())


def load_rows(path: str) -> dict[str, dict[str, Any]]:
  """Rows already in rows.jsonl, by key. A torn last line (a crash mid-write) is ignored."""
  rows = {}
  if not os.path.exists(path):
    return rows
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      rows[row['key']] = row
  return rows


def append_row(path: str, row: dict[str, Any]) -> None:
  """Appends one row and syncs it to disk; a torn last line left by a crash is closed off first."""
  torn = False
  if os.path.exists(path) and os.path.getsize(path) > 0:
    with open(path, 'rb') as f:
      f.seek(-1, os.SEEK_END)
      torn = f.read(1) != b'\n'
  with open(path, 'a') as f:
    f.write(('\n' if torn else '') + json.dumps(row) + '\n')
    f.flush()
    os.fsync(f.fileno())


def run_jobs(jobs: Sequence[Job], modes: Sequence[str], s: Settings, path: str, rows: dict[str, dict[str, Any]],
             desc: str) -> tuple[int, int]:
  """Runs the missing (job, mode) rows with a progress bar; returns (computed, resumed)."""
  computed = resumed = 0
  todo = [(m, j) for m in modes for j in jobs]
  bar = tqdm(todo, desc=desc, unit='row', file=sys.stderr, dynamic_ncols=True)
  for mode, job in bar:
    key = job.key(mode, s.digest())
    bar.set_postfix_str(f'{mode} {job.name} {job.domain}')
    if key in rows:
      resumed += 1
      continue
    row = run_row(job, mode, s)
    append_row(path, row)
    rows[key] = row
    computed += 1
  return computed, resumed


# ----------------------------------------------------------------------------------------------------------
# Tables and orderings
# ----------------------------------------------------------------------------------------------------------

def _get(rows, mode, s, table, name, domain, level=None) -> dict[str, Any]:
  if level is None:
    level = 0 if domain == 'data' else (s.level_2d if name in IMAGES or name == 'sinusoid_2d' else s.level_1d)
  return rows[Job(table, name, 2 if name in IMAGES or name == 'sinusoid_2d' else 1, domain, level).key(
      mode, s.digest())]


def _f(x: float, digits: int = 4) -> str:
  return f'{x:.{digits}f}'


def _edge(value: float, grid: Sequence[float], text: str) -> str:
  """Marks an optimum that sits on the first or last grid point with a dagger (the grid may be too narrow)."""
  return text + ('†' if np.isclose(value, grid[0]) or np.isclose(value, grid[-1]) else '')


def table1_md(rows, mode, s) -> str:
  lines = ['| signal | detector | sigma* data | AMSE data | h* data | sigma* multiscale | AMSE multiscale | '
           'h* multiscale | paper sigma* data | paper AMSE data | paper sigma* ms | paper AMSE ms |',
           '|' + '---|' * 12]
  for name in ('sine', 'sinusoid_2d'):
    for det in DETECTORS:
      cells = [PRETTY[name], det]
      for dom in DOMAINS:
        row = _get(rows, mode, s, 'I', name, dom)
        sig, h, amse = row['best'][det]
        cells += [_edge(sig, row['sigmas'], _f(sig)), _f(amse), _edge(h, row['bandwidths'], f'{h:g}')]
      for dom in DOMAINS:
        cells += [_f(v) for v in PAPER_TABLE1[(name, dom)][det]]
      lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def table2_md(rows, mode, s) -> str:
  lines = ['| signal | sigma* data | AMSE data | sigma* multiscale | AMSE multiscale | paper sigma* data | '
           'paper AMSE data | paper sigma* ms | paper AMSE ms | AMSE data sub/sup | AMSE ms sub/sup |',
           '|' + '---|' * 11]
  for name in tuple(signals.BENCHMARK_1D) + IMAGES:
    cells = [PRETTY[name]]
    for dom in DOMAINS:
      row = _get(rows, mode, s, 'II', name, dom)
      sig, _, amse = row['best']['double']
      cells += [_edge(sig, row['sigmas'], _f(sig)), _f(amse)]
    for pair in PAPER_TABLE2[name]:
      cells += [_f(v) for v in pair]
    for dom in DOMAINS:
      best = _get(rows, mode, s, 'II', name, dom)['best']
      cells.append(f"{_f(best['sub'][2])} / {_f(best['sup'][2])}")
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def orderings(rows, mode, s) -> list[tuple[str, int, int, str]]:
  """The paper's qualitative claims: (claim, held, out of, details)."""
  out = []
  # 1. The double detector has a lower AMSE than sub and sup (Table I; also checked on Table II's rows).
  for table, names in (('I', ('sine', 'sinusoid_2d')), ('II', tuple(signals.BENCHMARK_1D) + IMAGES)):
    held, fails = 0, []
    for name in names:
      for dom in DOMAINS:
        best = _get(rows, mode, s, table, name, dom)['best']
        ok = best['double'][2] < min(best['sub'][2], best['sup'][2])
        held += ok
        if not ok:
          fails.append(f'{name}/{dom}')
    out.append((f'Table {table}: double beats sub and sup (AMSE)', held, 2 * len(names),
                'fails: ' + ', '.join(fails) if fails else 'all rows'))
  # 2./3. The multiscale domain needs less noise and gives a lower AMSE (double detector).
  for what, idx in (('needs less noise (sigma* ms < sigma* data)', 0), ('gives a lower AMSE', 2)):
    for table, names in (('I', ('sine', 'sinusoid_2d')), ('II', tuple(signals.BENCHMARK_1D) + IMAGES)):
      held, fails = 0, []
      for name in names:
        d = _get(rows, mode, s, table, name, 'data')['best']['double'][idx]
        w = _get(rows, mode, s, table, name, 'wavelet')['best']['double'][idx]
        ok = w < d
        held += ok
        if not ok:
          fails.append(f'{name} ({d:.4g} vs {w:.4g})')
      out.append((f'Table {table}: multiscale {what}, double', held, len(names),
                  'fails (data vs ms): ' + ', '.join(fails) if fails else 'all rows'))
  return out


def orderings_md(items) -> str:
  lines = ['| claim | held | details |', '|---|---|---|']
  for claim, held, total, details in items:
    lines.append(f'| {claim} | {held}/{total} | {details} |')
  return '\n'.join(lines)


def levels_md(rows, mode, s) -> str:
  lines = ['| level | ' + ' | '.join(f'sigma* {d} | AMSE {d}' for d in DETECTORS) + ' |', '|' + '---|' * 7]
  for level in s.fig9_levels:
    best = _get(rows, mode, s, 'levels', 'sine', 'wavelet', level)['best']
    lines.append(f'| {level} | ' + ' | '.join(f'{_f(best[d][0])} | {_f(best[d][2])}' for d in DETECTORS) + ' |')
  return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------

def fig_fisher(path: str) -> str:
  """Fig. 3: Fisher information FI = fisher_double/sigma^2 over (a, b) and over (theta, sigma)."""
  fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
  # Left: theta = 0, sigma = 1; a in [-3, 0), b in (0, 3].
  a = np.linspace(-3, -0.01, 150)
  b = np.linspace(0.01, 3, 150)
  A, B = np.meshgrid(a, b, indexing='ij')
  fi = np.asarray(th.fisher_double(A, B))  # sigma = 1, theta = 0
  im = ax[0].pcolormesh(b, a, fi, shading='auto', cmap='viridis')
  ax[0].plot(b[np.argmax(fi, axis=1)], a, 'r-', lw=1.5, label='argmax over b')
  ax[0].set(xlabel='upper threshold b', ylabel='lower threshold a',
            title=f'FI, theta = 0, sigma = 1 (max {fi.max():.4f})')
  ax[0].legend(loc='lower right', fontsize=8)
  fig.colorbar(im, ax=ax[0])
  # Right: a = -1, b = 1; theta in [-2, 2], sigma in [0.5, 3] (log colour scale).
  theta = np.linspace(-2, 2, 161)
  sig = np.linspace(0.5, 3, 126)
  T, S = np.meshgrid(theta, sig, indexing='ij')
  fi2 = np.asarray(th.fisher_double((-1 - T) / S, (1 - T) / S)) / S ** 2
  im = ax[1].pcolormesh(theta, sig, fi2.T, shading='auto', cmap='viridis',
                        norm=matplotlib.colors.LogNorm(vmin=fi2.min(), vmax=fi2.max()))
  ax[1].plot(theta, sig[np.argmax(fi2, axis=1)], 'r-', lw=1.5, label='argmax over sigma')
  i, j = np.unravel_index(np.argmax(fi2), fi2.shape)
  ax[1].set(xlabel='signal theta', ylabel='noise sigma',
            title=f'FI, a = -1, b = 1 (max {fi2.max():.4f} at theta={theta[i]:.2f}, sigma={sig[j]:.2f})')
  ax[1].legend(loc='upper right', fontsize=8)
  fig.colorbar(im, ax=ax[1])
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return os.path.basename(path)


def _recover(name: str, job_domain: str, mode: str, s: Settings, best: Sequence[float], detector: str):
  sig = signal_for(name, s)
  dim = sig.ndim
  level = 0 if job_domain == 'data' else (s.level_1d if dim == 1 else s.level_2d)
  kw = common_kwargs(Job('fig', name, dim, job_domain, level), mode, s, sig.shape)
  est = th.recover(sig, jax.random.PRNGKey(s.seed), sigma=best[0], bandwidth=best[1], detector=detector, **kw)
  return sig, np.asarray(est)


def fig_recovered_1d(rows, mode, s, out_dir) -> str:
  """Fig. 5: the sine, a noisy draw and the three detectors' recoveries, data and multiscale domains."""
  fig, ax = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
  colors = {'sub': 'tab:green', 'sup': 'tab:red', 'double': 'tab:blue'}
  for k, dom in enumerate(DOMAINS):
    best = _get(rows, mode, s, 'I', 'sine', dom)['best']
    sig = signal_for('sine', s)
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(s.seed + 1), sig.shape))
    ax[k].plot(sig + best['double'][0] * noise, '.', color='0.8', ms=2,
               label=f"one noisy draw, sigma={best['double'][0]:.2f}" + (' (coefficients)' if dom == 'wavelet'
                                                                          else ''))
    ax[k].plot(sig, 'k-', lw=2, label='signal')
    for det in DETECTORS:
      _, est = _recover('sine', dom, mode, s, best[det], det)
      ax[k].plot(est, '-', color=colors[det], lw=1.2, label=f'{det} (AMSE {best[det][2]:.4f})')
    ax[k].axhline(s.a, color='0.5', ls='--', lw=0.8)
    ax[k].axhline(s.b, color='0.5', ls='--', lw=0.8)
    ax[k].set(title=f'{dom} domain ({mode})', ylim=(-4, 4))
    ax[k].legend(fontsize=7, ncol=3, loc='upper right')
  fig.tight_layout()
  name = f'fig5_sine_recovered_{mode}.png'
  fig.savefig(os.path.join(out_dir, name), dpi=90)
  plt.close(fig)
  return name


def fig_recovered_2d(rows, mode, s, out_dir) -> str:
  """Fig. 6: sin*cos, a noisy draw and the three detectors' recoveries, data and multiscale domains."""
  fig, ax = plt.subplots(2, 5, figsize=(15, 6.4))
  for k, dom in enumerate(DOMAINS):
    best = _get(rows, mode, s, 'I', 'sinusoid_2d', dom)['best']
    sig = signal_for('sinusoid_2d', s)
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(s.seed + 1), sig.shape))
    panels = [('signal', sig), (f"noisy, sigma={best['double'][0]:.2f}", sig + best['double'][0] * noise)]
    for det in DETECTORS:
      panels.append((f'{det}: AMSE {best[det][2]:.4f}', _recover('sinusoid_2d', dom, mode, s, best[det], det)[1]))
    for j, (title, img) in enumerate(panels):
      ax[k, j].imshow(img, cmap='gray', vmin=-1.2 if j != 1 else None, vmax=1.2 if j != 1 else None)
      ax[k, j].set_title(f'{dom}: {title}', fontsize=8)
      ax[k, j].axis('off')
  fig.tight_layout()
  name = f'fig6_sinusoid2d_recovered_{mode}.png'
  fig.savefig(os.path.join(out_dir, name), dpi=80)
  plt.close(fig)
  return name


def fig_benchmarks_1d(rows, mode, s, out_dir) -> str:
  """Fig. 7: the six benchmark signals recovered by the double detector in both domains."""
  fig, ax = plt.subplots(3, 2, figsize=(12, 9))
  for a_, name in zip(ax.flat, signals.BENCHMARK_1D):
    sig = signal_for(name, s)
    a_.plot(sig, 'k-', lw=2, label='signal')
    for dom, color in zip(DOMAINS, ('tab:orange', 'tab:blue')):
      best = _get(rows, mode, s, 'II', name, dom)['best']['double']
      a_.plot(_recover(name, dom, mode, s, best, 'double')[1], '-', color=color, lw=1,
              label=f'{dom}: sigma {best[0]:.2f}, AMSE {best[2]:.4f}')
    a_.set_title(PRETTY[name])
    a_.legend(fontsize=7)
  fig.tight_layout()
  name = f'fig7_benchmarks_1d_{mode}.png'
  fig.savefig(os.path.join(out_dir, name), dpi=80)
  plt.close(fig)
  return name


def fig_images(rows, mode, s, out_dir) -> str:
  """Fig. 8: the four images recovered by the double detector in both domains."""
  fig, ax = plt.subplots(len(IMAGES), 3, figsize=(9, 3 * len(IMAGES)))
  for r, name in enumerate(IMAGES):
    sig = signal_for(name, s)
    ax[r, 0].imshow(sig, cmap='gray', vmin=0, vmax=1)
    ax[r, 0].set_title(PRETTY[name], fontsize=8)
    for c, dom in enumerate(DOMAINS, start=1):
      best = _get(rows, mode, s, 'II', name, dom)['best']['double']
      ax[r, c].imshow(_recover(name, dom, mode, s, best, 'double')[1], cmap='gray', vmin=0, vmax=1)
      ax[r, c].set_title(f'double, {dom}: sigma {best[0]:.2f}, AMSE {best[2]:.4f}', fontsize=8)
    for c in range(3):
      ax[r, c].axis('off')
  fig.tight_layout()
  name = f'fig8_images_{mode}.png'
  fig.savefig(os.path.join(out_dir, name), dpi=80)
  plt.close(fig)
  return name


def fig_amse_vs_sigma(rows, mode, s, out_dir) -> str:
  """AMSE (minimised over the bandwidth) against sigma, Table I signals, every detector and domain."""
  fig, ax = plt.subplots(1, 2, figsize=(12, 4.2))
  styles = {'data': '--', 'wavelet': '-'}
  colors = {'sub': 'tab:green', 'sup': 'tab:red', 'double': 'tab:blue'}
  for a_, name in zip(ax, ('sine', 'sinusoid_2d')):
    for dom in DOMAINS:
      row = _get(rows, mode, s, 'I', name, dom)
      for det in DETECTORS:
        curve = np.min(np.asarray(row['amse'][det]), axis=1)
        a_.plot(row['sigmas'], curve, styles[dom], color=colors[det], label=f'{det}, {dom}')
    a_.set(yscale='log', xlabel='noise sigma', ylabel='AMSE (min over bandwidth)', title=f'{PRETTY[name]} ({mode})')
    a_.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  name = f'fig_amse_vs_sigma_{mode}.png'
  fig.savefig(os.path.join(out_dir, name), dpi=90)
  plt.close(fig)
  return name


def fig_levels(rows, mode, s, out_dir) -> str:
  """Fig. 9: optimal sigma and AMSE against the wavelet decomposition level (1D sine)."""
  fig, ax = plt.subplots(1, 2, figsize=(11, 4))
  colors = {'sub': 'tab:green', 'sup': 'tab:red', 'double': 'tab:blue'}
  data_best = _get(rows, mode, s, 'I', 'sine', 'data')['best']
  for det in DETECTORS:
    best = [_get(rows, mode, s, 'levels', 'sine', 'wavelet', lv)['best'][det] for lv in s.fig9_levels]
    ax[0].plot(s.fig9_levels, [b_[0] for b_ in best], 'o-', color=colors[det], label=det)
    ax[1].plot(s.fig9_levels, [b_[2] for b_ in best], 'o-', color=colors[det], label=det)
    ax[0].axhline(data_best[det][0], color=colors[det], ls=':', lw=1)
    ax[1].axhline(data_best[det][2], color=colors[det], ls=':', lw=1)
  ax[0].set(xlabel='decomposition level', ylabel='optimal sigma', title=f'sine: optimal noise ({mode}; dotted: data domain)')
  ax[1].set(xlabel='decomposition level', ylabel='AMSE', yscale='log', title='sine: AMSE at the optimum')
  for a_ in ax:
    a_.legend(fontsize=8)
  fig.tight_layout()
  name = f'fig9_levels_{mode}.png'
  fig.savefig(os.path.join(out_dir, name), dpi=90)
  plt.close(fig)
  return name


# ----------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------

def settings_md(s: Settings) -> str:
  return '\n'.join([
      f'- thresholds a = {s.a}, b = {s.b} for every signal and in both domains; {s.n_trials} trials; '
      f'sigma grid linspace({s.sigmas[0]}, {s.sigmas[-1]}, {len(s.sigmas)}); seed {s.seed} '
      '(common random numbers across the grid).',
      f'- 1D: n = {s.n}; per-trial Nadaraya-Watson estimates averaged over trials; bandwidths (Gaussian sd, '
      f'samples) {list(s.bandwidths_1d)} in correct mode, reference kernel_width {list(s.bandwidths_1d_ref)} '
      '(sd = 100 h samples, cut at +-1 sd) in quirks mode.',
      f'- 2D: {s.size}x{s.size}; per-pixel rates pooled over trials (the paper\'s parametric approach), '
      f'smoothed with bandwidths {list(s.bandwidths_2d)} pixels (0.01 = no smoothing).',
      f'- wavelet domain: {s.wavelet}, periodic, level {s.level_1d} (1D) / {s.level_2d} (2D); PyWavelets alignment '
      '(correct) or the reference\'s dwtr/Wavmat alignment (quirks).',
      '- images marked * are stand-ins: ' + ', '.join(
          f'{k} -> {v}' for k, v in signals.IMAGE_STANDINS.items()) + ' (srjax.signals), grayscale in [0, 1].',
      f'- settings digest {s.digest()}.'])


def write_results(out_dir, rows, modes, s, figures, timings) -> str:
  parts = ['# Multiscale threshold SR: Tables I-II and Figs. 3, 5-9 (arXiv 2510.20828)', '',
           'Generated by `python -m eval.multiscale`. Optimal sigma and AMSE from `srjax.threshold.grid_search`'
           ' next to the paper\'s numbers (Table I: Sec. III-B1/III-B2; Table II: Sec. III-B3, double detector).'
           ' The paper\'s bandwidth grids and drivers are unpublished and a port of its code does not reproduce'
           ' its Table I (REFERENCE_NOTES.md); nothing here was tuned toward its numbers.', '',
           '## Settings', settings_md(s), '', '## Timing', timings, '']
  titles = {'correct': 'Correct estimators (s = a - sigma Phi^-1(p), srjax default)',
            'quirks': 'reference_quirks=True (the reference MATLAB code\'s sigma-free estimators)'}
  for mode in modes:
    parts += [f'## {titles[mode]}', '', '### Table I', table1_md(rows, mode, s), '',
              '### Table II (double detector; last two columns: sub / sup AMSE)', table2_md(rows, mode, s), '',
              '† = the optimum lies on the edge of the grid.', '',
              '### The paper\'s orderings', orderings_md(orderings(rows, mode, s)), '']
    if all(Job('levels', 'sine', 1, 'wavelet', lv).key(mode, s.digest()) in rows for lv in s.fig9_levels):
      parts += ['### Fig. 9: the 1D sine in the wavelet domain against the level', levels_md(rows, mode, s), '']
    figs = [f for f in figures if f.endswith(f'_{mode}.png')]
    if figs:
      parts += ['### Figures'] + [f'![{f}]({f})' for f in figs] + ['']
  common = [f for f in figures if not any(f.endswith(f'_{m}.png') for m in MODES)]
  if common:
    parts += ['## Fisher information (Fig. 3)'] + [f'![{f}]({f})' for f in common] + [
        '', f'Maxima of the proportion of information kept (srjax.threshold.fisher_double_maximum): constrained '
        f'(z_a = 0) {th.fisher_double_maximum(True)[0]:.6f}, unconstrained {th.fisher_double_maximum(False)[0]:.6f}'
        ' (published: 0.759569, 0.809826).', '']
  text = '\n'.join(parts)
  with open(os.path.join(out_dir, 'results.md'), 'w') as f:
    f.write(text)
  return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog='python -m eval.multiscale', description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--out', default='results/multiscale', help='output directory (rows.jsonl, PNGs, results.md)')
  p.add_argument('--quick', action='store_true', help='tiny grids and sizes (smoke test)')
  group = p.add_mutually_exclusive_group()
  group.add_argument('--reference-quirks', action='store_true', help='only the reference_quirks=True section')
  group.add_argument('--correct-only', action='store_true', help='only the correct-estimator section')
  p.add_argument('--no-figures', action='store_true', help='tables only (skips figures and the Fig. 9 sweep)')
  p.add_argument('--fresh', action='store_true', help='recompute every row (deletes rows.jsonl)')
  p.add_argument('--size', type=int, default=None, help='image side length (default 256; paper 512)')
  p.add_argument('--n', type=int, default=None, help='1D signal length (default 1024)')
  p.add_argument('--n-trials', type=int, default=None, help='noisy repetitions per grid point (default 100)')
  p.add_argument('--n-sigma', type=int, default=None, help='points in linspace(0.1, 3, n_sigma) (default 24)')
  p.add_argument('--level', type=int, default=None, help='1D wavelet level for the tables (default 3)')
  p.add_argument('--seed', type=int, default=None)
  args = p.parse_args(argv)
  for name in ('size', 'n', 'n_trials', 'n_sigma', 'level'):
    v = getattr(args, name)
    if v is not None and v < 1:
      p.error(f'--{name.replace("_", "-")} must be >= 1, got {v}')
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  s = make_settings(args.quick, size=args.size, n=args.n, n_trials=args.n_trials, level_1d=args.level,
                    seed=args.seed,
                    sigmas=None if args.n_sigma is None else tuple(np.linspace(0.1, 3.0, args.n_sigma).round(6)))
  modes = ('quirks',) if args.reference_quirks else ('correct',) if args.correct_only else MODES
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, 'rows.jsonl')
  if args.fresh and os.path.exists(path):
    os.remove(path)
  rows = load_rows(path)
  print(f'eval.multiscale: settings {s.digest()}, modes {modes}, out {args.out}, JAX {jax.devices()[0].platform}',
        flush=True)

  load_start = os.getloadavg()[0]
  start, cpu_start = time.perf_counter(), time.process_time()
  computed, resumed = run_jobs(table_jobs(s), modes, s, path, rows, 'Tables I+II')
  table_seconds = time.perf_counter() - start
  cpu_seconds = time.process_time() - cpu_start
  msg = (f'Tables I + II ({len(modes)} mode(s), {computed} rows computed, {resumed} resumed from rows.jsonl): '
         f'{table_seconds:.1f} s wall, {cpu_seconds:.1f} s CPU (all threads) on {os.cpu_count()} CPU(s)')
  print(msg, flush=True)
  timings = [f'- {msg}; 1-min load average {load_start:.1f} before, {os.getloadavg()[0]:.1f} after (other '
             'processes share the cores when it is above the core count).']

  figures = []
  if not args.no_figures:
    start = time.perf_counter()
    c2, r2 = run_jobs(level_jobs(s), modes, s, path, rows, 'Fig. 9 levels')
    figures.append(fig_fisher(os.path.join(args.out, 'fig3_fisher.png')))
    for k, mode in enumerate(modes):
      fns = [fig_amse_vs_sigma, fig_levels]
      if k == 0 or not args.quick:  # --quick draws the recovered signals for one mode only (compile time)
        fns = [fig_recovered_1d, fig_recovered_2d, fig_benchmarks_1d, fig_images] + fns
      for fn in fns:
        figures.append(fn(rows, mode, s, args.out))
    fig_seconds = time.perf_counter() - start
    timings.append(f'- Figures (Fig. 9 sweep: {c2} rows computed, {r2} resumed): {fig_seconds:.1f} s.')
    print(timings[-1][2:], flush=True)
  text = write_results(args.out, rows, modes, s, figures, '\n'.join(timings))
  print(text)
  return dict(rows=rows, settings=s, table_seconds=table_seconds, figures=figures)


if __name__ == '__main__':
  main()
