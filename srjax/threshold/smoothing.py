"""Fast kernel smoothing for the grid search: exact zero-padded linear convolution by FFT or by shifted adds.

Along an axis of n samples whose kernel has nonzero weights only at offsets |d| <= D, out[i] = sum_d w(d)
in[i - d] for i < n equals the circular convolution of `in` zero-padded to P >= n + D samples with the taps
placed circularly (w(d) at d mod P): no wrapped term reaches an output. So truncation, the reference's
asymmetric taps and both boundaries stay exact (the boundary is a per-output divisor), and the rates equal the
dense [n, n] matmul's (`srjax.threshold.kernels`) to float32 rounding. The spectrum of the indicators does not
depend on the bandwidth, so the grid search transforms each trial chunk once and pays one inverse FFT per
bandwidth: O(n log n) per (sigma, h, trial) instead of the O(n^2) of a dense matmul. Spectra are float64
(`fft64`). Grids whose kernels are all narrow (`band_limit`) use float32 shifted multiply-adds instead,
O(half-width) per sample.

Windows that hold no exceedance (or only exceedances) get exactly 0 (the all-ones rate) from exact integer
window counts when the estimator model asks for it (`EstimatorModel.exact_windows`): the FFT leaves rounding
there (~1e-17 in float64), which an unclipped formula would turn into a variance.
"""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from srjax.threshold import kernels


def fft64():
  """Context for tracing and calling the FFT paths: their spectra are float64 (everything else stays float32).

  A float32 FFT leaves an absolute error ~1e-7 on every rate, i.e. a large relative error on the small rates
  the estimators invert (Phi^{-1}(1e-5) moves by ~3e-3); in float64 the rates are exact to float32 rounding,
  as with the dense matmul.

  Returns:
    A context manager (thread-local; the previous setting is restored on exit).
  """
  return jax.enable_x64(True)


class Axis(NamedTuple):
  """FFT geometry of one signal axis."""
  n: int      # samples
  half: int   # D: every nonzero kernel weight has |offset| <= D (static bound, <= n - 1)
  size: int   # P: FFT length >= n + D


class Smoother(NamedTuple):
  """Per-bandwidth smoothing data (leading axis H when stacked over bandwidths)."""
  spectrum: jnp.ndarray   # [P//2 + 1] (1D) or [P_0, P_1//2 + 1] (2D); float64 for symmetric kernels, else complex
  scale: jnp.ndarray      # [*shape]: 1/row sum (renormalize) or 1/mass (zeros)
  full: jnp.ndarray       # [*shape]: the rate of a window full of ones (exactly 1 where no weight is lost)
  inv_n_eff: jnp.ndarray  # [*shape]: sum_j K_ij^2
  lo: jnp.ndarray         # int32 [axes]: smallest offset with a nonzero weight
  hi: jnp.ndarray         # int32 [axes]: largest one
  taps: tuple             # per axis, float32 [2D + 1]: w(d) for d = -D..D (the banded path)


def fft_length(m: int) -> int:
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


def support_bound(h_max: float, shape: tuple[int, ...], reference_step: float | None, truncate: float | None,
                  exact: bool = False) -> int:
  """A static D >= every nonzero kernel offset for bandwidths <= h_max (with a margin of 1 for float32
  rounding), at most max(shape) - 1; rounded up to a power of two unless `exact` (fewer compiled variants)."""
  if reference_step is not None:
    half = int(math.floor(2.0 * h_max / reference_step + 1e-4)) // 2 + 1
  elif truncate is None:
    half = max(shape)
  else:
    half = int(math.floor(truncate * h_max)) + 1
  return min(half if exact else 1 << max(0, half - 1).bit_length(), max(shape) - 1)


def band_limit(ndim: int, n_shared: int) -> int:
  """Largest kernel half-width D applied as shifted multiply-adds (float32) rather than by FFT, for a grid
  whose bandwidths share each forward transform n_shared at a time.

  From measured crossovers of whole grid searches on one core (pooling='estimates'): 1D n = 1024, 50 sigmas x
  10 trials: D ~ 55 with 50 bandwidths per transform, ~ 80 with 5, ~ 100 with one (beyond ~100 taps per side
  XLA's fused shift-adds get 5x slower); 2D 512x512, 10 sigmas: D ~ 27 with 5 bandwidths, ~ 40 with one.
  """
  return 48 if ndim == 1 else 16 + 24 // max(1, n_shared)


def make_axes(shape: tuple[int, ...], half: int) -> tuple[Axis, ...]:
  """The FFT geometry of every signal axis for a kernel half-width bound `half`."""
  out = []
  for n in shape:
    d = min(half, n - 1)
    out.append(Axis(n, d, fft_length(n + d)))
  return tuple(out)


def _axis_kernel(ax: Axis, h, boundary: str, truncate: float | None, reference_step: float | None, last: bool):
  """(spectrum, scale [n], full [n], sum of squared weights [n], lo, hi, taps) of one axis for bandwidth h.

  The float32 taps are those of the dense path; sums and the spectrum are float64 (O(n + P log P) per h)."""
  n, D, P = ax
  d = jnp.arange(-D, D + 1)
  w = kernels.weights_at(d, h, truncate, reference_step)              # [2D + 1] float32
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
    mass = kernels.kernel_mass(n, h, truncate, reference_step)
    scale = jnp.full((n,), 1.0 / mass)
    fits = True
    if reference_step is not None:   # every reference tap within [-D, D] (else its mass counts lost taps)
      n_taps, center = kernels.reference_taps(jnp.asarray(h, jnp.float32), reference_step)
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


def smoother(axes: tuple[Axis, ...], h, boundary: str, truncate: float | None,
             reference_step: float | None) -> Smoother:
  """Separable smoothing data for bandwidth h (traced scalar) on the trailing len(axes) axes."""
  parts = [_axis_kernel(ax, h, boundary, truncate, reference_step, k == len(axes) - 1)
           for k, ax in enumerate(axes)]
  if len(parts) == 1:
    spec, scale, full, inv_n_eff, lo, hi, w = parts[0]
    return Smoother(spec, scale, full, inv_n_eff, lo[None], hi[None], (w,))
  (s0, c0, f0, q0, lo0, hi0, w0), (s1, c1, f1, q1, lo1, hi1, w1) = parts
  return Smoother(s0[:, None] * s1[None, :], c0[:, None] * c1[None, :], f0[:, None] * f1[None, :],
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


def prepare_input(x: jnp.ndarray, axes: tuple[Axis, ...], banded: bool) -> jnp.ndarray:
  """The bandwidth-independent part of smoothing x [..., *shape]: its spectrum, or x itself (banded)."""
  return x.astype(jnp.float32) if banded else _forward(x, axes)


def smooth(prepared: jnp.ndarray, sm: Smoother, axes: tuple[Axis, ...], banded: bool,
           last_axis: bool = True) -> jnp.ndarray:
  """Unnormalised kernel sums sum_j w(i - j) x_j, float32 [..., *shape] (times sm.scale: the rates).

  last_axis=False leaves the banded path's last axis to `smooth_last` (callers put a loop boundary between
  the two: XLA:CPU would otherwise fuse the passes and recompute the first one (2D+1) times per output)."""
  if not banded:
    return _inverse(prepared * sm.spectrum, axes)
  out = prepared
  for k, w in enumerate(sm.taps[:-1]):
    out = _band_conv(out, w, out.ndim - len(axes) + k)
  return smooth_last(out, sm, banded) if last_axis else out


def smooth_last(x: jnp.ndarray, sm: Smoother, banded: bool) -> jnp.ndarray:
  """The banded path's last-axis pass (identity for FFT)."""
  return _band_conv(x, sm.taps[-1], x.ndim - 1) if banded else x


def _forward(x: jnp.ndarray, axes: tuple[Axis, ...]) -> jnp.ndarray:
  """Spectrum of x [..., *shape] zero-padded to the FFT lengths (h-independent)."""
  if len(axes) == 2:   # one 2D transform: no transposes around an FFT along axis -2 (faster on XLA:CPU)
    return jnp.fft.rfft2(x.astype(jnp.float64), s=(axes[0].size, axes[1].size))
  return jnp.fft.rfft(x.astype(jnp.float64), n=axes[-1].size, axis=-1)


def _inverse(spec: jnp.ndarray, axes: tuple[Axis, ...]) -> jnp.ndarray:
  """Inverse of `_forward`, cropped to the signal: [..., *shape] float32."""
  if len(axes) == 2:
    out = jnp.fft.irfft2(spec, s=(axes[0].size, axes[1].size))[..., :axes[0].n, :axes[1].n]
  else:
    out = jax.lax.slice_in_dim(jnp.fft.irfft(spec, n=axes[-1].size, axis=-1), 0, axes[-1].n, axis=-1)
  return out.astype(jnp.float32)


def window_table(mask: jnp.ndarray, axes: tuple[Axis, ...]) -> jnp.ndarray:
  """Summed-area table of a boolean mask [..., *shape] (int32, exact), padded for `_window_counts`: along each
  axis D + 1 leading zeros and D trailing copies of the total, [..., n_k + 2 D_k + 1]."""
  sat = mask.astype(jnp.int32)
  k0 = sat.ndim - len(axes)
  for k in range(len(axes)):
    sat = jnp.cumsum(sat, axis=k0 + k)
  edge = [(0, 0)] * k0 + [(0, ax.half) for ax in axes]
  zeros = [(0, 0)] * k0 + [(ax.half + 1, 0) for ax in axes]
  return jnp.pad(jnp.pad(sat, edge, mode='edge'), zeros)


def _window_counts(sat: jnp.ndarray, axes: tuple[Axis, ...], lo: jnp.ndarray, hi: jnp.ndarray) -> jnp.ndarray:
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


def _window_sizes(axes: tuple[Axis, ...], lo: jnp.ndarray, hi: jnp.ndarray) -> jnp.ndarray:
  """Number of in-signal inputs in each output's window, [*shape] int32."""
  sizes = []
  for k, ax in enumerate(axes):
    i = jnp.arange(ax.n)
    sizes.append(jnp.minimum(ax.n - 1, i - lo[k]) - jnp.maximum(0, i - hi[k]) + 1)
  return sizes[0] if len(sizes) == 1 else sizes[0][:, None] * sizes[1][None, :]


def exact_windows_fix(rates, nonzero_sat, full_sat, sm: Smoother, axes: tuple[Axis, ...]):
  """Exact 0 / all-ones rates where the window tables say so.

  nonzero_sat=None skips the fix (float64 FFT rounding, ~1e-16, is left there). full_sat=None means the input
  is 0/1 (indicators): a window is full when all its entries are nonzero."""
  if nonzero_sat is None:
    return rates
  n_nonzero = _window_counts(nonzero_sat, axes, sm.lo, sm.hi)
  n_full = n_nonzero if full_sat is None else _window_counts(full_sat, axes, sm.lo, sm.hi)
  rates = jnp.where(n_full == _window_sizes(axes, sm.lo, sm.hi), sm.full, rates)
  return jnp.where(n_nonzero == 0, 0.0, rates)


def rates(prepared: jnp.ndarray, nonzero_sat: jnp.ndarray | None, full_sat: jnp.ndarray | None,
          sm: Smoother, axes: tuple[Axis, ...], banded: bool) -> jnp.ndarray:
  """Kernel rates [..., *shape] from `prepare_input` and window tables (`exact_windows_fix`), one bandwidth."""
  return exact_windows_fix(smooth(prepared, sm, axes, banded) * sm.scale, nonzero_sat, full_sat, sm, axes)
