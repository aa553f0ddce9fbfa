"""The trial engine of `recover` and `grid_search`: noisy trials, exceedances, smoothing and running sums.

Observation model (Eqs. 2, 8, 14): x = d + sigma eps with d = s (domain='data') or d = W s (domain='wavelet',
noise on the whole coefficient vector). The standard-normal draws eps [n_trials, *shape] are common to every
grid point and detector (common random numbers), which makes the AMSE surface smooth in sigma and the argmin
comparisons sharper. Trial chunk c is drawn from fold_in(key, c), however the chunks are grouped.

Everything here runs inside one jitted call; `Plan` is its static configuration (built by
`srjax.threshold.grid.plan`).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from srjax import wavelet as wv
from srjax.threshold import estimators
from srjax.threshold import models
from srjax.threshold import settings as st
from srjax.threshold import smoothing as sm_lib


@dataclasses.dataclass(frozen=True)
class Plan:
  """Static configuration of one compiled grid search or recovery (hashable)."""
  shape: tuple[int, ...]
  a: float
  b: float
  model: models.EstimatorModel
  reference_step: float | None   # the reference kernel's tap step, or None for the Gaussian kernel
  boundary: str
  truncate: float | None
  weights: str
  pooling: str
  n_trials: int
  chunk: int
  wavelet: bool
  h_batch: int
  axes: tuple[sm_lib.Axis, ...]   # FFT geometry per signal axis (static kernel support bound and padded length)
  banded: bool = False      # narrow kernels: shifted multiply-adds instead of FFT (`smoothing.band_limit`)
  h_group: int = 1          # bandwidths per pass over the trials (pooling='estimates'): bounds the running sums
  s_batch: int = 1          # sigmas vectorised together (pooling='rates'): bounds the FFT working set
  orthogonal: bool = True   # W is orthogonal: the AMSE is taken on the coefficients (no inverse per grid point)

  @property
  def n_total(self) -> int:
    return int(np.prod(self.shape))


def noise_chunk(plan: Plan, key, noise, c):
  """Standard-normal draws of trial chunk c: [chunk, *shape]."""
  if noise is not None:
    return jax.lax.dynamic_slice_in_dim(noise, c * plan.chunk, plan.chunk, axis=0)
  return jax.random.normal(jax.random.fold_in(key, c), (plan.chunk,) + plan.shape, jnp.float32)


def to_coeffs(plan: Plan, x, W):
  if not plan.wavelet:
    return x
  return wv.dwt(x, W[0]) if len(plan.shape) == 1 else wv.dwt2(x, W[0], W[1])


def from_coeffs(plan: Plan, c, W):
  if not plan.wavelet:
    return c
  return wv.idwt(c, W[0]) if len(plan.shape) == 1 else wv.idwt2(c, W[0], W[1])


def batched_map(f, xs, batch: int):
  """lax.map, vectorising `batch` elements at a time. batch=1 stays a plain loop: vmap would turn the per-h
  window slices (dynamic_slice at traced offsets) into gathers, about 2x slower on CPU."""
  return jax.lax.map(f, xs) if batch <= 1 else jax.lax.map(f, xs, batch_size=batch)


def largest_divisor(n: int, at_most: int) -> int:
  """Largest divisor of n that is <= at_most (>= 1): lax.map batches without a remainder (compiled twice)."""
  return max(d for d in range(1, max(1, min(n, at_most)) + 1) if n % d == 0)


def smoother_for(plan: Plan, h) -> sm_lib.Smoother:
  """Smoothing data for one bandwidth h (traced scalar)."""
  return sm_lib.smoother(plan.axes, h, plan.boundary, plan.truncate, plan.reference_step)


def scored_rates(plan: Plan, spec, nonzero_sat, full_sat, sm: sm_lib.Smoother):
  """Clipped rates p and scores z (`EstimatorModel.clip_rates`, `score`), each [2, ...] (detector a, b).

  Computed in a loop over the two detectors on purpose: XLA:CPU then keeps p and z in memory. Without the
  loop boundary it fuses the inverse normal into each consumer (every trial sum, every detector), computing it
  up to 4x (optimization_barrier does not prevent that: the CPU pipeline drops it before fusion)."""
  # Both detectors at once (one bigger FFT batch). 2D banded: the last axis's pass runs inside the loop below,
  # so that the first pass is materialised (see `smoothing.smooth`).
  split = plan.banded and len(plan.axes) == 2
  smoothed = sm_lib.smooth(spec, sm, plan.axes, plan.banded, last_axis=not split)

  def one(args):
    k, conv, nz, fl = args
    conv = sm_lib.smooth_last(conv, sm, split)
    p = plan.model.clip_rates(sm_lib.exact_windows_fix(conv * sm.scale, nz, fl, sm, plan.axes))
    return p, plan.model.score(p, k)
  return jax.lax.map(one, (jnp.arange(2), smoothed, nonzero_sat, full_sat))


_POOL_TRIALS = 16   # trials counted per scan step (pooling='rates')


def pooled_rates(plan: Plan, coeffs, sigmas, key, noise):
  """Exceedance frequencies over all trials, [2, S, *shape] (pooling='rates': smoothing is linear, so the
  trial average of the smoothed indicators is the smoothing of their trial average).

  Each scan step draws several trial chunks (the same draws as one chunk per step: chunk c always comes from
  fold_in(key, c)) and counts them in one pass, so the [2, S, *shape] counts are read and written once per
  step instead of once per chunk (memory-bound otherwise)."""
  sig = sigmas.reshape((-1, 1) + (1,) * len(plan.shape))
  n_chunks = plan.n_trials // plan.chunk
  per_step = largest_divisor(n_chunks, max(1, _POOL_TRIALS // plan.chunk))             # chunks per scan step

  def body(carry, step):
    chunks = step * per_step + jnp.arange(per_step)
    eps = jax.vmap(lambda c: noise_chunk(plan, key, noise, c))(chunks).reshape((-1,) + plan.shape)
    if eps.shape[0] <= 2 * _POOL_TRIALS:
      # Trial by trial into the stacked [2, S, *shape] counts: one elementwise pass over them (a reduction
      # over the trial axis, or one carry per detector, is several times slower on XLA:CPU).
      for t in range(eps.shape[0]):
        x = coeffs + sig[:, 0] * eps[t]                                  # [S, *shape]
        carry = carry + jnp.stack([x < plan.a, x > plan.b]).astype(jnp.float32)
      return carry, None
    x = coeffs + sig * eps[None]                                         # [S, trials, *shape]
    return carry + jnp.stack([jnp.sum(x < plan.a, axis=1, dtype=jnp.float32),
                              jnp.sum(x > plan.b, axis=1, dtype=jnp.float32)]), None
  zeros = jnp.zeros((2, sigmas.shape[0]) + plan.shape, jnp.float32)
  counts, _ = jax.lax.scan(body, zeros, jnp.arange(n_chunks // per_step))
  return counts / plan.n_trials


def pooled_tables(plan: Plan, freqs):
  """`prepare_input` and window tables (nonzero, all trials exceeded) of the pooled frequencies [2, S, *shape]."""
  prepared = sm_lib.prepare_input(freqs, plan.axes, plan.banded)
  if not plan.model.exact_windows:
    return prepared, None, None
  return prepared, sm_lib.window_table(freqs > 0, plan.axes), sm_lib.window_table(freqs >= 1, plan.axes)


def pooled_means(plan: Plan, tables, sigmas, sm: sm_lib.Smoother) -> models.Estimates:
  """pooling='rates': one estimate per grid point (each [S, *shape]) from `pooled_tables`, with
  n_eff * n_trials observations."""
  p, z = scored_rates(plan, *tables, sm)
  sig = sigmas.reshape((-1,) + (1,) * (p.ndim - 2))
  return plan.model.from_scores(p[0], p[1], z[0], z[1], a=plan.a, b=plan.b, sigma=sig,
                                inv_n_eff=sm.inv_n_eff / plan.n_trials, n_total=plan.n_total)


def _sum_pair(x, y, axis: int):
  """(sum(x, axis), sum(y, axis)) as one variadic reduction (one pass; faster on XLA:CPU)."""
  zero = jnp.zeros((), x.dtype)
  return jax.lax.reduce((x, y), (zero, zero), lambda u, v: (u[0] + v[0], u[1] + v[1]), (axis,))


def trial_means(plan: Plan, coeffs, sigmas, sms: sm_lib.Smoother, key, noise) -> models.Estimates:
  """pooling='estimates': trial-averaged `Estimates`, each [G, S, *shape], for the G bandwidths of `sms`
  (stacked). One pass over the trial chunks: each chunk's indicators are transformed once and smoothed for
  every bandwidth. Running sums of the scores z and the variances (the estimates are affine in z,
  `EstimatorModel.sub_sup`) keep memory O(G * S * numel)."""
  need_cov = plan.weights == 'optimal'
  model = plan.model
  sig = sigmas.reshape((-1, 1) + (1,) * len(plan.shape))

  def body(carry, c):
    x = coeffs + sig * noise_chunk(plan, key, noise, c)[None]           # [S, C, *shape]
    ind = jnp.stack([x < plan.a, x > plan.b])                           # [2, S, C, *shape]
    spec = sm_lib.prepare_input(ind.astype(jnp.float32), plan.axes, plan.banded)
    sat = sm_lib.window_table(ind, plan.axes) if model.exact_windows else None

    def per_h(sm):
      p, z = scored_rates(plan, spec, sat, None, sm)                   # [2, S, C, *shape]
      v = model.variance(p, z, sigma=sig, inv_n_eff=sm.inv_n_eff, n_total=plan.n_total)
      z_sum, v_sum = _sum_pair(z, v, 2)                                 # [2, S, *shape]
      if not need_cov:
        return z_sum, v_sum
      cov = model.covariance(p[0], p[1], z[0], z[1], sigma=sig, inv_n_eff=sm.inv_n_eff)
      return z_sum, v_sum, jnp.sum(cov, axis=1)
    out = batched_map(per_h, sms, min(plan.h_batch, plan.h_group))
    return tuple(acc + o for acc, o in zip(carry, out)), None
  n_h = sms.scale.shape[0]
  zeros = jnp.zeros((n_h, 2, sigmas.shape[0]) + plan.shape, jnp.float32)
  init = (zeros, zeros) + ((zeros[:, 0],) if need_cov else ())
  sums, _ = jax.lax.scan(body, init, jnp.arange(plan.n_trials // plan.chunk))
  z_bar, v_bar = sums[0] / plan.n_trials, sums[1] / plan.n_trials              # [G, 2, S, *shape]
  s_sub, s_sup = model.sub_sup(z_bar[:, 0], z_bar[:, 1], a=plan.a, b=plan.b,
                               sigma=sigmas.reshape((-1,) + (1,) * len(plan.shape)))
  cov = sums[2] / plan.n_trials if need_cov else jnp.zeros_like(s_sub)
  return models.Estimates(s_sub, s_sup, v_bar[:, 0], v_bar[:, 1], cov)


def detector_estimates(plan: Plan, means: models.Estimates, W, *, coefficients: bool = False):
  """Trial-averaged estimates [3, ...] for sub, sup, double: in the data domain, or left on the wavelet
  coefficients when `coefficients`."""
  out = jnp.stack([estimators.combine(d, means, plan.weights)[0] for d in st.DETECTORS])
  return out if coefficients else from_coeffs(plan, out, W)


def amse_all(plan: Plan, means: models.Estimates, signal, coeffs, W):
  """AMSE [3, S] of the three detectors. With an orthogonal W, ||W^T e - s|| = ||e - W s||: no inverse DWT."""
  if plan.wavelet and plan.orthogonal:
    return estimators.amse(coeffs, detector_estimates(plan, means, W, coefficients=True))
  return estimators.amse(signal, detector_estimates(plan, means, W))
