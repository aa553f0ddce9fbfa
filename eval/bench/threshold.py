"""Benchmark of the threshold-SR grid search (Table I, 1D): srjax's one compiled call vs a one-trial-at-a-time
NumPy port of the reference MATLAB loop.

  nice python -m eval.bench.threshold [--numpy_budget_s 120] [--with_2d]

Grid (Table I, 1D): sin(x) on linspace(pi, 8pi, 1024), a = -2, b = 2, 50 sigmas in linspace(.1, 3, 50) x 50
bandwidths x 10 trials, all three detectors, both domains (data, and sym8 wavelet coefficients at level 7 as the
reference). Bandwidths: the reference's linspace(.1, 1, 50), i.e. Gaussian sds of 10..100 samples (srjax's unit
is samples: 100 * h_ref).

Two configurations, each timed for srjax and for the NumPy port in the same run:
* `correct`: srjax's defaults (sigma in the estimator, renormalised Nadaraya-Watson with a Gaussian cut at
  4 sds = 81..801 taps, rates clipped to [1e-6, 1 - 1e-6]).
* `quirks`: `reference_quirks=True` (the reference's kernel: taps -h:0.01:h = 21..201 taps, zero padding,
  sigma-free clipped formulas).

srjax (`grid_search`): one compiled call per domain; each trial chunk's indicators are FFT-transformed once and
every bandwidth costs one float64 inverse FFT plus the estimators (this grid's kernels are too wide for the
banded path), see srjax/threshold/smoothing.py. On these 2-core machines XLA runs it mostly on one core.

The NumPy port loops over (sigma, h, trial) like the MATLAB demo: indicators, two np.convolve calls, the
estimators with scipy.special, running sums; per grid point the double combination, pywt.waverec in the wavelet
domain, and the three AMSEs. It uses the same standard-normal draws as srjax (srjax shares them over the grid),
so the benchmark also reports the largest AMSE difference between the two on the rows it timed. If the full
NumPy grid would take longer than --numpy_budget_s, it runs a subset of sigma rows and extrapolates linearly
(the output says so). Compile time is XLA's AOT compile; peak memory is XLA's static estimate for the call.
"""
from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import pywt
import scipy.special

from eval.bench import common
from srjax import threshold as th
from srjax import wavelet as wv

N, A, B, TRIALS, LEVEL, WAVELET = 1024, -2.0, 2.0, 10, 7, 'sym8'
SIGMAS = np.linspace(0.1, 3.0, 50)
H_REF = np.linspace(0.1, 1.0, 50)


def _numpy_kernel(h: float, quirks: bool) -> tuple[np.ndarray, int]:
  """Taps and the 'same' offset: the reference's -h:0.01:h kernel, or the 4-sd Gaussian on samples."""
  if quirks:
    taps = -h + 0.01 * np.arange(int(np.floor(2 * h / 0.01 + 1e-9)) + 1)
    w = np.exp(-taps ** 2 / (2 * h ** 2))
    return w / w.sum(), len(w) // 2
  half = int(np.floor(4 * h))
  k = np.arange(-half, half + 1)
  return np.exp(-0.5 * (k / h) ** 2), half


def numpy_grid_rows(signal, noise, sigma_rows, hs, *, domain: str, quirks: bool) -> np.ndarray:
  """AMSE [3, len(sigma_rows), len(hs)] by explicit loops over sigma, h and trials (one trial at a time)."""
  n = signal.size
  sizes = wv.block_sizes(n, LEVEL)
  out = np.zeros((3, len(sigma_rows), len(hs)))
  f_inv = lambda p: math.sqrt(2) * scipy.special.erfinv(2 * p - 1)
  for i, sig in enumerate(sigma_rows):
    for j, h in enumerate(hs):
      w, off = _numpy_kernel(h, quirks)
      conv = lambda v: np.convolve(v, w)[off:off + n]
      if not quirks:
        norm = conv(np.ones(n))
        sq = np.convolve(np.ones(n), w ** 2)[off:off + n] / norm ** 2
      acc_sub, acc_sup, acc_va, acc_vb = (np.zeros(n) for _ in range(4))
      for t in range(noise.shape[0]):
        d = signal if domain == 'data' else np.concatenate(
            pywt.wavedec(signal, WAVELET, mode='periodization', level=LEVEL))   # as the demo: every trial
        x = d + sig * noise[t]
        p_a = conv((x < A).astype(np.float64))
        p_b = conv((x > B).astype(np.float64))
        if quirks:
          p_a, p_b = np.clip(p_a, 0, 1), np.clip(p_b, 0, 1)
          z_a = np.clip(f_inv(p_a), -4.5, 4.5)
          z_b = np.clip(f_inv(1 - p_b), -4.5, 4.5)
          acc_sub += A - z_a
          acc_sup += B - z_b
          acc_va += p_a * (1 - p_a) * 2 * math.pi * np.exp(z_a ** 2) / n
          acc_vb += p_b * (1 - p_b) * 2 * math.pi * np.exp(z_b ** 2) / n
        else:
          p_a = np.clip(p_a / norm, 1e-6, 1 - 1e-6)
          p_b = np.clip(p_b / norm, 1e-6, 1 - 1e-6)
          z_a, z_b = scipy.special.ndtri(p_a), scipy.special.ndtri(p_b)
          acc_sub += A - sig * z_a
          acc_sup += B + sig * z_b
          acc_va += sig ** 2 * sq * p_a * (1 - p_a) * 2 * math.pi * np.exp(z_a ** 2)
          acc_vb += sig ** 2 * sq * p_b * (1 - p_b) * 2 * math.pi * np.exp(z_b ** 2)
      s_sub, s_sup, v_a, v_b = (acc / noise.shape[0] for acc in (acc_sub, acc_sup, acc_va, acc_vb))
      den = v_a + v_b
      s_dbl = np.where(den > 0, (s_sub * v_b + s_sup * v_a) / np.where(den > 0, den, 1.0), 0.5 * (s_sub + s_sup))
      for k, est in enumerate((s_sub, s_sup, s_dbl)):
        if domain == 'wavelet':
          est = pywt.waverec(np.split(est, np.cumsum(sizes)[:-1]), WAVELET, mode='periodization')
        out[k, i, j] = np.mean((est - signal) ** 2)
  return out


def srjax_compiled(signal, noise, hs, *, domain: str, quirks: bool):
  """AOT-compiles exactly the computation `th.grid_search` runs. Returns (call, compile_s, peak_mb)."""
  program = th.grid_program(jnp.asarray(signal, jnp.float32), None, sigmas=SIGMAS, bandwidths=hs,
                            noise=jnp.asarray(noise, jnp.float32), a=A, b=B, n_trials=TRIALS, domain=domain,
                            wavelet=WAVELET, level=LEVEL, reference_quirks=quirks)
  compiled, compile_s = common.compile_seconds(program)
  return (lambda: program(compiled)), compile_s, common.compiled_peak_mb(compiled)


def bench_1d(numpy_budget_s: float) -> dict[str, float]:
  signal = np.sin(np.linspace(math.pi, 8 * math.pi, N))
  noise = np.random.default_rng(0).standard_normal((TRIALS, N))
  rows, summary = [], {}
  for quirks in (False, True):
    name = 'quirks' if quirks else 'correct'
    hs = H_REF if quirks else 100 * H_REF
    jax_s = compile_s = peak = 0.0
    np_s, extrapolated, max_diff = 0.0, False, 0.0
    for domain in ('data', 'wavelet'):
      call, c_s, p_mb = srjax_compiled(signal, noise, hs, domain=domain, quirks=quirks)
      t = common.median_time(call, warmup=1, repeats=3)
      got = np.asarray(call(), np.float64)                              # [3, S, H]
      jax_s, compile_s, peak = jax_s + t, compile_s + c_s, max(peak, p_mb)
      # NumPy: one sigma row first, then decide how many rows fit in the budget.
      start = time.perf_counter()
      first = numpy_grid_rows(signal, noise, SIGMAS[:1], hs, domain=domain, quirks=quirks)
      per_row = time.perf_counter() - start
      n_rows = SIGMAS.size
      if per_row * SIGMAS.size > numpy_budget_s / 4:                     # 4 (config, domain) pairs share it
        n_rows = max(1, int(numpy_budget_s / 4 / per_row))
        extrapolated = True
      idx = np.unique(np.linspace(0, SIGMAS.size - 1, n_rows).round().astype(int))
      rest = idx[idx != 0]
      start = time.perf_counter()
      more = numpy_grid_rows(signal, noise, SIGMAS[rest], hs, domain=domain, quirks=quirks) if rest.size else None
      total = per_row + (time.perf_counter() - start)
      np_s += total * SIGMAS.size / (rest.size + 1)
      want = np.concatenate([first] + ([more] if more is not None else []), axis=1)
      have = got[:, np.concatenate([[0], rest]), :]
      max_diff = max(max_diff, float(np.max(np.abs(have - want) / np.maximum(np.abs(want), 1e-3))))
      print(f'# {name}/{domain}: srjax {t:.3f} s, NumPy {total:.1f} s on {rest.size + 1}/{SIGMAS.size} sigma rows',
            flush=True)
    rows.append({'variant': f'numpy port, {name}', 'time_s': np_s, 'ratio': 1.0, 'compile_s': 0.0,
                 'peak_mb': float('nan'), 'note': 'extrapolated from a subset of sigma rows' if extrapolated
                 else 'full grid'})
    rows.append({'variant': f'srjax grid_search, {name}', 'time_s': jax_s, 'ratio': np_s / jax_s,
                 'compile_s': compile_s, 'peak_mb': peak, 'note': f'max rel AMSE diff vs numpy {max_diff:.1e}'})
    summary[name] = (np_s / jax_s, jax_s, np_s)
  print('\n1D Table I grid: 50 sigma x 50 h x 10 trials x n=1024, 3 detectors, data + wavelet domains '
        '(times are the sum of both domains; ratio = speed-up over the NumPy port in the same run)')
  common.print_table(rows, ['variant', 'time_s', 'ratio', 'compile_s', 'peak_mb', 'note'])
  return summary


def bench_2d() -> None:
  """grid_search on the 2D 512x512 sinusoid, 100 trials: the cost the Table I/II evaluation has to budget."""
  x = np.linspace(0, 8 * math.pi, 512)
  X, Y = np.meshgrid(x, x)
  image = jnp.asarray(np.sin(X) * np.cos(Y), jnp.float32)
  sigmas, rows = np.linspace(0.5, 3.0, 10), []
  for domain in ('data', 'wavelet'):
    for pooling, hs in (('rates', [0.5, 1.0, 2.0]), ('estimates', [1.0])):
      kw = dict(a=-2.0, b=2.0, sigmas=sigmas, bandwidths=hs, n_trials=100, domain=domain, wavelet='sym8',
                level=3, pooling=pooling)
      start = time.perf_counter()
      res = th.grid_search(image, jax.random.PRNGKey(0), **kw)
      first = time.perf_counter() - start
      t = common.median_time(lambda: th.grid_search(image, jax.random.PRNGKey(0), **kw).amse['double'],
                             warmup=0, repeats=1)
      rows.append({'variant': f'{domain}, pooling={pooling}', 'grid': f'{sigmas.size}x{len(hs)}x100',
                   'time_s': t, 'first_call_s': first, 'best_double': str(tuple(round(v, 4) for v in
                                                                                 res.best['double']))})
  print('\n2D 512x512 sin(X)cos(Y), a=-2, b=2, 100 trials (wavelet: sym8 level 3)')
  common.print_table(rows, ['variant', 'grid', 'time_s', 'first_call_s', 'best_double'])
  print(f'# peak RSS so far {common.process_peak_rss_mb():.0f} MiB')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--numpy_budget_s', type=float, default=120.0,
                      help='wall-time budget for the NumPy port (all 4 config/domain pairs together)')
  parser.add_argument('--with_2d', action='store_true', help='also time the 2D 512x512 grid (100 trials)')
  args = parser.parse_args()
  print(f'# devices: {jax.devices()}')
  summary = bench_1d(args.numpy_budget_s)
  if args.with_2d:
    bench_2d()
  speedup, jax_s, np_s = summary['correct']
  q_speedup = summary['quirks'][0]
  common.print_result(speedup=float(speedup), srjax_s=float(jax_s), numpy_s=float(np_s),
                      quirks_speedup=float(q_speedup))


if __name__ == '__main__':
  main()
