"""The figures of eval.multiscale: Figs. 3, 5-9 of arXiv 2510.20828 and the AMSE-against-sigma curves.

Every figure is saved by `eval.scaffold.save_figure` and draws the detectors in the colours of `COLORS`.
"""
from __future__ import annotations

import jax
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from eval import scaffold  # pylint: disable=wrong-import-position
from eval.multiscale.experiment import DETECTORS, DOMAINS, IMAGES, Settings  # pylint: disable=wrong-import-position
from eval.multiscale.experiment import get_row, recover_at, signal_for  # pylint: disable=wrong-import-position
from eval.multiscale.report import PRETTY  # pylint: disable=wrong-import-position
from srjax import signals  # pylint: disable=wrong-import-position
from srjax import threshold as th  # pylint: disable=wrong-import-position

COLORS = {'sub': 'tab:green', 'sup': 'tab:red', 'double': 'tab:blue', 'data': 'tab:orange', 'wavelet': 'tab:blue'}
LINESTYLES = {'data': '--', 'wavelet': '-'}
SURFACE_CMAP = 'viridis'


def _noise_draw(s: Settings, shape) -> np.ndarray:
  return np.asarray(jax.random.normal(jax.random.PRNGKey(s.seed + 1), shape))


def fig_fisher(out: str) -> str:
  """Fig. 3: Fisher information FI = fisher_double/sigma^2 over (a, b) and over (theta, sigma)."""
  fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
  # Left: theta = 0, sigma = 1; a in [-3, 0), b in (0, 3].
  a = np.linspace(-3, -0.01, 150)
  b = np.linspace(0.01, 3, 150)
  A, B = np.meshgrid(a, b, indexing='ij')
  fi = np.asarray(th.fisher_double(A, B))  # sigma = 1, theta = 0
  im = ax[0].pcolormesh(b, a, fi, shading='auto', cmap=SURFACE_CMAP)
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
  im = ax[1].pcolormesh(theta, sig, fi2.T, shading='auto', cmap=SURFACE_CMAP,
                        norm=matplotlib.colors.LogNorm(vmin=fi2.min(), vmax=fi2.max()))
  ax[1].plot(theta, sig[np.argmax(fi2, axis=1)], 'r-', lw=1.5, label='argmax over sigma')
  i, j = np.unravel_index(np.argmax(fi2), fi2.shape)
  ax[1].set(xlabel='signal theta', ylabel='noise sigma',
            title=f'FI, a = -1, b = 1 (max {fi2.max():.4f} at theta={theta[i]:.2f}, sigma={sig[j]:.2f})')
  ax[1].legend(loc='upper right', fontsize=8)
  fig.colorbar(im, ax=ax[1])
  fig.tight_layout()
  return scaffold.save_figure(fig, out, 'fig3_fisher')


def fig_recovered_1d(rows, mode: str, s: Settings, out: str) -> str:
  """Fig. 5: the sine, a noisy draw and the three detectors' recoveries, data and multiscale domains."""
  fig, ax = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
  sig = signal_for('sine', s)
  noise = _noise_draw(s, sig.shape)
  for k, dom in enumerate(DOMAINS):
    best = get_row(rows, mode, s, 'I', 'sine', dom)['best']
    ax[k].plot(sig + best['double'][0] * noise, '.', color='0.8', ms=2,
               label=f"one noisy draw, sigma={best['double'][0]:.2f}" + (' (coefficients)' if dom == 'wavelet'
                                                                          else ''))
    ax[k].plot(sig, 'k-', lw=2, label='signal')
    for det in DETECTORS:
      _, est = recover_at('sine', dom, mode, s, best[det], det)
      ax[k].plot(est, '-', color=COLORS[det], lw=1.2, label=f'{det} (AMSE {best[det][2]:.4f})')
    ax[k].axhline(s.a, color='0.5', ls='--', lw=0.8)
    ax[k].axhline(s.b, color='0.5', ls='--', lw=0.8)
    ax[k].set(title=f'{dom} domain ({mode})', ylim=(-4, 4))
    ax[k].legend(fontsize=7, ncol=3, loc='upper right')
  fig.tight_layout()
  return scaffold.save_figure(fig, out, f'fig5_sine_recovered_{mode}')


def fig_recovered_2d(rows, mode: str, s: Settings, out: str) -> str:
  """Fig. 6: sin*cos, a noisy draw and the three detectors' recoveries, data and multiscale domains."""
  fig, ax = plt.subplots(2, 5, figsize=(15, 6.4))
  sig = signal_for('sinusoid_2d', s)
  noise = _noise_draw(s, sig.shape)
  for k, dom in enumerate(DOMAINS):
    best = get_row(rows, mode, s, 'I', 'sinusoid_2d', dom)['best']
    panels = [('signal', sig), (f"noisy, sigma={best['double'][0]:.2f}", sig + best['double'][0] * noise)]
    for det in DETECTORS:
      panels.append((f'{det}: AMSE {best[det][2]:.4f}', recover_at('sinusoid_2d', dom, mode, s, best[det], det)[1]))
    for j, (title, img) in enumerate(panels):
      ax[k, j].imshow(img, cmap='gray', vmin=-1.2 if j != 1 else None, vmax=1.2 if j != 1 else None)
      ax[k, j].set_title(f'{dom}: {title}', fontsize=8)
      ax[k, j].axis('off')
  fig.tight_layout()
  return scaffold.save_figure(fig, out, f'fig6_sinusoid2d_recovered_{mode}')


def fig_benchmarks_1d(rows, mode: str, s: Settings, out: str) -> str:
  """Fig. 7: the six benchmark signals recovered by the double detector in both domains."""
  fig, ax = plt.subplots(3, 2, figsize=(12, 9))
  for a_, name in zip(ax.flat, signals.BENCHMARK_1D):
    a_.plot(signal_for(name, s), 'k-', lw=2, label='signal')
    for dom in DOMAINS:
      best = get_row(rows, mode, s, 'II', name, dom)['best']['double']
      a_.plot(recover_at(name, dom, mode, s, best, 'double')[1], '-', color=COLORS[dom], lw=1,
              label=f'{dom}: sigma {best[0]:.2f}, AMSE {best[2]:.4f}')
    a_.set_title(PRETTY[name])
    a_.legend(fontsize=7)
  fig.tight_layout()
  return scaffold.save_figure(fig, out, f'fig7_benchmarks_1d_{mode}')


def fig_images(rows, mode: str, s: Settings, out: str) -> str:
  """Fig. 8: the four images recovered by the double detector in both domains."""
  fig, ax = plt.subplots(len(IMAGES), 3, figsize=(9, 3 * len(IMAGES)))
  for r, name in enumerate(IMAGES):
    ax[r, 0].imshow(signal_for(name, s), cmap='gray', vmin=0, vmax=1)
    ax[r, 0].set_title(PRETTY[name], fontsize=8)
    for c, dom in enumerate(DOMAINS, start=1):
      best = get_row(rows, mode, s, 'II', name, dom)['best']['double']
      ax[r, c].imshow(recover_at(name, dom, mode, s, best, 'double')[1], cmap='gray', vmin=0, vmax=1)
      ax[r, c].set_title(f'double, {dom}: sigma {best[0]:.2f}, AMSE {best[2]:.4f}', fontsize=8)
    for c in range(3):
      ax[r, c].axis('off')
  fig.tight_layout()
  return scaffold.save_figure(fig, out, f'fig8_images_{mode}')


def fig_amse_vs_sigma(rows, mode: str, s: Settings, out: str) -> str:
  """AMSE (minimised over the bandwidth) against sigma, Table I signals, every detector and domain."""
  fig, ax = plt.subplots(1, 2, figsize=(12, 4.2))
  for a_, name in zip(ax, ('sine', 'sinusoid_2d')):
    for dom in DOMAINS:
      row = get_row(rows, mode, s, 'I', name, dom)
      for det in DETECTORS:
        curve = np.min(np.asarray(row['amse'][det]), axis=1)
        a_.plot(row['sigmas'], curve, LINESTYLES[dom], color=COLORS[det], label=f'{det}, {dom}')
    a_.set(yscale='log', xlabel='noise sigma', ylabel='AMSE (min over bandwidth)', title=f'{PRETTY[name]} ({mode})')
    a_.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  return scaffold.save_figure(fig, out, f'fig_amse_vs_sigma_{mode}')


def fig_levels(rows, mode: str, s: Settings, out: str) -> str:
  """Fig. 9: optimal sigma and AMSE against the wavelet decomposition level (1D sine)."""
  fig, ax = plt.subplots(1, 2, figsize=(11, 4))
  data_best = get_row(rows, mode, s, 'I', 'sine', 'data')['best']
  for det in DETECTORS:
    best = [get_row(rows, mode, s, 'levels', 'sine', 'wavelet', lv)['best'][det] for lv in s.fig9_levels]
    for k, idx in enumerate((0, 2)):   # optimal sigma, AMSE
      ax[k].plot(s.fig9_levels, [b_[idx] for b_ in best], 'o-', color=COLORS[det], label=det)
      ax[k].axhline(data_best[det][idx], color=COLORS[det], ls=':', lw=1)
  ax[0].set(xlabel='decomposition level', ylabel='optimal sigma',
            title=f'sine: optimal noise ({mode}; dotted: data domain)')
  ax[1].set(xlabel='decomposition level', ylabel='AMSE', yscale='log', title='sine: AMSE at the optimum')
  for a_ in ax:
    a_.legend(fontsize=8)
  fig.tight_layout()
  return scaffold.save_figure(fig, out, f'fig9_levels_{mode}')


PER_MODE = (fig_recovered_1d, fig_recovered_2d, fig_benchmarks_1d, fig_images, fig_amse_vs_sigma, fig_levels)
SUMMARIES = (fig_amse_vs_sigma, fig_levels)   # what --quick draws for the second mode (compile time)
