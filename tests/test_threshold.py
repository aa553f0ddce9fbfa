"""Tests for srjax.threshold against closed forms, numerical derivatives, CLT bounds and slow NumPy references."""
from __future__ import annotations

import dataclasses
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pywt
import scipy.special
import scipy.stats

from srjax import threshold as th
from srjax.threshold import grid as th_grid
from srjax.threshold import models as th_models
from srjax.threshold import smoothing as th_smoothing
from srjax import wavelet as wv

pytestmark = pytest.mark.filterwarnings('ignore:Level value')
DETS = th.DETECTORS


# ------------------------------------------------------------------------------------------------------------
# Fisher information
# ------------------------------------------------------------------------------------------------------------

def _fi_numeric(theta, sigma, thresholds):
  """Fisher information of the categorical observation (x below/between/above thresholds), x ~ N(theta, sigma^2),
  from a central finite difference of the cell probabilities: sum_k (dp_k/dtheta)^2 / p_k."""
  def cells(t):
    cdf = scipy.stats.norm.cdf((np.asarray(thresholds) - t) / sigma)
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))
  eps = 1e-5
  dp = (cells(theta + eps) - cells(theta - eps)) / (2 * eps)
  return float(np.sum(dp ** 2 / cells(theta)))


def test_fisher_closed_form_values():
  np.testing.assert_allclose(float(th.fisher_single(0.0)), 2 / math.pi, rtol=1e-6)
  value, za, zb = th.fisher_double_maximum(constrained=True)
  assert za == 0.0
  np.testing.assert_allclose(value, 0.759569, atol=1e-6)
  np.testing.assert_allclose(zb, 0.98, atol=0.01)
  value, za, zb = th.fisher_double_maximum(constrained=False)
  np.testing.assert_allclose(value, 0.809826, atol=1e-6)
  np.testing.assert_allclose([za, zb], [-0.612, 0.612], atol=1e-3)
  # The jnp functions agree with the float64 values used by the maximiser.
  np.testing.assert_allclose(float(th.fisher_double(0.0, zb)), th.fisher_double_maximum(True)[0], rtol=0.05)


@pytest.mark.parametrize('theta,sigma,a,b', [(0.0, 1.0, -1.0, 1.0), (0.3, 0.7, -0.4, 1.5), (-2.0, 1.3, -1.0, 0.5),
                                             (0.1, 2.0, 0.1, 0.2)])
def test_fisher_matches_numerical_derivative(theta, sigma, a, b):
  z_a, z_b = (a - theta) / sigma, (b - theta) / sigma
  np.testing.assert_allclose(float(th.fisher_double(z_a, z_b)), _fi_numeric(theta, sigma, [a, b]) * sigma ** 2,
                             rtol=2e-4)
  np.testing.assert_allclose(float(th.fisher_single(z_b)), _fi_numeric(theta, sigma, [b]) * sigma ** 2, rtol=2e-4)


def test_fisher_is_finite_in_the_tails_and_reduces_to_single():
  z = jnp.array([-1e3, -40.0, -8.0, 8.0, 40.0, 1e3])
  for value in (th.fisher_single(z), th.fisher_double(z, z + 1.0), th.fisher_double(-z, z)):
    chex.assert_tree_all_finite(value)
    assert np.all(np.asarray(value) >= 0)
  zz = jnp.linspace(-3, 3, 13)
  np.testing.assert_allclose(np.asarray(th.fisher_double(zz, zz)), np.asarray(th.fisher_single(zz)), rtol=1e-5)
  # Two thresholds never keep less than either one alone.
  assert np.all(np.asarray(th.fisher_double(zz, zz + 0.5)) >= np.asarray(th.fisher_single(zz)) - 1e-6)


# ------------------------------------------------------------------------------------------------------------
# Constant signal: parametric estimators, delta-method variances (Sec. II-A/B, Appendix A/B)
# ------------------------------------------------------------------------------------------------------------

A, B, SIG = -1.0, 1.0, 1.0


def _delta_method(theta, n):
  """(v_sub, v_sup, cov) of the estimators from n samples at the true rates."""
  z_a, z_b = (A - theta) / SIG, (B - theta) / SIG
  p_a, p_b = scipy.stats.norm.cdf(z_a), scipy.stats.norm.sf(z_b)
  f_a, f_b = scipy.stats.norm.pdf(z_a), scipy.stats.norm.pdf(z_b)
  return (SIG ** 2 * p_a * (1 - p_a) / (n * f_a ** 2), SIG ** 2 * p_b * (1 - p_b) / (n * f_b ** 2),
          SIG ** 2 * p_a * p_b / (n * f_a * f_b))


@jax.jit
def _constant_estimates(x):
  """[sub, sup, double (variance weights), double (optimal weights)] for one sample vector x."""
  out = [th.estimate_constant(x, a=A, b=B, sigma=SIG, detector=d)[0] for d in DETS]
  out.append(th.estimate_constant(x, a=A, b=B, sigma=SIG, detector='double', weights='optimal')[0])
  return jnp.stack(out)


@pytest.mark.parametrize('theta', [-0.5, 0.3])
def test_constant_signal_within_clt_bound(theta):
  n = 20_000
  x = theta + SIG * jax.random.normal(jax.random.PRNGKey(7), (n,))
  est = np.asarray(_constant_estimates(x), np.float64)
  v_a, v_b, c = _delta_method(theta, n)
  w_a = v_b / (v_a + v_b)
  v_double = w_a ** 2 * v_a + (1 - w_a) ** 2 * v_b + 2 * w_a * (1 - w_a) * c
  for value, var in zip(est, [v_a, v_b, v_double, v_double]):
    assert abs(value - theta) <= 5 * math.sqrt(var), (value, theta, math.sqrt(var))
  # The reported variance is the delta-method one at the estimated rates.
  _, var_sub = th.estimate_constant(x, a=A, b=B, sigma=SIG, detector='sub')
  np.testing.assert_allclose(float(var_sub), v_a, rtol=0.1)


def test_double_variance_not_above_single_ones():
  theta, n, reps = 0.3, 2_000, 400
  x = theta + SIG * jax.random.normal(jax.random.PRNGKey(11), (reps, n))
  est = np.asarray(jax.vmap(_constant_estimates)(x), np.float64)              # [reps, 4]
  var = est.var(axis=0, ddof=1)
  v_a, v_b, c = _delta_method(theta, n)
  # Empirical variances match the delta method (relative sd of a variance estimate: sqrt(2/reps) = 7%).
  np.testing.assert_allclose(var[:2], [v_a, v_b], rtol=0.25)
  # Predicted ratio var(double)/min(var(sub), var(sup)) is 0.72 here; 0.9 leaves ~4 sampling sds of margin
  # (the ratio of two positively correlated variance estimates has sd < 0.05 at 400 replicates).
  assert var[2] <= 0.9 * min(var[0], var[1]), var
  assert var[3] <= 0.9 * min(var[0], var[1]), var


def test_double_weights_minimise_the_variance():
  rng = np.random.default_rng(0)
  for _ in range(5):
    v_a, v_b = rng.uniform(0.1, 3.0, 2)
    c = rng.uniform(-0.9, 0.9) * math.sqrt(v_a * v_b)
    grid = np.linspace(-1, 2, 300_001)
    brute = grid[np.argmin(grid ** 2 * v_a + (1 - grid) ** 2 * v_b + 2 * grid * (1 - grid) * c)]
    w_a, w_b = th.double_weights(v_a, v_b, c)
    np.testing.assert_allclose(float(w_a), brute, atol=1e-4)
    np.testing.assert_allclose(float(w_a) + float(w_b), 1.0, rtol=1e-6)
  w_a, w_b = th.double_weights(jnp.zeros(3), jnp.zeros(3))                     # both-zero guard
  np.testing.assert_array_equal(np.asarray(w_a), 0.5)
  np.testing.assert_allclose(float(th.estimator_covariance(0.2, 0.3, 1.5, 100)),
                             1.5 ** 2 * 0.06 / (100 * scipy.stats.norm.pdf(scipy.stats.norm.ppf(0.2))
                                                * scipy.stats.norm.pdf(scipy.stats.norm.ppf(0.3))), rtol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Kernel rates
# ------------------------------------------------------------------------------------------------------------

def _np_gauss_taps(h, truncate=4.0):
  k = np.arange(-int(np.floor(truncate * h)), int(np.floor(truncate * h)) + 1)
  return np.exp(-0.5 * (k / h) ** 2)


def _np_rates(ind, h, boundary):
  """NumPy Nadaraya-Watson along the last axis: np.convolve with the 4-sd Gaussian taps. Returns (rates, sum w^2)."""
  w = _np_gauss_taps(h)
  n, half = ind.shape[-1], len(w) // 2
  conv = lambda v, taps: np.convolve(v, taps)[half:half + n]      # centred 'same' for any kernel length
  ones = np.ones(n)
  norm = conv(ones, w) if boundary == 'renormalize' else np.full(n, w.sum())
  rates = np.apply_along_axis(lambda v: conv(v, w), -1, ind) / norm
  return rates, conv(ones, w ** 2) / norm ** 2


def _np_reference_rates(ind, h, step):
  """The reference's kernel: taps -h:step:h normalised, MATLAB conv(..., 'same') (offset floor(L/2))."""
  taps = -h + step * np.arange(int(np.floor(2 * h / step + 1e-9)) + 1)
  w = np.exp(-taps ** 2 / (2 * h ** 2))
  w /= w.sum()
  n, off = ind.shape[-1], len(w) // 2
  return np.apply_along_axis(lambda v: np.convolve(v, w)[off:off + n], -1, ind)


@pytest.mark.parametrize('boundary', ['renormalize', 'zeros'])
def test_kernel_rates_match_numpy(boundary):
  ind = (np.random.default_rng(0).random((3, 40)) < 0.3).astype(np.float32)
  got = th.kernel_rates(jnp.asarray(ind), 2.5, boundary=boundary)
  chex.assert_shape(got, (3, 40))
  np.testing.assert_allclose(np.asarray(got), _np_rates(ind, 2.5, boundary)[0], atol=1e-6)
  ones = np.asarray(th.kernel_rates(jnp.ones(40), 2.5, boundary=boundary))
  if boundary == 'renormalize':
    np.testing.assert_allclose(ones, 1.0, rtol=1e-6)
  else:
    assert ones[0] < 0.7 and abs(ones[20] - 1) < 1e-6


def test_kernel_rates_2d_is_separable():
  ind = (np.random.default_rng(1).random((2, 12, 20)) < 0.4).astype(np.float32)
  got = np.asarray(th.kernel_rates(jnp.asarray(ind), 1.5, axes=2))
  rows = _np_rates(ind, 1.5, 'renormalize')[0]
  both = np.swapaxes(_np_rates(np.swapaxes(rows, -1, -2), 1.5, 'renormalize')[0], -1, -2)
  np.testing.assert_allclose(got, both, atol=1e-6)


@pytest.mark.parametrize('h,step', [(0.1, 0.01), (0.137, 0.01), (1.2, 1.0), (0.6, 1.0)])
def test_reference_kernel_matches_matlab_conv_same(h, step):
  ind = (np.random.default_rng(2).random(50) < 0.3).astype(np.float32)
  K = th.kernel_matrix(50, h, boundary='zeros', reference_step=step)
  np.testing.assert_allclose(np.asarray(K @ jnp.asarray(ind)), _np_reference_rates(ind, h, step), atol=1e-6)


@functools.partial(jax.jit, static_argnames=('axes', 'boundary', 'truncate', 'step', 'banded'))
def _fast_rates_and_neff(x, h, *, axes, boundary, truncate, step, banded):
  sm = th_smoothing.smoother(axes, h, boundary, truncate, step)
  prepared, sat = th_smoothing.prepare_input(x, axes, banded), th_smoothing.window_table(x > 0, axes)
  return th_smoothing.rates(prepared, sat, None, sm, axes, banded), sm.inv_n_eff


# (shape, bandwidth, boundary, truncate, reference step): Gaussian cut at 4 sd, uncut, wider than the signal,
# the reference kernels (asymmetric taps for 2h/0.01 not an integer), 2D.
@pytest.mark.parametrize('shape,h,boundary,truncate,step', [
    ((50,), 2.5, 'renormalize', 4.0, None), ((50,), 2.5, 'zeros', 4.0, None), ((50,), 3.0, 'renormalize', None, None),
    ((50,), 30.0, 'zeros', 4.0, None), ((50,), 0.137, 'zeros', None, 0.01), ((50,), 0.6, 'zeros', None, 0.01),
    ((12, 20), 1.5, 'renormalize', 4.0, None), ((12, 20), 2.0, 'zeros', None, 1.0)])
@pytest.mark.parametrize('banded', [False, True])
def test_fast_smoothing_equals_dense_kernel_matrix(shape, h, boundary, truncate, step, banded):
  """The grid search's smoothing (FFT, or shifted multiply-adds) == the dense kernel matrices (float64 NumPy),
  with exact zeros where a window holds no exceedance and exact ones where it is full (renormalize, or zeros
  away from the ends)."""
  rng = np.random.default_rng(8)
  x = (rng.random((3,) + shape) < 0.04).astype(np.float32)       # sparse: many empty windows
  x[2] = 0.0
  x[2, ..., 5:40] = 1.0                                           # full windows
  half = th_smoothing.support_bound(h, shape, step, truncate, exact=banded)
  axes = th_smoothing.make_axes(shape, half)
  with th.fft64():
    got, inv_n_eff = _fast_rates_and_neff(jnp.asarray(x), jnp.float32(h), axes=axes, boundary=boundary,
                                          truncate=truncate, step=step, banded=banded)
  got = np.asarray(got)
  chex.assert_shape(got, x.shape)
  mats = [np.asarray(th.kernel_matrix(n, h, boundary=boundary, truncate=truncate, reference_step=step),
                     np.float64) for n in shape]
  want = np.einsum('...j,ij->...i', x, mats[0]) if len(shape) == 1 else np.einsum('ij,...jk,lk->...il', mats[0], x,
                                                                                   mats[1])
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  # Exact 0 where no weight touches an exceedance.
  touched = np.einsum('...j,ij->...i', x, mats[0] != 0) if len(shape) == 1 else np.einsum(
      'ij,...jk,lk->...il', mats[0] != 0, x, mats[1] != 0)
  assert np.any(touched == 0)
  np.testing.assert_array_equal(got[touched == 0], 0.0)
  # Exact 1 where the whole kernel sees ones (all of its weight inside the signal for 'zeros').
  ones = np.ones(shape, np.float32)
  all_w = np.einsum('...j,ij->...i', ones, mats[0] != 0) if len(shape) == 1 else np.einsum(
      'ij,jk,lk->il', mats[0] != 0, ones, mats[1] != 0)
  full = (touched == all_w) & np.isclose(want, 1.0, atol=1e-5)
  if np.min(all_w) <= 21:                                         # the kernel fits into the block of ones
    assert np.any(full)
  np.testing.assert_array_equal(got[full], 1.0)
  sq = [np.sum(np.square(m), axis=1) for m in mats]
  np.testing.assert_allclose(np.asarray(inv_n_eff), sq[0] if len(sq) == 1 else np.outer(sq[0], sq[1]), rtol=1e-5)


def test_fast_inverse_normal_matches_scipy_float64():
  """The grid's Phi^{-1} (Giles' erfinv with w from p) on its range [1e-7, 1 - 1e-7]: float32 accuracy."""
  tails = np.geomspace(1e-7, 0.5, 20_000)
  p = np.concatenate([tails, 1 - tails, np.linspace(0.3, 0.7, 2_001)]).astype(np.float32)
  got = np.asarray(jax.jit(th_models.ndtri_fast)(jnp.asarray(p)), np.float64)
  want = scipy.special.ndtri(p.astype(np.float64))
  np.testing.assert_allclose(got, want, rtol=4e-7, atol=2e-7)
  assert np.all(np.diff(got[:20_000]) >= 0)                      # monotone along the lower tail


# ------------------------------------------------------------------------------------------------------------
# Single-trial estimator, reference quirks
# ------------------------------------------------------------------------------------------------------------

def _np_quirk_estimates(x, a, b, h, v, step):
  """The reference's sigma-free formulas (F_inv via erfinv, clipping at +-v), one trial, NumPy float64."""
  p_a = np.clip(_np_reference_rates((x < a).astype(float), h, step), 0, 1)
  p_b = np.clip(_np_reference_rates((x > b).astype(float), h, step), 0, 1)
  f_inv = lambda p: math.sqrt(2) * scipy.special.erfinv(2 * p - 1)
  pdf = lambda z: np.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi)
  z_a = np.clip(f_inv(p_a), -v, v)
  z_b = np.clip(f_inv(1 - p_b), -v, v)
  n = x.shape[-1]
  return a - z_a, b - z_b, p_a * (1 - p_a) / (n * pdf(z_a) ** 2), p_b * (1 - p_b) / (n * pdf(z_b) ** 2)


def test_reference_quirks_reproduce_sigma_free_formula():
  rng = np.random.default_rng(3)
  s = 0.8 * np.sin(np.linspace(0, 4 * np.pi, 200))
  x = (s + 1.7 * rng.standard_normal(200)).astype(np.float32)
  s_sub, s_sup, v_a, v_b = _np_quirk_estimates(x.astype(np.float64), -2.0, 2.0, 0.13, 4.5, 0.01)
  for det, want, var in [('sub', s_sub, v_a), ('sup', s_sup, v_b)]:
    got, got_var = th.estimate(jnp.asarray(x), a=-2.0, b=2.0, sigma=1.7, bandwidth=0.13, detector=det,
                               reference_quirks=True)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-4)
    np.testing.assert_allclose(np.asarray(got_var), var, rtol=2e-3, atol=1e-12)
  got, _ = th.estimate(jnp.asarray(x), a=-2.0, b=2.0, sigma=1.7, bandwidth=0.13, reference_quirks=True)
  den = v_a + v_b
  want = np.where(den > 0, (s_sub * v_b + s_sup * v_a) / np.where(den > 0, den, 1), 0.5 * (s_sub + s_sup))
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-4)
  # sigma does not enter the quirk formula; it does enter the correct one.
  other, _ = th.estimate(jnp.asarray(x), a=-2.0, b=2.0, sigma=0.3, bandwidth=0.13, reference_quirks=True)
  np.testing.assert_array_equal(np.asarray(other), np.asarray(got))
  c1, _ = th.estimate(jnp.asarray(x), a=-2.0, b=2.0, sigma=1.7, bandwidth=13.0)
  c2, _ = th.estimate(jnp.asarray(x), a=-2.0, b=2.0, sigma=0.3, bandwidth=13.0)
  assert np.max(np.abs(np.asarray(c1) - np.asarray(c2))) > 0.1


def test_estimate_is_finite_for_extreme_inputs():
  x = jnp.concatenate([jnp.full(30, -50.0), jnp.full(30, 50.0), jnp.zeros(4)])
  for quirks in (False, True):
    for det in DETS:
      est, var = th.estimate(x, a=-1.0, b=1.0, sigma=0.5, bandwidth=0.5 if quirks else 3.0, detector=det,
                             reference_quirks=quirks)
      chex.assert_tree_all_finite((est, var))
      chex.assert_shape(est, (64,))


# ------------------------------------------------------------------------------------------------------------
# Grid search == slow NumPy reference (one trial at a time, same noise)
# ------------------------------------------------------------------------------------------------------------

def _np_grid(signal, noise, a, b, sigmas, hs, *, domain, wavelet, level, quirks, pooling='estimates',
             weights='variance'):
  """Straightforward loops over sigma, h, trial. Wavelet domain: pywt.wavedec / waverec (not srjax's matrix).
  weights='optimal' (correct model): the double detector uses the trial-averaged covariance (Eq. 20)."""
  n = signal.shape[-1]
  if domain == 'wavelet':
    d = np.concatenate(pywt.wavedec(signal, wavelet, mode='periodization', level=level))
    sizes = wv.block_sizes(n, level)
    inverse = lambda c: pywt.waverec(np.split(c, np.cumsum(sizes)[:-1]), wavelet, mode='periodization')
  else:
    d, inverse = signal, lambda c: c
  out = np.zeros((3, len(sigmas), len(hs)))
  for i, sig in enumerate(sigmas):
    for j, h in enumerate(hs):
      acc = np.zeros((5, n))
      if pooling == 'rates':
        ia = np.mean([(d + sig * e < a) for e in noise], axis=0)
        ib = np.mean([(d + sig * e > b) for e in noise], axis=0)
        trials = [(ia, ib)]
      else:
        trials = [((d + sig * e < a).astype(float), (d + sig * e > b).astype(float)) for e in noise]
      for ia, ib in trials:
        if quirks:
          x_like = None
          p_a = np.clip(_np_reference_rates(ia, h, 0.01), 0, 1)
          p_b = np.clip(_np_reference_rates(ib, h, 0.01), 0, 1)
          z_a = np.clip(math.sqrt(2) * scipy.special.erfinv(2 * p_a - 1), -4.5, 4.5)
          z_b = np.clip(math.sqrt(2) * scipy.special.erfinv(1 - 2 * p_b), -4.5, 4.5)
          pdf2 = lambda z: np.exp(-z ** 2) / (2 * math.pi)
          acc += [a - z_a, b - z_b, p_a * (1 - p_a) / (n * pdf2(z_a)), p_b * (1 - p_b) / (n * pdf2(z_b)), 0 * z_a]
        else:
          p_a, sq = _np_rates(ia, h, 'renormalize')
          p_b, _ = _np_rates(ib, h, 'renormalize')
          p_a, p_b = np.clip(p_a, 1e-6, 1 - 1e-6), np.clip(p_b, 1e-6, 1 - 1e-6)
          z_a, z_b = scipy.special.ndtri(p_a), scipy.special.ndtri(p_b)
          n_pool = len(noise) if pooling == 'rates' else 1
          var = lambda p, z: sig ** 2 * p * (1 - p) * sq / n_pool / scipy.stats.norm.pdf(z) ** 2
          cov = sig ** 2 * p_a * p_b * sq / n_pool / (scipy.stats.norm.pdf(z_a) * scipy.stats.norm.pdf(z_b))
          acc += [a - sig * z_a, b + sig * z_b, var(p_a, z_a), var(p_b, z_b), cov]
      s_sub, s_sup, v_a, v_b, c = acc / len(trials)
      c = c if weights == 'optimal' else 0 * c
      den = v_a + v_b - 2 * c
      s_dbl = np.where(den > 0, (s_sub * (v_b - c) + s_sup * (v_a - c)) / np.where(den > 0, den, 1),
                       0.5 * (s_sub + s_sup))
      for k, est in enumerate([s_sub, s_sup, s_dbl]):
        out[k, i, j] = np.mean((inverse(est) - signal) ** 2)
  return out


def _smoothing_path(signal, hs, quirks, pooling='estimates'):
  """'band' or 'fft': the static smoothing path grid_search picks for this grid."""
  settings = th.Settings(a=-1.0, b=1.0, n_trials=1, reference_quirks=quirks, pooling=pooling)
  plan = th_grid.plan(settings, jnp.asarray(signal, jnp.float32), jax.random.PRNGKey(0), None, n_sigma=1,
                      h_max=float(np.max(hs)), n_h=len(hs))[0]
  return 'band' if plan.banded else 'fft'


# Small and large kernels (the largest picks the path and the FFT padding), the reference kernel narrow and wide.
@pytest.mark.parametrize('domain,quirks,pooling,hs,path', [
    ('data', False, 'estimates', (0.8, 2.0), 'band'),
    ('wavelet', False, 'estimates', (1.5, 3.0), 'band'),
    ('data', False, 'estimates', (2.0, 12.0), 'fft'),
    ('wavelet', False, 'estimates', (3.0, 14.0), 'fft'),
    ('data', True, 'estimates', (0.05, 0.06), 'band'),
    ('data', True, 'estimates', (0.05, 0.6), 'fft'),
    ('wavelet', False, 'rates', (1.5, 2.0), 'band'),
    ('wavelet', True, 'rates', (0.1, 0.5), 'fft')])
def test_grid_search_equals_slow_numpy(domain, quirks, pooling, hs, path):
  n, trials = 64, 4
  signal = 0.9 * np.sin(np.linspace(0, 3 * np.pi, n))
  noise = np.random.default_rng(5).standard_normal((trials, n)).astype(np.float32)
  sigmas = np.array([0.6, 1.1, 1.9])
  hs = np.array(hs)
  assert _smoothing_path(signal, hs, quirks, pooling) == path
  got = th.grid_search(jnp.asarray(signal, jnp.float32), jax.random.PRNGKey(0), a=-1.0, b=1.2, sigmas=sigmas,
                       bandwidths=hs, n_trials=trials, domain=domain, wavelet='db4', level=2,
                       reference_quirks=quirks, pooling=pooling, chunk_size=2, noise=jnp.asarray(noise))
  want = _np_grid(signal, noise.astype(np.float64), -1.0, 1.2, sigmas, hs, domain=domain, wavelet='db4', level=2,
                  quirks=quirks, pooling=pooling)
  for k, det in enumerate(DETS):
    chex.assert_shape(got.amse[det], (3, 2))
    # float32 vs float64: rates agree to ~1e-7; clipped tails can move an estimate by ~1e-4.
    np.testing.assert_allclose(got.amse[det], want[k], rtol=2e-3, atol=1e-6)
    i, j = np.unravel_index(np.argmin(want[k]), want[k].shape)
    assert got.best[det][:2] == (sigmas[i], hs[j])


@pytest.mark.parametrize('pooling', ['estimates', 'rates'])
def test_grid_search_optimal_weights_equals_slow_numpy(pooling):
  n, trials = 64, 4
  signal = 0.9 * np.sin(np.linspace(0, 3 * np.pi, n))
  noise = np.random.default_rng(9).standard_normal((trials, n)).astype(np.float32)
  sigmas, hs = np.array([0.8, 1.6]), np.array([2.0, 4.0])
  got = th.grid_search(jnp.asarray(signal, jnp.float32), None, a=-1.0, b=1.2, sigmas=sigmas, bandwidths=hs,
                       n_trials=trials, weights='optimal', pooling=pooling, noise=jnp.asarray(noise))
  want = _np_grid(signal, noise.astype(np.float64), -1.0, 1.2, sigmas, hs, domain='data', wavelet=None, level=None,
                  quirks=False, pooling=pooling, weights='optimal')
  plain = _np_grid(signal, noise.astype(np.float64), -1.0, 1.2, sigmas, hs, domain='data', wavelet=None,
                   level=None, quirks=False, pooling=pooling)
  assert np.max(np.abs(want[2] - plain[2]) / plain[2]) > 1e-2      # the covariance changes the double detector
  for k, det in enumerate(DETS):
    np.testing.assert_allclose(got.amse[det], want[k], rtol=2e-3, atol=1e-6)


def test_grid_search_same_draws_and_results_for_any_batching():
  """noise=None draws chunk c from fold_in(key, c) however the trials are grouped internally, and h_batch
  (bandwidths vectorised) only changes the schedule."""
  n, trials, chunk = 32, 6, 2
  signal = jnp.asarray(0.8 * np.sin(np.linspace(0, 2 * np.pi, n)), jnp.float32)
  key = jax.random.PRNGKey(4)
  noise = jnp.concatenate([jax.random.normal(jax.random.fold_in(key, c), (chunk, n)) for c in range(trials // chunk)])
  kw = dict(a=-1.0, b=1.0, sigmas=[0.7, 1.4], bandwidths=[1.0, 2.0, 3.0], n_trials=trials, chunk_size=chunk)
  for pooling in ('estimates', 'rates'):
    by_key = th.grid_search(signal, key, pooling=pooling, **kw)
    by_noise = th.grid_search(signal, None, pooling=pooling, noise=noise, h_batch=2, **kw)
    for det in DETS:
      np.testing.assert_allclose(by_key.amse[det], by_noise.amse[det], rtol=1e-5)


@pytest.mark.parametrize('shape,h,path', [((8, 16), 1.0, 'band'), ((8, 64), 12.0, 'fft')])
def test_grid_search_2d_equals_slow_numpy(shape, h, path):
  trials = 2
  yy, xx = np.meshgrid(np.linspace(0, 2 * np.pi, shape[0]), np.linspace(0, 2 * np.pi, shape[1]), indexing='ij')
  signal = np.sin(xx) * np.cos(yy)
  noise = np.random.default_rng(6).standard_normal((trials,) + shape)
  sigmas, hs = np.array([0.8, 1.5]), np.array([h])
  assert _smoothing_path(signal, hs, False) == path
  got = th.grid_search(jnp.asarray(signal, jnp.float32), jax.random.PRNGKey(0), a=-1.5, b=1.5, sigmas=sigmas,
                       bandwidths=hs, n_trials=trials, domain='wavelet', wavelet='haar', level=1,
                       noise=jnp.asarray(noise, jnp.float32))
  Wr, Wc = wv.dwt_matrix(shape[0], 'haar', 1), wv.dwt_matrix(shape[1], 'haar', 1)
  d = Wr @ signal @ Wc.T
  want = np.zeros((3, 2))
  for i, sig in enumerate(sigmas):
    acc = np.zeros((4,) + shape)
    for e in noise:
      rates = []
      for ind in ((d + sig * e < -1.5), (d + sig * e > 1.5)):
        r, sq_r = _np_rates(ind.astype(float), h, 'renormalize')
        rc, sq_c = _np_rates(r.T, h, 'renormalize')
        rates.append(np.clip(rc.T, 1e-6, 1 - 1e-6))
      sq = np.outer(_np_rates(np.zeros(shape[0]), h, 'renormalize')[1],
                    _np_rates(np.zeros(shape[1]), h, 'renormalize')[1])
      z_a, z_b = scipy.special.ndtri(rates[0]), scipy.special.ndtri(rates[1])
      var = lambda p, z: sig ** 2 * p * (1 - p) * sq / scipy.stats.norm.pdf(z) ** 2
      acc += [-1.5 - sig * z_a, 1.5 + sig * z_b, var(rates[0], z_a), var(rates[1], z_b)]
    s_sub, s_sup, v_a, v_b = acc / trials
    s_dbl = (s_sub * v_b + s_sup * v_a) / (v_a + v_b)
    for k, est in enumerate([s_sub, s_sup, s_dbl]):
      want[k, i] = np.mean((Wr.T @ est @ Wc - signal) ** 2)
  for k, det in enumerate(DETS):
    np.testing.assert_allclose(got.amse[det][:, 0], want[k], rtol=2e-3)


# ------------------------------------------------------------------------------------------------------------
# Recovery
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('domain,level,bandwidth', [('data', None, 4.0), ('wavelet', 1, 3.0)])
def test_amse_falls_with_more_trials(domain, level, bandwidth):
  n = 64
  signal = jnp.asarray(np.sin(np.linspace(np.pi, 2.5 * np.pi, n)), jnp.float32)
  errors = []
  for trials in (2, 32):
    est = th.recover(signal, jax.random.PRNGKey(3), a=-2.0, b=2.0, sigma=1.2, bandwidth=bandwidth,
                     n_trials=trials, domain=domain, wavelet='db4', level=level)
    chex.assert_shape(est, (n,))
    chex.assert_tree_all_finite(est)
    errors.append(float(th.amse(signal, est)))
  assert errors[1] < 0.6 * errors[0], errors


def test_recover_agrees_with_grid_search():
  n, trials = 64, 4
  signal = jnp.asarray(0.9 * np.sin(np.linspace(0, 3 * np.pi, n)), jnp.float32)
  noise = jax.random.normal(jax.random.PRNGKey(1), (trials, n))
  grid = th.grid_search(signal, None, a=-1.0, b=1.2, sigmas=[1.1], bandwidths=[3.0], n_trials=trials, noise=noise)
  for det in DETS:
    est = th.recover(signal, None, a=-1.0, b=1.2, sigma=1.1, bandwidth=3.0, n_trials=trials, detector=det,
                     noise=noise)
    np.testing.assert_allclose(float(th.amse(signal, est)), grid.amse[det][0, 0], rtol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Estimator models as values, the settings record, the prepared grid program
# ------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _ScaledByTwo(th.SigmaScaled):
  """A third model, written as a subclass only: SigmaScaled with the noise scale doubled in the estimates."""

  def sub_sup(self, z_a, z_b, *, a, b, sigma):
    return super().sub_sup(z_a, z_b, a=a, b=b, sigma=2.0 * sigma)


def test_models_are_values_and_reference_quirks_is_a_shorthand():
  n, trials = 64, 4
  signal = jnp.asarray(0.9 * np.sin(np.linspace(0, 3 * np.pi, n)), jnp.float32)
  noise = jax.random.normal(jax.random.PRNGKey(2), (trials, n))
  kw = dict(a=-1.0, b=1.2, sigmas=[0.7, 1.4], bandwidths=[2.0, 5.0], n_trials=trials, noise=noise)
  # The default model is SigmaScaled(p_clip): passing it explicitly (with another clip) equals passing p_clip.
  by_clip = th.grid_search(signal, None, p_clip=1e-3, **kw)
  by_model = th.grid_search(signal, None, model=th.SigmaScaled(p_clip=1e-3), **kw)
  default = th.grid_search(signal, None, **kw)
  # The sigma-free model on srjax's Gaussian kernel (a combination the flag alone cannot express) differs from
  # the default, and a subclass changes exactly its one formula: doubling sigma in the estimates = sigma 2x.
  free = th.grid_search(signal, None, model=th.SigmaFree(), **kw)
  doubled = th.recover(signal, None, sigma=0.7, bandwidth=2.0, detector='sub', n_trials=trials, noise=noise,
                       a=-1.0, b=1.2, model=_ScaledByTwo())
  plain = th.recover(signal, None, sigma=0.7, bandwidth=2.0, detector='sub', n_trials=trials, noise=noise,
                     a=-1.0, b=1.2)
  for det in DETS:
    np.testing.assert_array_equal(by_clip.amse[det], by_model.amse[det])
    assert np.max(np.abs(by_clip.amse[det] - default.amse[det])) > 0
    assert np.max(np.abs(free.amse[det] - default.amse[det])) > 1e-3
  # s_sub = a - sigma z: with 2 sigma, (a - s_sub) doubles.
  np.testing.assert_allclose(np.asarray(-1.0 - doubled), 2 * np.asarray(-1.0 - plain), rtol=1e-5, atol=1e-5)
  s = th.Settings(a=-1.0, b=1.0, n_trials=2, reference_quirks=True)
  assert s.model == th.SigmaFree() and s.boundary == 'zeros' and s.reference_step(1) == 0.01
  assert th.Settings(a=-1.0, b=1.0, n_trials=2).model == th.SigmaScaled(1e-6)
  assert th.SigmaFree().for_ndim(2) == th.SigmaFree(6.0)


def test_grid_program_lowers_and_equals_grid_search():
  n, trials = 32, 2
  signal = jnp.asarray(0.8 * np.sin(np.linspace(0, 2 * np.pi, n)), jnp.float32)
  kw = dict(a=-1.0, b=1.0, sigmas=[0.7, 1.4], bandwidths=[1.0, 3.0], n_trials=trials)
  program = th.grid_program(signal, jax.random.PRNGKey(1), **kw)
  compiled = program.lower().compile()
  got = np.asarray(program(compiled))
  chex.assert_shape(got, (3, 2, 2))
  res = th.grid_search(signal, jax.random.PRNGKey(1), **kw)
  for k, det in enumerate(DETS):
    np.testing.assert_allclose(got[k], res.amse[det], rtol=1e-6)


def test_settings_errors():
  with pytest.raises(TypeError, match='unexpected keyword'):
    th.Settings(a=-1.0, b=1.0, n_trials=2, bandwith=3.0)
  with pytest.raises(ValueError, match='model: got SigmaScaled'):
    th.Settings(a=-1.0, b=1.0, n_trials=2, reference_quirks=True, model=th.SigmaScaled())
  with pytest.raises(TypeError, match='model: got'):
    th.Settings(a=-1.0, b=1.0, n_trials=2, model='sigma-free')
  with pytest.raises(ValueError, match='p_clip: got 0.0; accepted: a number in \\(0.0, 0.5\\)'):
    th.SigmaScaled(p_clip=0.0)
  with pytest.raises(ValueError, match='n_trials: got 0; accepted: an integer'):
    th.Settings(a=-1.0, b=1.0, n_trials=0)


# ------------------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------------------

def test_errors():
  s = jnp.zeros(64)
  key = jax.random.PRNGKey(0)
  common = dict(a=-1.0, b=1.0, sigma=1.0, bandwidth=2.0, n_trials=2)
  with pytest.raises(ValueError, match='a: got 1.0; accepted: a lower threshold a < the upper threshold b'):
    th.indicators(s, 1.0, 1.0)
  with pytest.raises(ValueError, match='a: got 2.0; accepted: a lower threshold a < the upper'):
    th.recover(s, key, **{**common, 'a': 2.0})
  with pytest.raises(ValueError, match='sigma: got 0.0; accepted: finite values > 0'):
    th.recover(s, key, **{**common, 'sigma': 0.0})
  with pytest.raises(ValueError, match='bandwidth: got -1.0; accepted: finite values > 0'):
    th.recover(s, key, **{**common, 'bandwidth': -1.0})
  with pytest.raises(ValueError, match='sigmas: got -2.0; accepted: finite'):
    th.grid_search(s, key, a=-1.0, b=1.0, sigmas=[1.0, -2.0], bandwidths=[1.0], n_trials=2)
  with pytest.raises(ValueError, match='n: got 48; accepted: a multiple of 2\\*\\*level'):
    th.recover(jnp.zeros(48), key, **common, domain='wavelet', wavelet='haar', level=5)
  with pytest.raises(ValueError, match='pywt.wavelist'):
    th.recover(s, key, **common, domain='wavelet', wavelet='nope')
  with pytest.raises(ValueError, match="detector: got 'both'; accepted: one of"):
    th.recover(s, key, **common, detector='both')
  with pytest.raises(ValueError, match="domain: got 'fourier'; accepted: one of"):
    th.recover(s, key, **common, domain='fourier')
  with pytest.raises(ValueError, match="boundary: got 'reflect'; accepted: one of"):
    th.recover(s, key, **common, boundary='reflect')
  with pytest.raises(ValueError, match="pooling: got 'median'; accepted: one of"):
    th.recover(s, key, **common, pooling='median')
  with pytest.raises(ValueError, match='chunk_size: got 3; accepted: a positive divisor of n_trials=2'):
    th.recover(s, key, **common, chunk_size=3)
  with pytest.raises(ValueError, match='noise: got an array of shape \\(3, 64\\); accepted: .*shape'):
    th.recover(s, key, **common, noise=jnp.zeros((3, 64)))
  with pytest.raises(ValueError, match='axes: got 3; accepted: one of 1, 2'):
    th.kernel_rates(s, 1.0, axes=3)
  with pytest.raises(ValueError, match='key: got None; accepted: a PRNG key'):
    th.recover(s, None, **common)
  with pytest.raises(ValueError, match='signal: got an array of shape \\(2, 2, 2\\); accepted: a 1D'):
    th.recover(jnp.zeros((2, 2, 2)), key, **common)
