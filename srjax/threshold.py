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

Cost. `grid_search` and `recover` smooth by FFT: an exact zero-padded linear convolution (section "FFT
smoothing" below) with float64 spectra, so the rates equal the dense [n, n] matmul's to float32 rounding. The
spectrum of a trial chunk's indicators does not depend on the bandwidth, so each chunk is transformed once and
every bandwidth costs one inverse FFT: O(n log n) per (sigma, h, trial) instead of O(n^2). Grids whose kernels
are all narrow (`_band_limit`: half-width <= 48 samples in 1D, ~16-40 pixels in 2D) use float32 shifted
multiply-adds instead, O(half-width) per sample. (`kernel_matrix`, `kernel_rates` and the single-observation
`estimate` keep the dense matmul.) For the 1D Table I grid (50 x 50 x 10 x 1024, pooling='estimates') a
bandwidth costs ~9 ms per domain on one CPU core: about half the float64 inverse FFTs (1000 of length 1536),
the rest the two Phi^{-1} per sample (`_ndtri_fast`), the variances and the trial sums. pooling='rates' smooths
once per (sigma, h) and is the practical choice for 512x512 images with 100 trials; there counting the
exceedances over the trials is a large part of the cost.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
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


def _reference_taps(h, reference_step: float):
  """(number of taps L, centre floor(L/2)) of the reference kernel -h:step:h, from the float32 bandwidth."""
  n_taps = jnp.floor(2.0 * h / reference_step + 1e-4).astype(jnp.int32) + 1
  return n_taps, n_taps // 2


def _weights_at(d: jnp.ndarray, bandwidth, truncate: float | None, reference_step: float | None) -> jnp.ndarray:
  """Unnormalised kernel weight w(d) for integer offsets d = i - j (output i, input j); any shape."""
  h = jnp.asarray(bandwidth, jnp.float32)
  if reference_step is None:
    d = d.astype(jnp.float32)
    w = jnp.exp(-0.5 * jnp.square(d / h))
    return w if truncate is None else jnp.where(jnp.abs(d) <= truncate * h, w, 0.0)
  # MATLAB: taps t_k = -h + step*k, k = 0..L-1, L = floor(2h/step) + 1; conv(data, ker, 'same') takes the
  # full convolution from offset floor(L/2), so out[i] = sum_k ker[k] data[i + floor(L/2) - k].
  n_taps, center = _reference_taps(h, reference_step)
  k = d + center
  t = -h + reference_step * k.astype(jnp.float32)
  return jnp.where((k >= 0) & (k < n_taps), jnp.exp(-0.5 * jnp.square(t / h)), 0.0)


def _kernel_mass(n: int, bandwidth, truncate: float | None, reference_step: float | None) -> jnp.ndarray:
  """The whole kernel's mass (the 'zeros' boundary's divisor): all offsets |d| < n, or all reference taps."""
  if reference_step is None:
    return jnp.sum(_weights_at(jnp.arange(-(n - 1), n), bandwidth, truncate, None))
  h = jnp.asarray(bandwidth, jnp.float32)
  k_all = jnp.arange(4 * n + 1)
  t_all = -h + reference_step * k_all.astype(jnp.float32)
  n_taps, _ = _reference_taps(h, reference_step)
  return jnp.sum(jnp.where(k_all < n_taps, jnp.exp(-0.5 * jnp.square(t_all / h)), 0.0))


def _kernel_weights(n: int, bandwidth, truncate: float | None, reference_step: float | None):
  """Unnormalised [n, n] weights w[i, j] (output i, input j) and the whole kernel's mass."""
  d = jnp.arange(n)[:, None] - jnp.arange(n)[None, :]
  return (_weights_at(d, bandwidth, truncate, reference_step),
          _kernel_mass(n, bandwidth, truncate, reference_step))


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


# ----------------------------------------------------------------------------------------------------------
# FFT smoothing (grid search and recovery): exact zero-padded linear convolution
# ----------------------------------------------------------------------------------------------------------
# Along an axis of n samples whose kernel has nonzero weights only at offsets |d| <= D, out[i] = sum_d w(d)
# in[i - d] for i < n equals the circular convolution of `in` zero-padded to P >= n + D samples with the taps
# placed circularly (w(d) at d mod P): no wrapped term reaches an output. So truncation, the reference's
# asymmetric taps and both boundaries stay exact (the boundary is a per-output divisor). The spectrum of the
# indicators does not depend on the bandwidth, so the grid search transforms each trial chunk once and pays
# one inverse FFT per bandwidth: O(n log n) per (sigma, h, trial) instead of the O(n^2) of a dense matmul.
# Windows that hold no exceedance (or only exceedances) get exactly 0 (the all-ones rate), from exact integer
# window counts: the FFT leaves rounding there (~1e-17 in float64), which the reference's unclipped formulas
# would turn into a variance (reference_quirks: a detector that saw nothing has variance 0). The correct model
# clips the rates to [p_clip, 1 - p_clip], so it skips the counts (`_exact_windows`).


def _fft64():
  """Context for tracing and calling the FFT paths: their spectra are float64 (everything else stays float32).

  A float32 FFT leaves an absolute error ~1e-7 on every rate, i.e. a large relative error on the small rates
  the estimators invert (Phi^{-1}(1e-5) moves by ~3e-3); in float64 the rates are exact to float32 rounding,
  as with the dense matmul. Thread-local and restored on exit."""
  return jax.enable_x64(True)


class _Axis(NamedTuple):
  n: int      # samples
  half: int   # D: every nonzero kernel weight has |offset| <= D (static bound, <= n - 1)
  size: int   # P: FFT length >= n + D


class _Smoother(NamedTuple):
  """Per-bandwidth smoothing data (leading axis H when stacked over bandwidths)."""
  spectrum: jnp.ndarray   # [P//2 + 1] (1D) or [P_0, P_1//2 + 1] (2D); float64 for symmetric kernels, else complex
  scale: jnp.ndarray      # [*shape]: 1/row sum (renormalize) or 1/mass (zeros)
  full: jnp.ndarray       # [*shape]: the rate of a window full of ones (exactly 1 where no weight is lost)
  inv_n_eff: jnp.ndarray  # [*shape]: sum_j K_ij^2
  lo: jnp.ndarray         # int32 [axes]: smallest offset with a nonzero weight
  hi: jnp.ndarray         # int32 [axes]: largest one
  taps: tuple             # per axis, float32 [2D + 1]: w(d) for d = -D..D (the banded path)


def _fft_length(m: int) -> int:
  """Smallest even 2^a 3^b 5^c >= m (a fast FFT length)."""
  p = max(2, m + (m % 2))
  while True:
    r = p
    for f in (2, 3, 5):
      while r % f == 0:
        r //= f
    if r == 1:
      return p
    p += 2


def _support_bound(h_max: float, shape: tuple[int, ...], quirks: bool, truncate: float | None,
                   exact: bool = False) -> int:
  """A static D >= every nonzero kernel offset for bandwidths <= h_max (with a margin of 1 for float32
  rounding), at most max(shape) - 1; rounded up to a power of two unless `exact` (fewer compiled variants)."""
  if quirks:
    half = int(math.floor(2.0 * h_max / _REFERENCE_STEP[len(shape)] + 1e-4)) // 2 + 1
  elif truncate is None:
    half = max(shape)
  else:
    half = int(math.floor(truncate * h_max)) + 1
  return min(half if exact else 1 << max(0, half - 1).bit_length(), max(shape) - 1)


def _band_limit(ndim: int, n_shared: int) -> int:
  """Largest kernel half-width D applied as shifted multiply-adds (float32) rather than by FFT, for a grid
  whose bandwidths share each forward transform n_shared at a time.

  Measured crossovers of whole grid searches on one core (pooling='estimates'): 1D n = 1024, 50 sigmas x 10
  trials: D ~ 55 with 50 bandwidths per transform, ~ 80 with 5, ~ 100 with one (beyond ~100 taps per side
  XLA's fused shift-adds get 5x slower); 2D 512x512, 10 sigmas: D ~ 27 with 5 bandwidths, ~ 40 with one.
  """
  return 48 if ndim == 1 else 16 + 24 // max(1, n_shared)


def _axes(shape: tuple[int, ...], half: int) -> tuple[_Axis, ...]:
  out = []
  for n in shape:
    d = min(half, n - 1)
    out.append(_Axis(n, d, _fft_length(n + d)))
  return tuple(out)


def _axis_kernel(ax: _Axis, h, boundary: str, truncate: float | None, reference_step: float | None, last: bool):
  """(spectrum, scale [n], full [n], sum of squared weights [n], lo, hi) of one axis for bandwidth h.

  The float32 taps are those of the dense path; sums and the spectrum are float64 (O(n + P log P) per h)."""
  n, D, P = ax
  d = jnp.arange(-D, D + 1)
  w = _weights_at(d, h, truncate, reference_step)                      # [2D + 1] float32
  w64 = w.astype(jnp.float64)
  i = jnp.arange(n)
  first = jnp.maximum(-D, i - (n - 1)) + D                             # tap range of output i: inputs in [0, n)
  last_tap = jnp.minimum(D, i) + D

  def window_sum(v):                                                   # sum_{t=first..last_tap} v[t], [n]
    c = jnp.concatenate([jnp.zeros((1,), v.dtype), jnp.cumsum(v)])
    return c[last_tap + 1] - c[first]
  norm = window_sum(w64).astype(jnp.float32)
  sq = window_sum(jnp.square(w64)).astype(jnp.float32)
  nonzero = w > 0
  lo = jnp.min(jnp.where(nonzero, d, D))
  hi = jnp.max(jnp.where(nonzero, d, -D))
  if boundary == 'renormalize':
    scale, full = 1.0 / norm, jnp.ones((n,), jnp.float32)
  else:
    mass = _kernel_mass(n, h, truncate, reference_step)
    scale = jnp.full((n,), 1.0 / mass)
    fits = True
    if reference_step is not None:   # every reference tap within [-D, D] (else its mass counts lost taps)
      n_taps, center = _reference_taps(jnp.asarray(h, jnp.float32), reference_step)
      fits = (center <= D) & (n_taps - 1 - center <= D)
    inside = fits & (i - hi >= 0) & (i - lo <= n - 1)
    full = jnp.where(inside, 1.0, norm / mass)
  taps = jnp.concatenate([w64[D:], jnp.zeros((P - 2 * D - 1,), jnp.float64), w64[:D]])   # w(d) at d mod P
  spectrum = jnp.fft.rfft(taps) if last else jnp.fft.fft(taps)
  if reference_step is None:
    # w(d) = w(-d): the spectrum is real (its imaginary part is rounding), and a real factor halves the cost
    # of the per-bandwidth spectrum product.
    spectrum = spectrum.real
  return spectrum, scale, full, sq * jnp.square(scale), lo, hi, w


def _smoother(axes: tuple[_Axis, ...], h, boundary: str, truncate: float | None,
              reference_step: float | None) -> _Smoother:
  """Separable smoothing data for bandwidth h (traced scalar) on the trailing len(axes) axes."""
  parts = [_axis_kernel(ax, h, boundary, truncate, reference_step, k == len(axes) - 1)
           for k, ax in enumerate(axes)]
  if len(parts) == 1:
    spec, scale, full, inv_n_eff, lo, hi, w = parts[0]
    return _Smoother(spec, scale, full, inv_n_eff, lo[None], hi[None], (w,))
  (s0, c0, f0, q0, lo0, hi0, w0), (s1, c1, f1, q1, lo1, hi1, w1) = parts
  return _Smoother(s0[:, None] * s1[None, :], c0[:, None] * c1[None, :], f0[:, None] * f1[None, :],
                   q0[:, None] * q1[None, :], jnp.stack([lo0, lo1]), jnp.stack([hi0, hi1]), (w0, w1))


def _band_conv(x: jnp.ndarray, w: jnp.ndarray, axis: int) -> jnp.ndarray:
  """out[..., i, ...] = sum_{d=-D..D} w(d) x[..., i - d, ...] along `axis` (zero outside), w: [2D + 1]."""
  D = (w.shape[0] - 1) // 2
  n = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (D, D)
  xp = jnp.pad(x, pad)
  out = None
  for k in range(2 * D + 1):            # x[i - d] = xp[i + D - d], d = D - k
    term = w[2 * D - k] * jax.lax.slice_in_dim(xp, k, k + n, axis=axis)
    out = term if out is None else out + term
  return out


def _prepare_input(x: jnp.ndarray, axes: tuple[_Axis, ...], banded: bool) -> jnp.ndarray:
  """The bandwidth-independent part of smoothing x [..., *shape]: its spectrum, or x itself (banded)."""
  return x.astype(jnp.float32) if banded else _forward(x, axes)


def _smooth(prepared: jnp.ndarray, sm: _Smoother, axes: tuple[_Axis, ...], banded: bool,
            last_axis: bool = True) -> jnp.ndarray:
  """Unnormalised kernel sums sum_j w(i - j) x_j, float32 [..., *shape] (times sm.scale: the rates).

  last_axis=False leaves the banded path's last axis to `_smooth_last` (callers put a loop boundary between
  the two: XLA:CPU would otherwise fuse the passes and recompute the first one (2D+1) times per output)."""
  if not banded:
    return _inverse(prepared * sm.spectrum, axes)
  out = prepared
  for k, w in enumerate(sm.taps[:-1]):
    out = _band_conv(out, w, out.ndim - len(axes) + k)
  return _smooth_last(out, sm, banded) if last_axis else out


def _smooth_last(x: jnp.ndarray, sm: _Smoother, banded: bool) -> jnp.ndarray:
  """The banded path's last-axis pass (identity for FFT)."""
  return _band_conv(x, sm.taps[-1], x.ndim - 1) if banded else x


def _forward(x: jnp.ndarray, axes: tuple[_Axis, ...]) -> jnp.ndarray:
  """Spectrum of x [..., *shape] zero-padded to the FFT lengths (h-independent)."""
  if len(axes) == 2:   # one 2D transform: no transposes around an FFT along axis -2 (16% faster, measured)
    return jnp.fft.rfft2(x.astype(jnp.float64), s=(axes[0].size, axes[1].size))
  return jnp.fft.rfft(x.astype(jnp.float64), n=axes[-1].size, axis=-1)


def _inverse(spec: jnp.ndarray, axes: tuple[_Axis, ...]) -> jnp.ndarray:
  """Inverse of `_forward`, cropped to the signal: [..., *shape] float32."""
  if len(axes) == 2:
    out = jnp.fft.irfft2(spec, s=(axes[0].size, axes[1].size))[..., :axes[0].n, :axes[1].n]
  else:
    out = jax.lax.slice_in_dim(jnp.fft.irfft(spec, n=axes[-1].size, axis=-1), 0, axes[-1].n, axis=-1)
  return out.astype(jnp.float32)


def _window_table(mask: jnp.ndarray, axes: tuple[_Axis, ...]) -> jnp.ndarray:
  """Summed-area table of a boolean mask [..., *shape] (int32, exact), padded for `_window_counts`: along each
  axis D + 1 leading zeros and D trailing copies of the total, [..., n_k + 2 D_k + 1]."""
  sat = mask.astype(jnp.int32)
  k0 = sat.ndim - len(axes)
  for k in range(len(axes)):
    sat = jnp.cumsum(sat, axis=k0 + k)
  edge = [(0, 0)] * k0 + [(0, ax.half) for ax in axes]
  zeros = [(0, 0)] * k0 + [(ax.half + 1, 0) for ax in axes]
  return jnp.pad(jnp.pad(sat, edge, mode='edge'), zeros)


def _window_counts(sat: jnp.ndarray, axes: tuple[_Axis, ...], lo: jnp.ndarray, hi: jnp.ndarray) -> jnp.ndarray:
  """Number of True mask entries in each output's kernel window [i - hi, i - lo] (per axis, clipped to the
  signal), [..., *shape] int32, by inclusion-exclusion on the padded summed-area table."""
  k0 = sat.ndim - len(axes)
  out = None
  for corner in itertools.product((0, 1), repeat=len(axes)):
    starts = [0] * k0
    sign = 1
    for k, (ax, upper) in enumerate(zip(axes, corner)):
      starts.append(ax.half + 1 - lo[k] if upper else ax.half - hi[k])
      sign = sign if upper else -sign
    part = jax.lax.dynamic_slice(sat, starts, sat.shape[:k0] + tuple(ax.n for ax in axes))
    out = sign * part if out is None else out + sign * part
  return out


def _window_sizes(axes: tuple[_Axis, ...], lo: jnp.ndarray, hi: jnp.ndarray) -> jnp.ndarray:
  """Number of in-signal inputs in each output's window, [*shape] int32."""
  sizes = []
  for k, ax in enumerate(axes):
    i = jnp.arange(ax.n)
    sizes.append(jnp.minimum(ax.n - 1, i - lo[k]) - jnp.maximum(0, i - hi[k]) + 1)
  return sizes[0] if len(sizes) == 1 else sizes[0][:, None] * sizes[1][None, :]


def _rates(prepared: jnp.ndarray, nonzero_sat: jnp.ndarray | None, full_sat: jnp.ndarray | None,
           sm: _Smoother, axes: tuple[_Axis, ...], banded: bool) -> jnp.ndarray:
  """Kernel rates [..., *shape] from `_prepare_input` and window tables, for one bandwidth.

  nonzero_sat=None skips the exact empty/full windows (float64 FFT rounding, ~1e-16, is left there).
  full_sat=None means the input is 0/1 (indicators): a window is full when all its entries are nonzero.
  """
  return _exact_windows_fix(_smooth(prepared, sm, axes, banded) * sm.scale, nonzero_sat, full_sat, sm, axes)


def _exact_windows_fix(rates, nonzero_sat, full_sat, sm: _Smoother, axes: tuple[_Axis, ...]):
  """Exact 0 / all-ones rates where the window tables say so (see `_rates`)."""
  if nonzero_sat is None:
    return rates
  n_nonzero = _window_counts(nonzero_sat, axes, sm.lo, sm.hi)
  n_full = n_nonzero if full_sat is None else _window_counts(full_sat, axes, sm.lo, sm.hi)
  rates = jnp.where(n_full == _window_sizes(axes, sm.lo, sm.hi), sm.full, rates)
  return jnp.where(n_nonzero == 0, 0.0, rates)


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
  p_a = _clip_rates(p_a, reference_quirks, p_clip)
  p_b = _clip_rates(p_b, reference_quirks, p_clip)
  return _from_scores(p_a, p_b, _score(p_a, 0, reference_quirks, v_clip, p_clip),
                      _score(p_b, 1, reference_quirks, v_clip, p_clip),
                      a=a, b=b, sigma=sigma, inv_n_eff=inv_n_eff, reference_quirks=reference_quirks,
                      n_total=n_total)


def _clip_rates(p, reference_quirks: bool, p_clip: float):
  """Rates as the estimators use them: [p_clip, 1 - p_clip] (correct model) or [0, 1] (reference)."""
  return jnp.clip(p, 0.0, 1.0) if reference_quirks else jnp.clip(p, p_clip, 1.0 - p_clip)


# M. Giles, "Approximating the erfinv function" (GPU Computing Gems Jade, 2011), single-precision version.
_GILES_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                  -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_GILES_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
               0.00943887047, 1.00167406, 2.83297682)
_FAST_NDTRI_P_MIN = 1e-7   # the fit's range; at p = 1e-9 its error grows to 6e-5 relative (measured)


def _ndtri_fast(p: jnp.ndarray) -> jnp.ndarray:
  """Phi^{-1}(p) for float32 p in [1e-7, 1 - 1e-7] (garbage outside: callers clip first).

  Phi^{-1}(p) = sqrt(2) erfinv(2p - 1) with Giles' single-precision erfinv, its w = -log(1 - x^2) computed as
  -log(4 p (1 - p)) so that both tails keep full precision. Against float64 SciPy on that range: at most 4.3
  ulp (jax.scipy.special.ndtri: 4.2 ulp); 2-3x faster on CPU (one log, one sqrt, no division; measured).
  """
  w = -jnp.log(4.0 * p * (1.0 - p))
  central, tail = w - 2.5, jnp.sqrt(w) - 3.0
  poly_c = jnp.full_like(p, _GILES_CENTRAL[0])
  poly_t = jnp.full_like(p, _GILES_TAIL[0])
  for c_c, c_t in zip(_GILES_CENTRAL[1:], _GILES_TAIL[1:]):
    poly_c = poly_c * central + c_c
    poly_t = poly_t * tail + c_t
  return math.sqrt(2.0) * (2.0 * p - 1.0) * jnp.where(w < 5.0, poly_c, poly_t)


def _score(p, k, reference_quirks: bool, v_clip: float, p_clip: float):
  """Inverse normal of the clipped rate of detector k (0: a, 1: b; may be traced): Phi^{-1}(p) (correct
  model), clip(Phi^{-1}(p_a)) and clip(Phi^{-1}(1 - p_b)) at +-v_clip (reference).

  Uses `_ndtri_fast` when every rate whose score is not clipped lies in its range (static rule), else
  jax.scipy.special.ndtri."""
  if not reference_quirks:
    return _ndtri_fast(p) if p_clip >= _FAST_NDTRI_P_MIN else jsp.ndtri(p)
  if isinstance(k, int):
    q = 1.0 - p if k == 1 else p
  else:
    q = jnp.where(k == 1, 1.0 - p, p)
  # Rates below Phi(-v) score -v after the clip; half of it still scores below -v.
  q_min = 0.5 * float(scipy.special.ndtr(-v_clip))
  if q_min >= _FAST_NDTRI_P_MIN:
    z = _ndtri_fast(jnp.clip(q, q_min, 1.0 - q_min))
  else:
    z = jsp.ndtri(q)
  return jnp.clip(z, -v_clip, v_clip)


def _sub_sup(z_a, z_b, *, a, b, sigma, reference_quirks: bool):
  """(s_sub, s_sup) from the scores: affine, so it maps trial-averaged scores to trial-averaged estimates."""
  if reference_quirks:
    return a - z_a, b - z_b
  return a - sigma * z_a, b + sigma * z_b


def _variance(p, z, *, sigma, inv_n_eff, reference_quirks: bool, n_total: int):
  """Delta-method variance of an estimate from its clipped rate and score (either detector)."""
  if reference_quirks:
    return p * (1.0 - p) / (n_total * _phi_sq(z))
  # 1/phi(z)^2 = 2 pi exp(z^2). Written as exp(z^2), not exp(z^2/2)^2: the same value, but XLA:CPU turns the
  # latter into a slower fusion (2x on the grid search, measured).
  return jnp.square(sigma) * inv_n_eff * p * (1.0 - p) * (2.0 * math.pi) * jnp.exp(jnp.square(z))


def _covariance(p_a, p_b, z_a, z_b, *, sigma, inv_n_eff):
  """Delta-method covariance of (s_sub, s_sup), correct model (Appendix A)."""
  return (jnp.square(sigma) * inv_n_eff * p_a * p_b * (2.0 * math.pi)
          * jnp.exp(0.5 * (jnp.square(z_a) + jnp.square(z_b))))


def _from_scores(p_a, p_b, z_a, z_b, *, a, b, sigma, inv_n_eff, reference_quirks: bool, n_total: int) -> _Est:
  """`sub_sup_estimates` from clipped rates and their scores (`_clip_rates`, `_score`)."""
  s_sub, s_sup = _sub_sup(z_a, z_b, a=a, b=b, sigma=sigma, reference_quirks=reference_quirks)
  kw = dict(sigma=sigma, inv_n_eff=inv_n_eff, reference_quirks=reference_quirks, n_total=n_total)
  v_a, v_b = _variance(p_a, z_a, **kw), _variance(p_b, z_b, **kw)
  cov = jnp.zeros_like(v_a) if reference_quirks else _covariance(p_a, p_b, z_a, z_b, sigma=sigma,
                                                                  inv_n_eff=inv_n_eff)
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
  axes: tuple[_Axis, ...]   # FFT geometry per signal axis (static kernel support bound and padded length)
  banded: bool = False      # narrow kernels: shifted multiply-adds instead of FFT (`_band_limit`)
  h_group: int = 1          # bandwidths per pass over the trials (pooling='estimates'): bounds the running sums
  s_batch: int = 1          # sigmas vectorised together (pooling='rates'): bounds the FFT working set
  orthogonal: bool = True   # W is orthogonal: the AMSE is taken on the coefficients (no inverse per grid point)


_SUMS_BUDGET_BYTES = 256 << 20   # running sums of one pass over the trials, all bandwidths of a group together


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


def _map(f, xs, batch: int):
  """lax.map, vectorising `batch` elements at a time. batch=1 stays a plain loop: vmap would turn the per-h
  window slices (dynamic_slice at traced offsets) into gathers, 2x slower on CPU (measured)."""
  return jax.lax.map(f, xs) if batch <= 1 else jax.lax.map(f, xs, batch_size=batch)


def _smoother_for(cfg: _Config, h) -> _Smoother:
  """Smoothing data for one bandwidth h (traced scalar)."""
  step = _REFERENCE_STEP[len(cfg.shape)] if cfg.quirks else None
  return _smoother(cfg.axes, h, cfg.boundary, cfg.truncate, step)


def _exact_windows(cfg: _Config) -> bool:
  """Whether empty/full windows need exact 0/1 rates: the reference's unclipped formulas turn any residue
  into a variance. The correct model clips rates to [p_clip, 1 - p_clip], far above float64 FFT rounding."""
  return cfg.quirks or cfg.p_clip < 1e-10


def _scored_rates(cfg: _Config, spec, nonzero_sat, full_sat, sm: _Smoother):
  """Clipped rates p and scores z (`_clip_rates`, `_score`), each [2, ...] (detector a, b), for one bandwidth.

  Computed in a loop over the two detectors on purpose: XLA:CPU then keeps p and z in memory. Without the
  loop boundary it fuses the inverse normal into each consumer (every trial sum, every detector), computing it
  up to 4x (optimization_barrier does not prevent that: the CPU pipeline drops it before fusion)."""
  # Both detectors at once (one bigger FFT batch). 2D banded: the last axis's pass runs inside the loop below,
  # so that the first pass is materialised (see `_smooth`).
  split = cfg.banded and len(cfg.axes) == 2
  smoothed = _smooth(spec, sm, cfg.axes, cfg.banded, last_axis=not split)

  def one(args):
    k, conv, nz, fl = args
    conv = _smooth_last(conv, sm, split)
    p = _clip_rates(_exact_windows_fix(conv * sm.scale, nz, fl, sm, cfg.axes), cfg.quirks, cfg.p_clip)
    return p, _score(p, k, cfg.quirks, cfg.v_clip, cfg.p_clip)
  return jax.lax.map(one, (jnp.arange(2), smoothed, nonzero_sat, full_sat))


def _estimates_all(cfg: _Config, p, z, sigmas, inv_n_eff, n_pooled):
  """sub_sup_estimates from `_scored_rates` [2, S, ..., *shape] and sigmas [S]."""
  sig = sigmas.reshape((-1,) + (1,) * (p.ndim - 2))
  return _from_scores(p[0], p[1], z[0], z[1], a=cfg.a, b=cfg.b, sigma=sig, inv_n_eff=inv_n_eff / n_pooled,
                      reference_quirks=cfg.quirks, n_total=int(np.prod(cfg.shape)))


_POOL_TRIALS = 16   # trials counted per scan step (pooling='rates')


def _pooled_rates(cfg: _Config, coeffs, sigmas, key, noise):
  """Exceedance frequencies over all trials, [2, S, *shape] (pooling='rates': smoothing is linear, so the
  trial average of the smoothed indicators is the smoothing of their trial average).

  Each scan step draws several trial chunks (the same draws as one chunk per step: chunk c always comes from
  fold_in(key, c)) and counts them in one pass, so the [2, S, *shape] counts are read and written once per
  step instead of once per chunk (memory-bound otherwise: 3x slower for 256x256 images, measured)."""
  sig = sigmas.reshape((-1, 1) + (1,) * len(cfg.shape))
  n_chunks = cfg.n_trials // cfg.chunk
  per_step = _largest_divisor(n_chunks, max(1, _POOL_TRIALS // cfg.chunk))             # chunks per scan step

  def body(carry, step):
    chunks = step * per_step + jnp.arange(per_step)
    eps = jax.vmap(lambda c: _noise_chunk(cfg, key, noise, c))(chunks).reshape((-1,) + cfg.shape)
    if eps.shape[0] <= 2 * _POOL_TRIALS:
      # Trial by trial into the stacked [2, S, *shape] counts: one elementwise pass over them (a reduction
      # over the trial axis, or one carry per detector, is 4-5x slower on XLA:CPU, measured).
      for t in range(eps.shape[0]):
        x = coeffs + sig[:, 0] * eps[t]                                  # [S, *shape]
        carry = carry + jnp.stack([x < cfg.a, x > cfg.b]).astype(jnp.float32)
      return carry, None
    x = coeffs + sig * eps[None]                                         # [S, trials, *shape]
    return carry + jnp.stack([jnp.sum(x < cfg.a, axis=1, dtype=jnp.float32),
                              jnp.sum(x > cfg.b, axis=1, dtype=jnp.float32)]), None
  zeros = jnp.zeros((2, sigmas.shape[0]) + cfg.shape, jnp.float32)
  counts, _ = jax.lax.scan(body, zeros, jnp.arange(n_chunks // per_step))
  return counts / cfg.n_trials


def _pooled_means(cfg: _Config, tables, sigmas, sm: _Smoother) -> _Est:
  """pooling='rates': one estimate per grid point (each [S, *shape]) from the pooled frequencies, given as
  `_pooled_tables`, with n_eff * n_trials observations."""
  p, z = _scored_rates(cfg, *tables, sm)
  return _estimates_all(cfg, p, z, sigmas, sm.inv_n_eff, cfg.n_trials)


def _pooled_tables(cfg: _Config, freqs):
  """`_prepare_input` and window tables (nonzero, all trials exceeded) of the pooled frequencies [2, S, *shape]."""
  prepared = _prepare_input(freqs, cfg.axes, cfg.banded)
  if not _exact_windows(cfg):
    return prepared, None, None
  return prepared, _window_table(freqs > 0, cfg.axes), _window_table(freqs >= 1, cfg.axes)


def _sum_pair(x, y, axis: int):
  """(sum(x, axis), sum(y, axis)) as one variadic reduction (one pass; faster on XLA:CPU, measured)."""
  zero = jnp.zeros((), x.dtype)
  return jax.lax.reduce((x, y), (zero, zero), lambda u, v: (u[0] + v[0], u[1] + v[1]), (axis,))


def _trial_means(cfg: _Config, coeffs, sigmas, sms: _Smoother, key, noise) -> _Est:
  """pooling='estimates': trial-averaged (s_sub, s_sup, v_a, v_b, cov), each [G, S, *shape], for the G
  bandwidths of `sms` (stacked). One pass over the trial chunks: each chunk's indicators are transformed once
  and smoothed for every bandwidth. Running sums of the scores z and the variances (the estimates are affine in
  z, `_sub_sup`) keep memory O(G * S * numel)."""
  need_cov = cfg.weights == 'optimal'
  sig = sigmas.reshape((-1, 1) + (1,) * len(cfg.shape))
  n_total = int(np.prod(cfg.shape))

  def body(carry, c):
    x = coeffs + sig * _noise_chunk(cfg, key, noise, c)[None]          # [S, C, *shape]
    ind = jnp.stack([x < cfg.a, x > cfg.b])                             # [2, S, C, *shape]
    spec = _prepare_input(ind.astype(jnp.float32), cfg.axes, cfg.banded)
    sat = _window_table(ind, cfg.axes) if _exact_windows(cfg) else None

    def per_h(sm):
      p, z = _scored_rates(cfg, spec, sat, None, sm)                   # [2, S, C, *shape]
      v = _variance(p, z, sigma=sig, inv_n_eff=sm.inv_n_eff, reference_quirks=cfg.quirks, n_total=n_total)
      z_sum, v_sum = _sum_pair(z, v, 2)                                 # [2, S, *shape]
      if not need_cov:
        return z_sum, v_sum
      cov = _covariance(p[0], p[1], z[0], z[1], sigma=sig, inv_n_eff=sm.inv_n_eff)
      return z_sum, v_sum, jnp.sum(cov, axis=1)
    out = _map(per_h, sms, min(cfg.h_batch, cfg.h_group))
    return tuple(acc + o for acc, o in zip(carry, out)), None
  n_h = sms.scale.shape[0]
  zeros = jnp.zeros((n_h, 2, sigmas.shape[0]) + cfg.shape, jnp.float32)
  init = (zeros, zeros) + ((zeros[:, 0],) if need_cov else ())
  sums, _ = jax.lax.scan(body, init, jnp.arange(cfg.n_trials // cfg.chunk))
  z_bar, v_bar = sums[0] / cfg.n_trials, sums[1] / cfg.n_trials                # [G, 2, S, *shape]
  s_sub, s_sup = _sub_sup(z_bar[:, 0], z_bar[:, 1], a=cfg.a, b=cfg.b,
                          sigma=sigmas.reshape((-1,) + (1,) * len(cfg.shape)), reference_quirks=cfg.quirks)
  cov = sums[2] / cfg.n_trials if need_cov else jnp.zeros_like(s_sub)
  return _Est(s_sub, s_sup, v_bar[:, 0], v_bar[:, 1], cov)


def _detector_estimates(cfg: _Config, means: _Est, W, *, coefficients: bool = False):
  """Trial-averaged estimates [3, ...] for sub, sup, double: in the data domain, or left on the wavelet
  coefficients when `coefficients`."""
  out = jnp.stack([_combine(d, *means, cfg.weights)[0] for d in DETECTORS])
  return out if coefficients else _from_coeffs(cfg, out, W)


def _amse_all(cfg: _Config, means: _Est, signal, coeffs, W):
  """AMSE [3, S] of the three detectors. With an orthogonal W, ||W^T e - s|| = ||e - W s||: no inverse DWT."""
  if cfg.wavelet and cfg.orthogonal:
    return amse(coeffs, _detector_estimates(cfg, means, W, coefficients=True))
  return amse(signal, _detector_estimates(cfg, means, W))


@functools.partial(jax.jit, static_argnames=('cfg',))
def _grid_amse(cfg: _Config, signal, W, sigmas, bandwidths, key, noise):
  coeffs = _to_coeffs(cfg, signal, W)
  n_h = bandwidths.shape[0]
  if cfg.pooling == 'rates':
    freqs = _pooled_rates(cfg, coeffs, sigmas, key, noise)             # [2, S, *shape]
    sms = jax.vmap(lambda h: _smoother_for(cfg, h))(bandwidths)         # [H, ...]

    def per_sigma(args):                                                # s_batch sigmas at a time (lax.map)
      f, sg = args                                                      # [2, *shape], scalar
      tables = _pooled_tables(cfg, f[:, None])                          # transformed once for every h

      def per_h(sm):
        return _amse_all(cfg, _pooled_means(cfg, tables, sg[None], sm), signal, coeffs, W)[:, 0]   # [3]
      return _map(per_h, sms, cfg.h_batch)                              # [H, 3]
    out = _map(per_sigma, (jnp.moveaxis(freqs, 1, 0), sigmas), cfg.s_batch)   # [S, H, 3]
    out = jnp.transpose(out, (1, 2, 0))                                 # [H, 3, S]
  else:
    # Bandwidths in groups of h_group (the last group padded with copies of the last bandwidth).
    n_groups = -(-n_h // cfg.h_group)
    hs = jnp.concatenate([bandwidths, jnp.repeat(bandwidths[-1:], n_groups * cfg.h_group - n_h)])

    def per_group(h_group):
      sms = jax.vmap(lambda h: _smoother_for(cfg, h))(h_group)
      means = _trial_means(cfg, coeffs, sigmas, sms, key, noise)                       # [G, S, *shape] each
      return jax.vmap(lambda *m: _amse_all(cfg, _Est(*m), signal, coeffs, W))(*means)   # [G, 3, S]
    out = jax.lax.map(per_group, hs.reshape(n_groups, cfg.h_group)).reshape((-1,) + (3, sigmas.shape[0]))[:n_h]
  return jnp.transpose(out, (1, 2, 0))                                  # [3, S, H]


@functools.partial(jax.jit, static_argnames=('cfg',))
def _recover_all(cfg: _Config, signal, W, sigma, bandwidth, key, noise):
  coeffs = _to_coeffs(cfg, signal, W)
  sm = _smoother_for(cfg, bandwidth)
  if cfg.pooling == 'rates':
    tables = _pooled_tables(cfg, _pooled_rates(cfg, coeffs, sigma[None], key, noise))
    means = _pooled_means(cfg, tables, sigma[None], sm)
  else:
    sms = jax.tree.map(lambda v: v[None], sm)
    means = jax.tree.map(lambda v: v[0], _trial_means(cfg, coeffs, sigma[None], sms, key, noise))
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


def _is_orthogonal(mats: Sequence[np.ndarray]) -> bool:
  """W W^T = I to float32 accuracy for every user-given matrix."""
  for m in mats:
    m = np.asarray(m, np.float64)
    if np.max(np.abs(m @ m.T - np.eye(m.shape[0]))) > 1e-4:
      return False
  return True


def _largest_divisor(n: int, at_most: int) -> int:
  """Largest divisor of n that is <= at_most (>= 1): lax.map batches without a remainder (compiled twice)."""
  return max(d for d in range(1, max(1, min(n, at_most)) + 1) if n % d == 0)


def _prepare(signal, key, *, a, b, n_trials, domain, wavelet, level, reference_quirks, boundary, weights, pooling,
             truncate, p_clip, v_clip, chunk_size, noise, n_sigma, h_batch, h_max, n_h=1):
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
  W, orthogonal = None, True
  if domain == 'wavelet':
    if isinstance(wavelet, str):
      W = tuple(jnp.asarray(wv.dwt_matrix(n, wavelet, level), jnp.float32) for n in shape)
    else:
      mats = (wavelet,) if len(shape) == 1 and not isinstance(wavelet, (tuple, list)) else tuple(wavelet)
      if len(mats) != len(shape) or any(np.shape(m) != (n, n) for m, n in zip(mats, shape)):
        raise ValueError(f'wavelet must be a name or one [n, n] matrix per signal axis for shape {shape}.')
      W = tuple(jnp.asarray(m, jnp.float32) for m in mats)
      orthogonal = _is_orthogonal(mats)
  numel = int(np.prod(shape))
  if chunk_size is None:
    # Keep the per-chunk working set near 2M elements per array: [n_sigma, chunk, *shape].
    chunk_size = max(1, min(n_trials, (1 << 21) // max(1, n_sigma * numel)))
    while n_trials % chunk_size:
      chunk_size -= 1
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1 \
      or n_trials % chunk_size:
    raise ValueError(f'chunk_size must be a positive divisor of n_trials={n_trials}, got {chunk_size!r}.')
  # Bandwidths per pass over the trials: as many as keep the running sums within the budget, in equal groups.
  per_h = (5 if weights == 'optimal' else 4) * n_sigma * numel * 4
  n_groups = -(-n_h // max(1, min(n_h, _SUMS_BUDGET_BYTES // per_h)))
  truncate = None if truncate is None else float(truncate)
  # Static smoothing path (`_band_limit`): shifted multiply-adds over the exact support, or FFT.
  h_group = -(-n_h // n_groups)
  half = _support_bound(float(h_max), shape, bool(reference_quirks), truncate, exact=True)
  banded = half <= _band_limit(len(shape), n_h if pooling == 'rates' else h_group)
  if not banded:
    half = _support_bound(float(h_max), shape, bool(reference_quirks), truncate)
  cfg = _Config(shape=shape, a=a, b=b, quirks=bool(reference_quirks), boundary=boundary, truncate=truncate,
                weights=weights, pooling=pooling, p_clip=float(p_clip), v_clip=_v_clip(v_clip, len(shape)),
                n_trials=int(n_trials), chunk=int(chunk_size), wavelet=domain == 'wavelet', h_batch=int(h_batch),
                axes=_axes(shape, half), banded=banded,
                h_group=h_group, s_batch=_largest_divisor(n_sigma, (1 << 21) // (2 * numel)),
                orthogonal=orthogonal)
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
  with _fft64():
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

  pooling='estimates': trials are scanned in chunks (sigmas vectorised); each chunk's indicators are
  FFT-transformed once, then every bandwidth (`lax.map`, h_batch at a time) costs one inverse FFT and the
  estimators, added to running sums. Memory is O(n_sigma * (chunk_size + h_group) * numel) whatever n_trials
  is, h_group being as many bandwidths as keep the running sums near 256 MB (more bandwidths: more passes over
  the trials). pooling='rates': the pooled frequencies are transformed once per sigma (a few sigmas at a time)
  and smoothed for every bandwidth. Noise draws are shared by all grid points and detectors (module docstring).
  Arguments as in `recover`; h_batch > 1 vectorises bandwidths (usually slower on CPU).

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
      h_batch=min(int(h_batch), hs.size), h_max=float(hs.max()), n_h=hs.size)
  with _fft64():
    out = np.asarray(_grid_amse(cfg, signal, W, jnp.asarray(sig, jnp.float32), jnp.asarray(hs, jnp.float32),
                                key, noise), dtype=np.float64)
  table = {d: out[i] for i, d in enumerate(DETECTORS)}
  best = {}
  for d, m in table.items():
    i, j = np.unravel_index(np.nanargmin(np.where(np.isfinite(m), m, np.nan)), m.shape)
    best[d] = (float(sig[i]), float(hs[j]), float(m[i, j]))
  return GridResult(amse=table, best=best, sigmas=sig, bandwidths=hs)
