"""Threshold detectors and stochastic-resonance signal recovery (sub, sup and double threshold).

Implements Vimalajeewa et al., "A Multiscale Approach for Enhancing Weak Signal Detection":

* observation model (Eqs. 1-2, 8): x_i = s_i + sigma * eps_i, eps ~ N(0, 1); the receiver only sees
  I_a = 1{x < a} and I_b = 1{x > b}, with a < b;
* exceedance rates p_a = P(x < a) = Phi((a - s)/sigma), p_b = P(x > b) = 1 - Phi((b - s)/sigma), estimated by
  Nadaraya-Watson kernel smoothing (Sec. II-C) or by pooling (Sec. II-B, constant signal);
* the sub / sup estimators (Eqs. 4, 9): s_sub = a - sigma * Phi^{-1}(p_a), s_sup = b - sigma * Phi^{-1}(1 - p_b)
  (= b + sigma * Phi^{-1}(p_b)), with delta-method variances (Eqs. 5, 21)
  v = sigma^2 p (1 - p) / (n_eff * phi(Phi^{-1}(p))^2);
* the double-threshold estimator (Eqs. 6, 10): the variance-weighted average (s_sub v_b + s_sup v_a)/(v_a + v_b),
  or with the covariance-aware optimal weights of Appendix A (Eq. 20);
* the multiscale domain (Sec. II-D, Eqs. 14-17): noise, detection and estimation on the orthogonal wavelet
  coefficients d = W s; the trial-averaged estimate is mapped back with W^T;
* AMSE (Eq. 18) and the grid search over (sigma, bandwidth) of Sec. III-A;
* the proportion of Fisher information kept by one and two thresholds (Sec. II-E; Greenwood et al. 1999).

Units and conventions
---------------------
* `bandwidth` is the standard deviation of the Gaussian kernel in SAMPLES (unit spacing). The kernel is cut at
  `truncate` standard deviations (default 4, like `scipy.ndimage.gaussian_filter1d`).
* With `reference_quirks=True` the bandwidth is the reference MATLAB code's `kernel_width` instead: its 1D kernel
  has taps at `-h:0.01:h`, i.e. a Gaussian with a standard deviation of 100*h samples cut at +-1 standard
  deviation (and not symmetric when 2h/0.01 is not an integer); its 2D kernel has taps at `-h:1:h` (h samples,
  cut at +-1 sd). So the reference grid `linspace(.1, 1, 50)` is 10..100 samples. To run srjax's correct
  estimator on the same scales, pass `bandwidth = 100 * h_ref` (1D).
* Thresholds a, b apply to whatever is observed: the samples (domain='data') or the wavelet coefficients
  (domain='wavelet'). The reference uses the same numbers in both domains; so does srjax unless told otherwise.
* `boundary='renormalize'` is the Nadaraya-Watson estimator proper (weights renormalised over the samples that
  exist); `boundary='zeros'` divides by the whole kernel's mass, like the reference's zero-padded
  `conv(..., 'same')`, which biases the rates towards 0 near the ends.

What `reference_quirks=True` reproduces (REFERENCE_NOTES.md, Multiscale threshold SR)
--------------------------------------------------------------------------------------
* the sigma-free estimators s_sub = a - clip(Phi^{-1}(p_a), -v, v), s_sup = b - clip(Phi^{-1}(1 - p_b), -v, v),
  with v = 4.5 in 1D and 6 in 2D (`v_clip`);
* variances p(1-p) / (N phi(clip(Phi^{-1}(p)))^2) with N = the number of samples of the whole signal, no sigma;
* the reference kernel (above) with zero padding, MATLAB's 'same' alignment (offset floor(L/2));
* exact 0/1 rates are not clipped (a detector that saw nothing gets variance 0, hence all the weight).
Where the reference divides 0 by 0 (both variances 0: NaN there), srjax uses equal weights. The reference's
extra `smoothdata(..., 'gaussian', ww)` post-smoothing (only in its benchmark-signal drivers) is not reproduced.

Grid search and noise
---------------------
`grid_search` evaluates every (sigma, bandwidth) pair for all three detectors in one jitted computation. The
standard-normal draws eps [n_trials, *shape] are common to all grid points and detectors (common random
numbers: x = s + sigma * eps), which makes the AMSE surface smooth in sigma and the argmin comparisons sharper.

Cost. Smoothing is a dense [n, n] matmul per axis (exact for any kernel), or, when the largest kernel
half-width in the grid is <= 8 samples, shifted multiply-adds over the band (faster there, measured). With
pooling='estimates' every (sigma, h, trial) needs its own smoothing and two Phi^{-1} per sample, so the 1D
Table I grid (50 x 50 x 10 x 1024) is ~105 GFLOP of matmul plus ~51M inverse-normal evaluations per domain.
pooling='rates' smooths once per (sigma, h) and is the practical choice for 512x512 images with 100 trials.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.special
from jax.scipy import special as jsp

from srjax import wavelet as wv

__all__ = [
    'fisher_single', 'fisher_double', 'fisher_double_maximum', 'indicators', 'kernel_matrix', 'kernel_rates',
    'sub_sup_estimates', 'double_weights', 'estimator_covariance', 'estimate', 'estimate_constant', 'amse',
    'recover', 'grid_search', 'GridResult', 'DETECTORS', 'DOMAINS', 'BOUNDARIES',
]

DETECTORS = ('sub', 'sup', 'double')
DOMAINS = ('data', 'wavelet')
BOUNDARIES = ('renormalize', 'zeros')
WEIGHTS = ('variance', 'optimal')
POOLINGS = ('estimates', 'rates')
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_REFERENCE_STEP = {1: 0.01, 2: 1.0}   # tap spacing of the reference kernel, in the reference's bandwidth unit
_REFERENCE_V = {1: 4.5, 2: 6.0}       # the reference's clipping constant v


# ----------------------------------------------------------------------------------------------------------
# Fisher information (Sec. II-E; Greenwood, Ward & Wefelmeyer 1999)
# ----------------------------------------------------------------------------------------------------------

def _log_phi(z, xp):
  return -0.5 * z * z - _LOG_SQRT_2PI


def _fisher_single(z, xp, log_ndtr):
  return xp.exp(2.0 * _log_phi(z, xp) - log_ndtr(z) - log_ndtr(-z))


def _log_interval(z_lo, z_hi, xp, log_ndtr):
  """log(Phi(z_hi) - Phi(z_lo)) for z_lo < z_hi, without cancellation in either tail."""
  # Upper tail (z_lo >= 0): Phi(-z_lo) - Phi(-z_hi). Lower or straddling: Phi(z_hi) - Phi(z_lo).
  upper = z_lo >= 0
  big = xp.where(upper, log_ndtr(-z_lo), log_ndtr(z_hi))
  small = xp.where(upper, log_ndtr(-z_hi), log_ndtr(z_lo))
  return big + xp.log1p(-xp.exp(small - big))


def _fisher_double(z_a, z_b, xp, log_ndtr):
  z_lo = xp.minimum(z_a, z_b)
  z_hi = xp.maximum(z_a, z_b)
  lphi_lo, lphi_hi = _log_phi(z_lo, xp), _log_phi(z_hi, xp)
  outer = xp.exp(2.0 * lphi_lo - log_ndtr(z_lo)) + xp.exp(2.0 * lphi_hi - log_ndtr(-z_hi))
  # Middle cell: (phi(z_hi) - phi(z_lo))^2 / (Phi(z_hi) - Phi(z_lo)), in log space around the larger phi.
  distinct = (z_hi - z_lo) > 1e-6
  z_hi_s = xp.where(distinct, z_hi, z_lo + 1.0)   # a safe stand-in where the cell is empty
  lphi_hi_s = _log_phi(z_hi_s, xp)
  lmax = xp.maximum(lphi_lo, lphi_hi_s)
  diff = xp.exp(lphi_lo - lmax) - xp.exp(lphi_hi_s - lmax)
  log_num = 2.0 * (lmax + xp.log(xp.where(diff != 0, xp.abs(diff), 1.0)))
  middle = xp.exp(log_num - _log_interval(z_lo, z_hi_s, xp, log_ndtr))
  return outer + xp.where(distinct & (diff != 0), middle, 0.0)


_fisher_single_jit = jax.jit(lambda z: _fisher_single(z, jnp, jsp.log_ndtr))
_fisher_double_jit = jax.jit(lambda z_a, z_b: _fisher_double(z_a, z_b, jnp, jsp.log_ndtr))


def fisher_single(z: jnp.ndarray) -> jnp.ndarray:
  """Proportion of Fisher information kept by one threshold: phi(z)^2 / (Phi(z)(1 - Phi(z))).

  z = (eta - theta)/sigma (threshold minus signal, in noise units); the proportion is FI * sigma^2 (Sec. II-E).
  Maximum 2/pi at z = 0. Computed in log space (log_ndtr), so it is finite for every finite z.

  Args:
    z: array, any shape.
  Returns:
    Same shape, float.
  """
  return _fisher_single_jit(jnp.asarray(z, dtype=jnp.result_type(float)))


def fisher_double(z_a: jnp.ndarray, z_b: jnp.ndarray) -> jnp.ndarray:
  """Proportion of Fisher information kept by two thresholds (the ternary observation {x<a}, between, {x>b}).

  phi(z_a)^2/Phi(z_a) + (phi(z_b) - phi(z_a))^2/(Phi(z_b) - Phi(z_a)) + phi(z_b)^2/(1 - Phi(z_b)), with
  z_a = (a - theta)/sigma, z_b = (b - theta)/sigma (Greenwood et al. 1999; Sec. II-E). Symmetric in the two
  arguments (the formula is applied to the sorted pair); z_a = z_b reduces to `fisher_single`.

  Args:
    z_a, z_b: broadcastable arrays.
  Returns:
    The broadcast shape, float; finite for all finite inputs.
  """
  return _fisher_double_jit(jnp.asarray(z_a, dtype=jnp.result_type(float)),
                            jnp.asarray(z_b, dtype=jnp.result_type(float)))


def fisher_double_maximum(constrained: bool) -> tuple[float, float, float]:
  """Numerical maximum of `fisher_double` (float64, SciPy).

  Args:
    constrained: True fixes z_a = 0 (the signal sits on the lower threshold, as in Greenwood et al.'s
      sub-threshold setting) and maximises over z_b >= 0; False maximises over both.
  Returns:
    (value, z_a, z_b). Published values: 0.759569 at z_b ~ 0.98 (constrained); 0.809826 at z = -+0.612.
  """
  f = lambda za, zb: float(_fisher_double(np.float64(za), np.float64(zb), np, scipy.special.log_ndtr))
  if constrained:
    res = scipy.optimize.minimize_scalar(lambda zb: -f(0.0, zb), bounds=(0.0, 5.0), method='bounded',
                                         options={'xatol': 1e-10})
    return -float(res.fun), 0.0, float(res.x)
  res = scipy.optimize.minimize(lambda v: -f(v[0], v[1]), x0=np.array([-0.5, 0.7]), method='Nelder-Mead',
                                options={'xatol': 1e-10, 'fatol': 1e-14, 'maxiter': 4000})
  za, zb = sorted(float(v) for v in res.x)
  return -float(res.fun), za, zb


# ----------------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------------

def _check_thresholds(a: Any, b: Any) -> tuple[float, float]:
  try:
    a_f, b_f = float(a), float(b)
  except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
    raise TypeError(f'a and b must be concrete scalars, got a={a!r}, b={b!r}.') from None
  if not (np.isfinite(a_f) and np.isfinite(b_f)):
    raise ValueError(f'a and b must be finite, got a={a_f}, b={b_f}.')
  if a_f >= b_f:
    raise ValueError(f'the lower threshold a must be < the upper threshold b, got a={a_f}, b={b_f}.')
  return a_f, b_f


def _check_positive(name: str, value: Any) -> np.ndarray:
  arr = np.asarray(value, dtype=np.float64)
  if arr.size == 0:
    raise ValueError(f'{name} must not be empty.')
  if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
    raise ValueError(f'{name} must be finite and > 0, got {value!r}.')
  return arr


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
  if value not in choices:
    raise ValueError(f'{name}={value!r} is not one of {tuple(choices)}.')
  return value


def _check_axes(axes: Any) -> int:
  if axes not in (1, 2):
    raise ValueError(f'axes must be 1 (last axis) or 2 (last two axes), got {axes!r}.')
  return axes


# ----------------------------------------------------------------------------------------------------------
# Indicators and kernel rates (Eq. 1, Sec. II-C)
# ----------------------------------------------------------------------------------------------------------

def indicators(x: jnp.ndarray, a: float, b: float) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The threshold observations of Eq. 1: (I_a, I_b) = (1{x < a}, 1{x > b}).

  Args:
    x: noisy observations, any shape.
    a, b: thresholds, a < b (ValueError otherwise).
  Returns:
    Two float32 arrays of x's shape.
  """
  a, b = _check_thresholds(a, b)
  x = jnp.asarray(x)
  return (x < a).astype(jnp.float32), (x > b).astype(jnp.float32)


def _kernel_weights(n: int, bandwidth, truncate: float | None, reference_step: float | None):
  """Unnormalised [n, n] weights w[i, j] (output i, input j) and the whole kernel's mass."""
  h = jnp.asarray(bandwidth, jnp.float32)
  i = jnp.arange(n)[:, None]
  j = jnp.arange(n)[None, :]
  if reference_step is None:
    d = (i - j).astype(jnp.float32)
    w = jnp.exp(-0.5 * jnp.square(d / h))
    k_all = jnp.arange(-(n - 1), n, dtype=jnp.float32)
    w_all = jnp.exp(-0.5 * jnp.square(k_all / h))
    if truncate is not None:
      w = jnp.where(jnp.abs(d) <= truncate * h, w, 0.0)
      w_all = jnp.where(jnp.abs(k_all) <= truncate * h, w_all, 0.0)
    return w, jnp.sum(w_all)
  # MATLAB: taps t_k = -h + step*k, k = 0..L-1, L = floor(2h/step) + 1; conv(data, ker, 'same') takes the
  # full convolution from offset floor(L/2), so out[i] = sum_k ker[k] data[i + floor(L/2) - k].
  n_taps = jnp.floor(2.0 * h / reference_step + 1e-4).astype(jnp.int32) + 1
  center = n_taps // 2
  k = i - j + center
  t = -h + reference_step * k.astype(jnp.float32)
  w = jnp.where((k >= 0) & (k < n_taps), jnp.exp(-0.5 * jnp.square(t / h)), 0.0)
  k_all = jnp.arange(4 * n + 1)
  t_all = -h + reference_step * k_all.astype(jnp.float32)
  mass = jnp.sum(jnp.where(k_all < n_taps, jnp.exp(-0.5 * jnp.square(t_all / h)), 0.0))
  return w, mass


def kernel_matrix(n: int, bandwidth: float | jnp.ndarray, *, boundary: str = 'renormalize',
                  truncate: float | None = 4.0, reference_step: float | None = None) -> jnp.ndarray:
  """Dense Nadaraya-Watson smoothing matrix K [n, n] for an equally spaced design: rates = K @ indicators.

  Args:
    n: number of samples.
    bandwidth: Gaussian standard deviation in samples (may be a traced scalar inside jit).
    boundary: 'renormalize' (NW: each row sums to 1) or 'zeros' (zero padding: rows divided by the whole
      kernel's mass, as MATLAB's conv(..., 'same') with a normalised kernel).
    truncate: cut the kernel at this many standard deviations (None: no cut). Ignored with reference_step.
    reference_step: build the reference MATLAB kernel instead, with taps at -h:reference_step:h (0.01 in its
      1D code, 1 in its 2D code); `bandwidth` is then the reference's kernel_width.
  Returns:
    float32 [n, n].
  """
  _check_choice('boundary', boundary, BOUNDARIES)
  return _kernel_matrix(int(n), jnp.asarray(bandwidth, jnp.float32), boundary,
                        None if truncate is None else float(truncate),
                        None if reference_step is None else float(reference_step))


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def _kernel_matrix(n, bandwidth, boundary, truncate, reference_step):
  w, mass = _kernel_weights(n, bandwidth, truncate, reference_step)
  if boundary == 'renormalize':
    return w / jnp.sum(w, axis=1, keepdims=True)
  return w / mass


def _apply_kernels(ind: jnp.ndarray, mats: Sequence[jnp.ndarray]) -> jnp.ndarray:
  """Smooths the last len(mats) axes of ind with the given matrices (separable)."""
  if len(mats) == 1:
    return jnp.einsum('...j,ij->...i', ind, mats[0])
  return jnp.einsum('ij,...jk,lk->...il', mats[0], ind, mats[1])


def kernel_rates(ind: jnp.ndarray, bandwidth: float, *, boundary: str = 'renormalize', axes: int = 1,
                 truncate: float | None = 4.0, reference_step: float | None = None) -> jnp.ndarray:
  """Nadaraya-Watson estimate of the exceedance rate p(t) from indicators (Sec. II-C, Mueller 2000).

  p_hat_i = sum_j K_h(i - j) I_j / sum_j K_h(i - j) on a unit-spaced design; in 2D the Gaussian kernel is the
  product of two 1D kernels, applied as two matmuls.

  Args:
    ind: indicators [..., n] (axes=1) or [..., n, m] (axes=2).
    bandwidth: kernel standard deviation in samples (> 0).
    boundary: 'renormalize' or 'zeros' (see `kernel_matrix`).
    axes: 1 smooths the last axis, 2 the last two.
    truncate, reference_step: see `kernel_matrix`.
  Returns:
    Rates with ind's shape, float32, in [0, 1].
  """
  _check_axes(axes)
  _check_positive('bandwidth', bandwidth)
  ind = jnp.asarray(ind, jnp.float32)
  if ind.ndim < axes:
    raise ValueError(f'ind must have at least {axes} axes for axes={axes}, got shape {ind.shape}.')
  mats = [kernel_matrix(n, bandwidth, boundary=boundary, truncate=truncate, reference_step=reference_step)
          for n in ind.shape[ind.ndim - axes:]]
  return _apply_kernels(ind, mats)


_MAX_BAND = 8   # half-widths up to this use shifted multiply-adds (faster than a dense matmul there)


def _band(mat: jnp.ndarray, half: int) -> jnp.ndarray:
  """Diagonals of a banded [n, n] kernel matrix: d[k + half, i] = mat[i, i + k] (0 outside), [2 half + 1, n]."""
  n = mat.shape[0]
  i = jnp.arange(n)[None, :]
  j = i + jnp.arange(-half, half + 1)[:, None]
  return jnp.where((j >= 0) & (j < n), mat[i, jnp.clip(j, 0, n - 1)], 0.0)


def _apply_band(x: jnp.ndarray, diags: jnp.ndarray, axis: int) -> jnp.ndarray:
  """out[..., i, ...] = sum_k diags[k, i] x[..., i + k - half, ...] along `axis` (zero outside)."""
  half = (diags.shape[0] - 1) // 2
  n = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (half, half)
  xp = jnp.pad(x, pad)
  shape = [1] * x.ndim
  shape[axis] = n
  out = None
  for k in range(2 * half + 1):
    term = diags[k].reshape(shape) * jax.lax.slice_in_dim(xp, k, k + n, axis=axis)
    out = term if out is None else out + term
  return out


def _smooth(ind: jnp.ndarray, mats: Sequence[jnp.ndarray], band: int | None) -> jnp.ndarray:
  """Kernel smoothing of the trailing len(mats) axes: dense matmuls, or shifted multiply-adds when banded."""
  if band is None:
    return _apply_kernels(ind, mats)
  for m, axis in zip(mats, range(ind.ndim - len(mats), ind.ndim)):
    # The barrier materialises the sum; otherwise XLA may fuse (and recompute) it inside every consumer.
    ind = jax.lax.optimization_barrier(_apply_band(ind, _band(m, band), axis))
  return ind


def _sum_sq_weights(mats: Sequence[jnp.ndarray]) -> jnp.ndarray:
  """sum_j w_ij^2 for each output position (the 1/n_eff of the kernel estimate), [n] or [n, m]."""
  sq = [jnp.sum(jnp.square(m), axis=1) for m in mats]
  return sq[0] if len(sq) == 1 else sq[0][:, None] * sq[1][None, :]


# ----------------------------------------------------------------------------------------------------------
# Estimators (Eqs. 4-7, 9-10, 15-17, 20)
# ----------------------------------------------------------------------------------------------------------

class _Est(NamedTuple):
  s_sub: jnp.ndarray
  s_sup: jnp.ndarray
  v_a: jnp.ndarray
  v_b: jnp.ndarray
  cov: jnp.ndarray


def _phi_sq(z):
  return jnp.exp(-jnp.square(z)) / (2.0 * math.pi)


def sub_sup_estimates(p_a: jnp.ndarray, p_b: jnp.ndarray, *, a: float, b: float, sigma, inv_n_eff=1.0,
                      reference_quirks: bool = False, v_clip: float = 4.5, n_total: int = 1,
                      p_clip: float = 1e-6) -> _Est:
  """Sub and sup estimates with their delta-method variances and covariance, from exceedance rates.

  Correct model (default): s_sub = a - sigma Phi^{-1}(p_a), s_sup = b + sigma Phi^{-1}(p_b) (Eq. 9 with the noise
  scale), v = sigma^2 p(1-p) inv_n_eff / phi(Phi^{-1}(p))^2 (Eq. 21 with n_eff = 1 / sum_j w_ij^2 for a kernel
  estimate), Cov = sigma^2 p_a p_b inv_n_eff / (phi_a phi_b) (multinomial: Cov(I_a, I_b) = -p_a p_b).
  Rates are clipped to [p_clip, 1 - p_clip] first, so everything is finite.

  reference_quirks=True: the sigma-free clipped formulas of the reference (module docstring), N = n_total;
  covariance 0.

  Args:
    p_a, p_b: rates, same shape. sigma: noise sd (scalar or broadcastable). inv_n_eff: broadcastable.
  Returns:
    _Est(s_sub, s_sup, v_a, v_b, cov), each of the broadcast shape.
  """
  if reference_quirks:
    p_a = jnp.clip(p_a, 0.0, 1.0)
    p_b = jnp.clip(p_b, 0.0, 1.0)
    z_a = jnp.clip(jsp.ndtri(p_a), -v_clip, v_clip)
    z_b = jnp.clip(jsp.ndtri(1.0 - p_b), -v_clip, v_clip)
    s_sub = a - z_a
    s_sup = b - z_b
    v_a = p_a * (1.0 - p_a) / (n_total * _phi_sq(z_a))
    v_b = p_b * (1.0 - p_b) / (n_total * _phi_sq(z_b))
    return _Est(s_sub, s_sup, v_a, v_b, jnp.zeros_like(v_a))
  p_a = jnp.clip(p_a, p_clip, 1.0 - p_clip)
  p_b = jnp.clip(p_b, p_clip, 1.0 - p_clip)
  z_a = jsp.ndtri(p_a)
  z_b = jsp.ndtri(p_b)
  sigma2 = jnp.square(sigma)
  s_sub = a - sigma * z_a
  s_sup = b + sigma * z_b
  scale = sigma2 * inv_n_eff
  ephi_a = jnp.exp(0.5 * jnp.square(z_a))   # sqrt(2 pi) / phi(z)... up to the constant below
  ephi_b = jnp.exp(0.5 * jnp.square(z_b))
  two_pi = 2.0 * math.pi
  v_a = scale * p_a * (1.0 - p_a) * two_pi * jnp.square(ephi_a)
  v_b = scale * p_b * (1.0 - p_b) * two_pi * jnp.square(ephi_b)
  cov = scale * p_a * p_b * two_pi * ephi_a * ephi_b
  return _Est(s_sub, s_sup, v_a, v_b, cov)


def double_weights(var_a: jnp.ndarray, var_b: jnp.ndarray, cov: jnp.ndarray | float = 0.0
                   ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Weights (w_a, w_b) of the double-threshold estimator w_a s_sub + w_b s_sup.

  Appendix A, Eq. 20: w_a = (v_b - c)/(v_a + v_b - 2c), w_b = (v_a - c)/(v_a + v_b - 2c) minimise the variance
  of the combination; cov = 0 gives the variance weights of Eqs. 6/10/17. Where the denominator is 0 (both
  variances 0, or perfectly correlated equal estimators) both weights are 1/2.

  Args:
    var_a, var_b: variances of s_sub and s_sup; cov: their covariance. Broadcastable.
  Returns:
    (w_a, w_b), summing to 1, finite.
  """
  var_a = jnp.asarray(var_a)
  var_b = jnp.asarray(var_b)
  denom = var_a + var_b - 2.0 * cov
  ok = denom > 0
  safe = jnp.where(ok, denom, 1.0)
  w_a = jnp.where(ok, (var_b - cov) / safe, 0.5)
  return w_a, 1.0 - w_a


def estimator_covariance(p_a, p_b, sigma, n) -> jnp.ndarray:
  """Delta-method covariance of (s_sub, s_sup) from n i.i.d. observations (Appendix A).

  Cov = sigma^2 p_a p_b / (n phi(Phi^{-1}(p_a)) phi(Phi^{-1}(p_b))), from Cov(p_hat_a, p_hat_b) = -p_a p_b / n.
  """
  est = sub_sup_estimates(jnp.asarray(p_a, jnp.float32), jnp.asarray(p_b, jnp.float32), a=0.0, b=1.0,
                          sigma=sigma, inv_n_eff=1.0 / n)
  return est.cov


def _combine(detector: str, s_sub, s_sup, v_a, v_b, cov, weights: str):
  """(estimate, variance) of one detector from sub/sup estimates, variances and covariance."""
  if detector == 'sub':
    return s_sub, v_a
  if detector == 'sup':
    return s_sup, v_b
  w_a, w_b = double_weights(v_a, v_b, cov if weights == 'optimal' else 0.0)
  c = cov if weights == 'optimal' else 0.0
  return w_a * s_sub + w_b * s_sup, w_a * w_a * v_a + w_b * w_b * v_b + 2.0 * w_a * w_b * c


def estimate(x: jnp.ndarray, *, a: float, b: float, sigma: float, bandwidth: float, detector: str = 'double',
             reference_quirks: bool = False, boundary: str | None = None, axes: int = 1,
             weights: str = 'variance', truncate: float | None = 4.0, p_clip: float = 1e-6,
             v_clip: float | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Signal estimate and its variance at every sample, from ONE noisy observation (Eqs. 9-10).

  Args:
    x: noisy observations s + sigma*eps, [..., n] (axes=1) or [..., n, m] (axes=2).
    a, b: thresholds (a < b). sigma: the noise sd (> 0). bandwidth: kernel sd in samples (> 0); with
      reference_quirks the reference's kernel_width (module docstring).
    detector: 'sub', 'sup' or 'double'.
    reference_quirks: reproduce the reference's sigma-free formulas, clipping and kernel.
    boundary: 'renormalize' or 'zeros'; None means 'zeros' with reference_quirks and 'renormalize' otherwise.
    axes: 1 or 2 trailing signal axes.
    weights: 'variance' (Eq. 10) or 'optimal' (Appendix A, Eq. 20, with the local multinomial covariance).
    truncate: kernel cut in sds. p_clip: rate clipping (correct model). v_clip: the reference's v (default 4.5
      in 1D, 6 in 2D).
  Returns:
    (estimate, variance), each with x's shape, float32. The variance is the delta-method variance with the
    kernel's effective sample size (reference_quirks: the reference's p(1-p)/(N phi^2)).
  """
  a, b = _check_thresholds(a, b)
  _check_positive('sigma', sigma)
  _check_positive('bandwidth', bandwidth)
  _check_choice('detector', detector, DETECTORS)
  _check_choice('weights', weights, WEIGHTS)
  axes = _check_axes(axes)
  boundary = _default_boundary(boundary, reference_quirks)
  x = jnp.asarray(x, jnp.float32)
  if x.ndim < axes:
    raise ValueError(f'x must have at least {axes} axes for axes={axes}, got shape {x.shape}.')
  out = _estimate_jit(x, jnp.float32(sigma), jnp.float32(bandwidth), a=a, b=b,
                      reference_quirks=bool(reference_quirks), boundary=boundary, axes=axes, weights=weights,
                      truncate=None if truncate is None else float(truncate), p_clip=float(p_clip),
                      v_clip=_v_clip(v_clip, axes))
  return out[DETECTORS.index(detector)]


@functools.partial(jax.jit, static_argnames=('a', 'b', 'reference_quirks', 'boundary', 'axes', 'weights',
                                             'truncate', 'p_clip', 'v_clip'))
def _estimate_jit(x, sigma, bandwidth, *, a, b, reference_quirks, boundary, axes, weights, truncate, p_clip,
                  v_clip):
  """(estimate, variance) for each of DETECTORS (one compile serves all three)."""
  shape = x.shape[x.ndim - axes:]
  step = _REFERENCE_STEP[axes] if reference_quirks else None
  mats = [_kernel_matrix(n, bandwidth, boundary, truncate, step) for n in shape]
  i_a, i_b = (x < a).astype(jnp.float32), (x > b).astype(jnp.float32)
  p_a, p_b = _apply_kernels(i_a, mats), _apply_kernels(i_b, mats)
  est = sub_sup_estimates(p_a, p_b, a=a, b=b, sigma=sigma, inv_n_eff=_sum_sq_weights(mats),
                          reference_quirks=reference_quirks, v_clip=v_clip, n_total=int(np.prod(shape)),
                          p_clip=p_clip)
  return tuple(_combine(d, *est, weights) for d in DETECTORS)


def estimate_constant(x: jnp.ndarray, *, a: float, b: float, sigma: float, detector: str = 'double',
                      weights: str = 'variance', p_clip: float | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Parametric estimate of a CONSTANT signal from all samples of x (Sec. II-A/B, Eqs. 4-7).

  p_hat_a = mean(x < a), p_hat_b = mean(x > b) over every element of x; s_sub = a - sigma Phi^{-1}(p_hat_a),
  s_sup = b + sigma Phi^{-1}(p_hat_b), variances sigma^2 p(1-p)/(N phi^2), double as in `double_weights`.

  Args:
    x: noisy observations theta + sigma*eps, any shape (N = x.size samples).
    p_clip: rate clipping; default 1/(2N) (a rate of 0 or 1 becomes half an observation).
  Returns:
    (estimate, variance): float32 scalars.
  """
  a, b = _check_thresholds(a, b)
  _check_positive('sigma', sigma)
  _check_choice('detector', detector, DETECTORS)
  _check_choice('weights', weights, WEIGHTS)
  x = jnp.asarray(x, jnp.float32)
  n = x.size
  if n == 0:
    raise ValueError('x must not be empty.')
  p_a = jnp.mean(x < a)
  p_b = jnp.mean(x > b)
  est = sub_sup_estimates(p_a, p_b, a=a, b=b, sigma=float(sigma), inv_n_eff=1.0 / n,
                          p_clip=0.5 / n if p_clip is None else p_clip)
  return _combine(detector, *est, weights)


def amse(signal: jnp.ndarray, estimates_mean: jnp.ndarray) -> jnp.ndarray:
  """Average mean squared error (Eq. 18): mean over the signal's samples of (s - trial-averaged estimate)^2.

  Args:
    signal: [*shape]. estimates_mean: [..., *shape] (leading axes, e.g. grid points, are kept).
  Returns:
    [...] float.
  """
  signal = jnp.asarray(signal)
  estimates_mean = jnp.asarray(estimates_mean)
  if estimates_mean.shape[estimates_mean.ndim - signal.ndim:] != signal.shape:
    raise ValueError(f'estimates_mean shape {estimates_mean.shape} must end with the signal shape {signal.shape}.')
  axes = tuple(range(estimates_mean.ndim - signal.ndim, estimates_mean.ndim))
  return jnp.mean(jnp.square(estimates_mean - signal), axis=axes)


def _default_boundary(boundary: str | None, reference_quirks: bool) -> str:
  if boundary is None:
    return 'zeros' if reference_quirks else 'renormalize'
  return _check_choice('boundary', boundary, BOUNDARIES)


def _v_clip(v_clip: float | None, axes: int) -> float:
  return _REFERENCE_V[axes] if v_clip is None else float(v_clip)


# ----------------------------------------------------------------------------------------------------------
# Recovery over trials and the (sigma, bandwidth) grid (Sec. II-D, III-A)
# ----------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Config:
  shape: tuple[int, ...]
  a: float
  b: float
  quirks: bool
  boundary: str
  truncate: float | None
  weights: str
  pooling: str
  p_clip: float
  v_clip: float
  n_trials: int
  chunk: int
  wavelet: bool
  h_batch: int
  band: int | None = None   # static kernel half-width when small enough for shifted multiply-adds


def _noise_chunk(cfg: _Config, key, noise, c):
  """Standard-normal draws of trial chunk c: [chunk, *shape]."""
  if noise is not None:
    return jax.lax.dynamic_slice_in_dim(noise, c * cfg.chunk, cfg.chunk, axis=0)
  return jax.random.normal(jax.random.fold_in(key, c), (cfg.chunk,) + cfg.shape, jnp.float32)


def _to_coeffs(cfg: _Config, x, W):
  if not cfg.wavelet:
    return x
  return wv.dwt(x, W[0]) if len(cfg.shape) == 1 else wv.dwt2(x, W[0], W[1])


def _from_coeffs(cfg: _Config, c, W):
  if not cfg.wavelet:
    return c
  return wv.idwt(c, W[0]) if len(cfg.shape) == 1 else wv.idwt2(c, W[0], W[1])


def _kernels(cfg: _Config, h):
  step = _REFERENCE_STEP[len(cfg.shape)] if cfg.quirks else None
  return [kernel_matrix(n, h, boundary=cfg.boundary, truncate=cfg.truncate, reference_step=step)
          for n in cfg.shape]


def _estimates_all(cfg: _Config, p_a, p_b, sigmas, inv_n_eff, n_pooled):
  """sub_sup_estimates for rates [S, ..., *shape] and sigmas [S]."""
  sig = sigmas.reshape((-1,) + (1,) * (p_a.ndim - 1))
  return sub_sup_estimates(p_a, p_b, a=cfg.a, b=cfg.b, sigma=sig, inv_n_eff=inv_n_eff / n_pooled,
                           reference_quirks=cfg.quirks, v_clip=cfg.v_clip, n_total=int(np.prod(cfg.shape)),
                           p_clip=cfg.p_clip)


def _pooled_rates(cfg: _Config, coeffs, sigmas, key, noise):
  """Exceedance frequencies over all trials, [2, S, *shape] (pooling='rates': smoothing is linear, so the
  trial average of the smoothed indicators is the smoothing of their trial average)."""
  sig = sigmas.reshape((-1, 1) + (1,) * len(cfg.shape))

  def body(carry, c):
    x = coeffs + sig * _noise_chunk(cfg, key, noise, c)[None]          # [S, C, *shape]
    return carry + jnp.stack([jnp.sum(x < cfg.a, axis=1, dtype=jnp.float32),
                              jnp.sum(x > cfg.b, axis=1, dtype=jnp.float32)]), None
  zeros = jnp.zeros((2, sigmas.shape[0]) + cfg.shape, jnp.float32)
  counts, _ = jax.lax.scan(body, zeros, jnp.arange(cfg.n_trials // cfg.chunk))
  return counts / cfg.n_trials


def _means_for_h(cfg: _Config, coeffs, sigmas, h, key, noise, freqs=None):
  """Trial-averaged (s_sub, s_sup, v_a, v_b, cov), each [S, *shape], for one bandwidth h (detection domain)."""
  mats = _kernels(cfg, h)
  inv_n_eff = _sum_sq_weights(mats)
  n_chunks = cfg.n_trials // cfg.chunk
  sig = sigmas.reshape((-1, 1) + (1,) * len(cfg.shape))

  if cfg.pooling == 'rates':
    # One estimate from n_eff * n_trials pooled observations.
    p = _smooth(freqs, mats, cfg.band)
    return _estimates_all(cfg, p[0], p[1], sigmas, inv_n_eff, cfg.n_trials)

  need_cov = cfg.weights == 'optimal'

  def body(carry, c):
    x = coeffs + sig * _noise_chunk(cfg, key, noise, c)[None]          # [S, C, *shape]
    # Both indicator sets through ONE matmul: [2, S, C, *shape].
    p = _smooth(jnp.stack([x < cfg.a, x > cfg.b]).astype(jnp.float32), mats, cfg.band)
    est = _estimates_all(cfg, p[0], p[1], sigmas, inv_n_eff, 1)
    est = est if need_cov else est[:4]
    return tuple(acc + jnp.sum(e, axis=1) for acc, e in zip(carry, est)), None
  zeros = jnp.zeros((sigmas.shape[0],) + cfg.shape, jnp.float32)
  sums, _ = jax.lax.scan(body, (zeros,) * (5 if need_cov else 4), jnp.arange(n_chunks))
  means = [s / cfg.n_trials for s in sums]
  return _Est(*means) if need_cov else _Est(*means, jnp.zeros_like(means[0]))


def _detector_estimates(cfg: _Config, means: _Est, W):
  """Data-domain trial-averaged estimates [3, S, *shape] for sub, sup, double."""
  out = [_combine(d, *means, cfg.weights)[0] for d in DETECTORS]
  return _from_coeffs(cfg, jnp.stack(out), W)


@functools.partial(jax.jit, static_argnames=('cfg',))
def _grid_amse(cfg: _Config, signal, W, sigmas, bandwidths, key, noise):
  coeffs = _to_coeffs(cfg, signal, W)
  freqs = _pooled_rates(cfg, coeffs, sigmas, key, noise) if cfg.pooling == 'rates' else None

  def per_h(h):
    est = _detector_estimates(cfg, _means_for_h(cfg, coeffs, sigmas, h, key, noise, freqs), W)
    return amse(signal, est)                                            # [3, S]

  out = jax.lax.map(per_h, bandwidths, batch_size=cfg.h_batch)         # [H, 3, S]
  return jnp.transpose(out, (1, 2, 0))                                  # [3, S, H]


@functools.partial(jax.jit, static_argnames=('cfg',))
def _recover_all(cfg: _Config, signal, W, sigma, bandwidth, key, noise):
  coeffs = _to_coeffs(cfg, signal, W)
  freqs = _pooled_rates(cfg, coeffs, sigma[None], key, noise) if cfg.pooling == 'rates' else None
  means = _means_for_h(cfg, coeffs, sigma[None], bandwidth, key, noise, freqs)
  return _detector_estimates(cfg, means, W)[:, 0]                       # [3, *shape]


class GridResult(NamedTuple):
  """Result of `grid_search`.

  amse: detector -> float64 [n_sigma, n_h] AMSE (Eq. 18) of the trial-averaged, data-domain estimate.
  best: detector -> (sigma, bandwidth, amse) at the minimum.
  sigmas, bandwidths: the grid axes (float64).
  """
  amse: dict[str, np.ndarray]
  best: dict[str, tuple[float, float, float]]
  sigmas: np.ndarray
  bandwidths: np.ndarray


def _halfwidth(h_max: float, shape: tuple[int, ...], quirks: bool, truncate: float | None) -> int | None:
  """Largest offset |i - j| with a nonzero kernel weight, if small enough for banded smoothing, else None."""
  if quirks:
    half = int(math.floor(2.0 * h_max / _REFERENCE_STEP[len(shape)] + 1e-4)) // 2 + 1
  elif truncate is None:
    return None
  else:
    half = int(math.floor(truncate * h_max))
  half = min(half, max(shape) - 1)
  return half if half <= _MAX_BAND else None


def _prepare(signal, key, *, a, b, n_trials, domain, wavelet, level, reference_quirks, boundary, weights, pooling,
             truncate, p_clip, v_clip, chunk_size, noise, n_sigma, h_batch, h_max):
  """Validates the common arguments; returns (cfg, signal, W, noise)."""
  a, b = _check_thresholds(a, b)
  _check_choice('domain', domain, DOMAINS)
  _check_choice('weights', weights, WEIGHTS)
  _check_choice('pooling', pooling, POOLINGS)
  boundary = _default_boundary(boundary, reference_quirks)
  signal = jnp.asarray(signal, jnp.float32)
  if signal.ndim not in (1, 2):
    raise ValueError(f'signal must be 1D [n] or 2D [n, m], got shape {signal.shape}.')
  if isinstance(n_trials, bool) or not isinstance(n_trials, (int, np.integer)) or n_trials < 1:
    raise ValueError(f'n_trials must be a positive integer, got {n_trials!r}.')
  shape = tuple(int(d) for d in signal.shape)
  if noise is None and key is None:
    raise ValueError('key must be a PRNG key when noise is None (noise=None draws the trials from key).')
  if noise is not None:
    noise = jnp.asarray(noise, jnp.float32)
    if noise.shape != (n_trials,) + shape:
      raise ValueError(f'noise must have shape (n_trials,) + signal.shape = {(n_trials,) + shape}, '
                       f'got {noise.shape}.')
  W = None
  if domain == 'wavelet':
    if isinstance(wavelet, str):
      W = tuple(jnp.asarray(wv.dwt_matrix(n, wavelet, level), jnp.float32) for n in shape)
    else:
      mats = (wavelet,) if len(shape) == 1 and not isinstance(wavelet, (tuple, list)) else tuple(wavelet)
      if len(mats) != len(shape) or any(np.shape(m) != (n, n) for m, n in zip(mats, shape)):
        raise ValueError(f'wavelet must be a name or one [n, n] matrix per signal axis for shape {shape}.')
      W = tuple(jnp.asarray(m, jnp.float32) for m in mats)
  numel = int(np.prod(shape))
  if chunk_size is None:
    # Keep the per-chunk working set near 2M elements per array: [n_sigma, chunk, *shape].
    chunk_size = max(1, min(n_trials, (1 << 21) // max(1, n_sigma * numel)))
    while n_trials % chunk_size:
      chunk_size -= 1
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1 \
      or n_trials % chunk_size:
    raise ValueError(f'chunk_size must be a positive divisor of n_trials={n_trials}, got {chunk_size!r}.')
  cfg = _Config(shape=shape, a=a, b=b, quirks=bool(reference_quirks), boundary=boundary,
                truncate=None if truncate is None else float(truncate), weights=weights, pooling=pooling,
                p_clip=float(p_clip), v_clip=_v_clip(v_clip, len(shape)), n_trials=int(n_trials),
                chunk=int(chunk_size), wavelet=domain == 'wavelet', h_batch=int(h_batch),
                band=_halfwidth(float(h_max), shape, bool(reference_quirks),
                                None if truncate is None else float(truncate)))
  return cfg, signal, W, noise


def recover(signal: jnp.ndarray, key: jax.Array, *, a: float, b: float, sigma: float, bandwidth: float,
            n_trials: int, detector: str = 'double', domain: str = 'data', wavelet: Any = 'sym8',
            level: int | None = None, reference_quirks: bool = False, boundary: str | None = None,
            weights: str = 'variance', pooling: str = 'estimates', truncate: float | None = 4.0,
            p_clip: float = 1e-6, v_clip: float | None = None, chunk_size: int | None = None,
            noise: jnp.ndarray | None = None) -> jnp.ndarray:
  """Trial-averaged SR recovery of a weak signal (Sec. II-C/D, III-A).

  For each trial: x = d + sigma*eps with d = s (domain='data') or d = W s (domain='wavelet', Eq. 14, noise on
  the whole coefficient vector); I_a, I_b; kernel rates; sub/sup estimates and variances. Estimates and
  variances are averaged over trials (pooling='estimates', as the reference) and combined (Eq. 17); in the
  wavelet domain the result is mapped back with W^T (Eq. 13). pooling='rates' instead averages the indicators
  over trials and estimates once (n_eff * n_trials observations): cheaper by n_trials and less biased.

  Args:
    signal: [n] or [n, m] (2D: separable kernel and transform).
    key: PRNG key; trial chunk c uses fold_in(key, c) (ignored when `noise` is given).
    a, b: thresholds in the detection domain (coefficients for domain='wavelet').
    sigma, bandwidth: noise sd and kernel sd in samples (reference_quirks: the reference's kernel_width).
    n_trials: number of noisy repetitions.
    detector: 'sub', 'sup' or 'double'. domain: 'data' or 'wavelet'.
    wavelet: PyWavelets name (with `level`, see `wavelet.dwt_matrix`) or explicit matrices (one [n, n] per
      signal axis), e.g. the reference's alignment from `dwt_matrix(..., roll=..., reverse_filter=True)`.
    reference_quirks, boundary, weights, truncate, p_clip, v_clip: see `estimate`.
    chunk_size: trials per scan step (a divisor of n_trials; default keeps ~2M elements per array).
    noise: optional standard-normal draws [n_trials, *signal.shape] to use instead of `key`.
  Returns:
    Trial-averaged estimate in the data domain, signal's shape, float32.
  """
  _check_positive('sigma', sigma)
  _check_positive('bandwidth', bandwidth)
  _check_choice('detector', detector, DETECTORS)
  cfg, signal, W, noise = _prepare(
      signal, key, a=a, b=b, n_trials=n_trials, domain=domain, wavelet=wavelet, level=level,
      reference_quirks=reference_quirks, boundary=boundary, weights=weights, pooling=pooling, truncate=truncate,
      p_clip=p_clip, v_clip=v_clip, chunk_size=chunk_size, noise=noise, n_sigma=1, h_batch=1,
      h_max=float(bandwidth))
  out = _recover_all(cfg, signal, W, jnp.asarray(sigma, jnp.float32), jnp.asarray(bandwidth, jnp.float32),
                     key, noise)
  return out[DETECTORS.index(detector)]


def grid_search(signal: jnp.ndarray, key: jax.Array, *, a: float, b: float, sigmas: Sequence[float],
                bandwidths: Sequence[float], n_trials: int, domain: str = 'data', wavelet: Any = 'sym8',
                level: int | None = None, reference_quirks: bool = False, boundary: str | None = None,
                weights: str = 'variance', pooling: str = 'estimates', truncate: float | None = 4.0,
                p_clip: float = 1e-6, v_clip: float | None = None, chunk_size: int | None = None,
                h_batch: int = 1, noise: jnp.ndarray | None = None) -> GridResult:
  """AMSE of all three detectors over a (sigma x bandwidth) grid, in one jitted computation (Sec. III-A).

  Bandwidths run through `lax.map` (h_batch at a time), sigmas are vectorised, trials are scanned in chunks
  with running sums, so memory is O(n_sigma * chunk_size * numel) whatever n_trials is. Noise draws are shared
  by all grid points and detectors (module docstring). Arguments as in `recover`.

  Returns:
    GridResult with amse[detector] of shape [len(sigmas), len(bandwidths)] and the argmin per detector.
  """
  sig = _check_positive('sigmas', sigmas).reshape(-1)
  hs = _check_positive('bandwidths', bandwidths).reshape(-1)
  if isinstance(h_batch, bool) or not isinstance(h_batch, (int, np.integer)) or h_batch < 1:
    raise ValueError(f'h_batch must be a positive integer, got {h_batch!r}.')
  cfg, signal, W, noise = _prepare(
      signal, key, a=a, b=b, n_trials=n_trials, domain=domain, wavelet=wavelet, level=level,
      reference_quirks=reference_quirks, boundary=boundary, weights=weights, pooling=pooling, truncate=truncate,
      p_clip=p_clip, v_clip=v_clip, chunk_size=chunk_size, noise=noise, n_sigma=sig.size,
      h_batch=min(int(h_batch), hs.size), h_max=float(hs.max()))
  out = np.asarray(_grid_amse(cfg, signal, W, jnp.asarray(sig, jnp.float32), jnp.asarray(hs, jnp.float32),
                              key, noise), dtype=np.float64)
  table = {d: out[i] for i, d in enumerate(DETECTORS)}
  best = {}
  for d, m in table.items():
    i, j = np.unravel_index(np.nanargmin(np.where(np.isfinite(m), m, np.nan)), m.shape)
    best[d] = (float(sig[i]), float(hs[j]), float(m[i, j]))
  return GridResult(amse=table, best=best, sigmas=sig, bandwidths=hs)
