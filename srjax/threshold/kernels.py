"""Threshold indicators and dense Nadaraya-Watson kernel rates (Eq. 1, Sec. II-C).

Two kernels, both Gaussian, on a unit-spaced design:

* srjax's: `bandwidth` is the standard deviation in SAMPLES; the kernel is cut at `truncate` standard deviations
  (default 4, like `scipy.ndimage.gaussian_filter1d`).
* the authors' MATLAB code's (`reference_step`): taps at `-h:step:h` with step 0.01 in its 1D code and 1 in its
  2D code, so `h` (its `kernel_width`) is a standard deviation of h/step samples cut at +-1 sd, and the taps are
  not symmetric when 2h/step is not an integer. It convolves with MATLAB's `conv(..., 'same')` (zero padding,
  offset floor(L/2) for L taps). The reference grid `linspace(.1, 1, 50)` is 10..100 samples in 1D; srjax's
  kernel on the same scales is `bandwidth = 100 * h_ref`.

Boundaries: 'renormalize' is the Nadaraya-Watson estimator proper (weights renormalised over the samples that
exist); 'zeros' divides by the whole kernel's mass, like the reference's zero-padded 'same' convolution, which
biases the rates towards 0 near the ends.

The dense [n, n] matrices serve `kernel_matrix`, `kernel_rates` and the single-observation `estimate`; the grid
search smooths by FFT or by shifted multiply-adds with the same taps (`srjax.threshold.smoothing`).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from srjax import checks
from srjax.threshold import settings as st

__all__ = ['indicators', 'kernel_matrix', 'kernel_rates']


def indicators(x: jnp.ndarray, a: float, b: float) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The threshold observations (I_a, I_b) = (1{x < a}, 1{x > b}).

  Args:
    x: noisy observations, any shape.
    a: lower threshold (finite, < b).
    b: upper threshold (finite).

  Returns:
    Two float32 arrays of x's shape.

  Raises:
    ValueError: a >= b, or a threshold is not finite.

  References:
    Eq. 1.
  """
  a, b = st.check_thresholds(a, b)
  x = jnp.asarray(x)
  return (x < a).astype(jnp.float32), (x > b).astype(jnp.float32)


def reference_taps(h, reference_step: float):
  """(number of taps L, centre floor(L/2)) of the reference kernel -h:step:h, from the float32 bandwidth."""
  n_taps = jnp.floor(2.0 * h / reference_step + 1e-4).astype(jnp.int32) + 1
  return n_taps, n_taps // 2


def weights_at(d: jnp.ndarray, bandwidth, truncate: float | None, reference_step: float | None) -> jnp.ndarray:
  """Unnormalised kernel weight w(d) for integer offsets d = i - j (output i, input j); any shape."""
  h = jnp.asarray(bandwidth, jnp.float32)
  if reference_step is None:
    d = d.astype(jnp.float32)
    w = jnp.exp(-0.5 * jnp.square(d / h))
    return w if truncate is None else jnp.where(jnp.abs(d) <= truncate * h, w, 0.0)
  # MATLAB: taps t_k = -h + step*k, k = 0..L-1, L = floor(2h/step) + 1; conv(data, ker, 'same') takes the
  # full convolution from offset floor(L/2), so out[i] = sum_k ker[k] data[i + floor(L/2) - k].
  n_taps, center = reference_taps(h, reference_step)
  k = d + center
  t = -h + reference_step * k.astype(jnp.float32)
  return jnp.where((k >= 0) & (k < n_taps), jnp.exp(-0.5 * jnp.square(t / h)), 0.0)


def kernel_mass(n: int, bandwidth, truncate: float | None, reference_step: float | None) -> jnp.ndarray:
  """The whole kernel's mass (the 'zeros' boundary's divisor): all offsets |d| < n, or all reference taps."""
  if reference_step is None:
    return jnp.sum(weights_at(jnp.arange(-(n - 1), n), bandwidth, truncate, None))
  h = jnp.asarray(bandwidth, jnp.float32)
  k_all = jnp.arange(4 * n + 1)
  t_all = -h + reference_step * k_all.astype(jnp.float32)
  n_taps, _ = reference_taps(h, reference_step)
  return jnp.sum(jnp.where(k_all < n_taps, jnp.exp(-0.5 * jnp.square(t_all / h)), 0.0))


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def dense_kernel(n: int, bandwidth, boundary: str, truncate: float | None, reference_step: float | None):
  """[n, n] smoothing matrix (jitted; the arguments of `kernel_matrix`, already checked)."""
  d = jnp.arange(n)[:, None] - jnp.arange(n)[None, :]
  w = weights_at(d, bandwidth, truncate, reference_step)
  if boundary == 'renormalize':
    return w / jnp.sum(w, axis=1, keepdims=True)
  return w / kernel_mass(n, bandwidth, truncate, reference_step)


def kernel_matrix(n: int, bandwidth: float | jnp.ndarray, *, boundary: str = 'renormalize',
                  truncate: float | None = 4.0, reference_step: float | None = None) -> jnp.ndarray:
  """Dense Nadaraya-Watson smoothing matrix K [n, n] for an equally spaced design: rates = K @ indicators.

  Args:
    n: number of samples.
    bandwidth: Gaussian standard deviation in samples (may be a traced scalar inside jit).
    boundary: 'renormalize' (each row sums to 1) or 'zeros' (rows divided by the whole kernel's mass, as
      MATLAB's conv(..., 'same') with a normalised kernel).
    truncate: cut the kernel at this many standard deviations (None: no cut); ignored with reference_step.
    reference_step: build the reference MATLAB kernel instead, taps at -h:reference_step:h (0.01 in its 1D
      code, 1 in its 2D code); `bandwidth` is then the reference's kernel_width (module docstring).

  Returns:
    float32 [n, n], K[i, j] the weight of input j in output i.

  Raises:
    ValueError: an unknown boundary.

  References:
    Sec. II-C (Nadaraya-Watson estimate of the exceedance rate; Mueller 2000).
  """
  checks.one_of('boundary', boundary, st.BOUNDARIES)
  return dense_kernel(int(n), jnp.asarray(bandwidth, jnp.float32), boundary,
                      None if truncate is None else float(truncate),
                      None if reference_step is None else float(reference_step))


def apply_kernels(ind: jnp.ndarray, mats: Sequence[jnp.ndarray]) -> jnp.ndarray:
  """Smooths the last len(mats) axes of ind with the given matrices (separable)."""
  if len(mats) == 1:
    return jnp.einsum('...j,ij->...i', ind, mats[0])
  return jnp.einsum('ij,...jk,lk->...il', mats[0], ind, mats[1])


def sum_sq_weights(mats: Sequence[jnp.ndarray]) -> jnp.ndarray:
  """sum_j K_ij^2 for each output position (the 1/n_eff of the kernel estimate), [n] or [n, m]."""
  sq = [jnp.sum(jnp.square(m), axis=1) for m in mats]
  return sq[0] if len(sq) == 1 else sq[0][:, None] * sq[1][None, :]


def kernel_rates(ind: jnp.ndarray, bandwidth: float, *, boundary: str = 'renormalize', axes: int = 1,
                 truncate: float | None = 4.0, reference_step: float | None = None) -> jnp.ndarray:
  """Nadaraya-Watson estimate of the exceedance rate p(t) from indicators.

  p_hat_i = sum_j K_h(i - j) I_j / sum_j K_h(i - j) on a unit-spaced design; in 2D the Gaussian kernel is the
  product of two 1D kernels, applied as two matmuls.

  Args:
    ind: indicators [..., n] (axes=1) or [..., n, m] (axes=2).
    bandwidth: kernel standard deviation in samples (> 0).
    boundary: 'renormalize' or 'zeros' (see `kernel_matrix`).
    axes: 1 smooths the last axis, 2 the last two.
    truncate: kernel cut in standard deviations (see `kernel_matrix`).
    reference_step: the reference kernel's tap step (see `kernel_matrix`).

  Returns:
    Rates with ind's shape, float32, in [0, 1].

  Raises:
    ValueError: bad axes, bandwidth or boundary, or ind with fewer than `axes` axes.

  References:
    Sec. II-C (Mueller 2000).
  """
  checks.one_of('axes', axes, (1, 2))
  st.check_positive('bandwidth', bandwidth)
  ind = jnp.asarray(ind, jnp.float32)
  if ind.ndim < axes:
    checks.fail('ind', ind, f'an array with at least {axes} axes for axes={axes}')
  mats = [kernel_matrix(n, bandwidth, boundary=boundary, truncate=truncate, reference_step=reference_step)
          for n in ind.shape[ind.ndim - axes:]]
  return apply_kernels(ind, mats)
