"""Sub, sup and double-threshold estimators from rates, one observation, or a constant signal; the AMSE.

The formulas themselves live in the estimator models (`srjax.threshold.models`); this file combines them
(the double detector's weights, Eqs. 6/10/17 and Appendix A) and offers the single-observation estimators.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from srjax import checks
from srjax.threshold import kernels
from srjax.threshold import models
from srjax.threshold import settings as st

__all__ = ['sub_sup_estimates', 'double_weights', 'estimator_covariance', 'estimate', 'estimate_constant', 'amse']


def sub_sup_estimates(p_a: jnp.ndarray, p_b: jnp.ndarray, *, a: float, b: float, sigma, inv_n_eff=1.0,
                      reference_quirks: bool = False, v_clip: float = 4.5, n_total: int = 1,
                      p_clip: float = 1e-6, model: models.EstimatorModel | None = None) -> models.Estimates:
  """Sub and sup estimates with their delta-method variances and covariance, from exceedance rates.

  Args:
    p_a: rates of the lower detector, P(x < a).
    p_b: rates of the upper detector, P(x > b), p_a's shape.
    a: lower threshold.
    b: upper threshold.
    sigma: noise standard deviation (scalar or broadcastable; unused by `SigmaFree`).
    inv_n_eff: 1 / effective number of observations per rate (sum_j K_ij^2 for a kernel estimate);
      broadcastable.
    reference_quirks: use `SigmaFree(v_clip)` (the authors' MATLAB formulas) instead of `SigmaScaled(p_clip)`.
    v_clip: the SigmaFree score clip.
    n_total: the SigmaFree variances' N (number of samples of the whole signal).
    p_clip: the SigmaScaled rate clip.
    model: an estimator model to use instead (then reference_quirks must be False).

  Returns:
    `Estimates(s_sub, s_sup, v_a, v_b, cov)`, each of the broadcast shape.

  References:
    Eqs. 4-5, 9 and 21; Appendix A (covariance).
  """
  model = st.resolve_model(reference_quirks, model, p_clip, v_clip)
  return model.estimates(p_a, p_b, a=a, b=b, sigma=sigma, inv_n_eff=inv_n_eff, n_total=n_total)


def double_weights(var_a: jnp.ndarray, var_b: jnp.ndarray, cov: jnp.ndarray | float = 0.0
                   ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Weights (w_a, w_b) of the double-threshold estimator w_a s_sub + w_b s_sup.

  w_a = (v_b - c)/(v_a + v_b - 2c), w_b = (v_a - c)/(v_a + v_b - 2c) minimise the variance of the combination;
  cov = 0 gives the variance weights. Where the denominator is 0 (both variances 0, or perfectly correlated
  equal estimators) both weights are 1/2.

  Args:
    var_a: variance of s_sub.
    var_b: variance of s_sup (broadcastable with var_a).
    cov: their covariance (broadcastable).

  Returns:
    (w_a, w_b) of the broadcast shape, summing to 1, finite.

  References:
    Eqs. 6, 10 and 17 (variance weights); Appendix A, Eq. 20 (optimal weights).
  """
  var_a = jnp.asarray(var_a)
  var_b = jnp.asarray(var_b)
  denom = var_a + var_b - 2.0 * cov
  ok = denom > 0
  safe = jnp.where(ok, denom, 1.0)
  w_a = jnp.where(ok, (var_b - cov) / safe, 0.5)
  return w_a, 1.0 - w_a


def estimator_covariance(p_a, p_b, sigma, n) -> jnp.ndarray:
  """Delta-method covariance of (s_sub, s_sup) from n i.i.d. observations.

  Cov = sigma^2 p_a p_b / (n phi(Phi^{-1}(p_a)) phi(Phi^{-1}(p_b))), from Cov(p_hat_a, p_hat_b) = -p_a p_b / n
  (the two indicators of one observation are never both 1). Rates are clipped to [1e-6, 1 - 1e-6].

  Args:
    p_a: true (or estimated) rate P(x < a), any shape.
    p_b: rate P(x > b), broadcastable with p_a.
    sigma: noise standard deviation (> 0).
    n: number of observations behind each rate.

  Returns:
    float32 covariance of the broadcast shape.

  References:
    Appendix A.
  """
  est = models.SigmaScaled().estimates(jnp.asarray(p_a, jnp.float32), jnp.asarray(p_b, jnp.float32), a=0.0,
                                       b=1.0, sigma=sigma, inv_n_eff=1.0 / n, n_total=1)
  return est.cov


def combine(detector: str, est: models.Estimates, weights: str):
  """(estimate, variance) of one detector from `Estimates`."""
  s_sub, s_sup, v_a, v_b, cov = est
  if detector == 'sub':
    return s_sub, v_a
  if detector == 'sup':
    return s_sup, v_b
  c = cov if weights == 'optimal' else 0.0
  w_a, w_b = double_weights(v_a, v_b, c)
  return w_a * s_sub + w_b * s_sup, w_a * w_a * v_a + w_b * w_b * v_b + 2.0 * w_a * w_b * c


def estimate(x: jnp.ndarray, *, a: float, b: float, sigma: float, bandwidth: float, detector: str = 'double',
             reference_quirks: bool = False, boundary: str | None = None, axes: int = 1,
             weights: str = 'variance', truncate: float | None = 4.0, p_clip: float = 1e-6,
             v_clip: float | None = None, model: models.EstimatorModel | None = None
             ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Signal estimate and its variance at every sample, from ONE noisy observation (dense kernel).

  Args:
    x: noisy observations s + sigma eps, [..., n] (axes=1) or [..., n, m] (axes=2).
    a: lower threshold (< b).
    b: upper threshold.
    sigma: the noise standard deviation (> 0).
    bandwidth: kernel standard deviation in samples (> 0); with reference_quirks the reference's kernel_width
      (`srjax.threshold.kernels`).
    detector: 'sub', 'sup' or 'double'.
    reference_quirks: the authors' MATLAB pipeline (SigmaFree formulas, reference kernel, zero padding).
    boundary: 'renormalize' or 'zeros'; None: 'zeros' with reference_quirks, else 'renormalize'.
    axes: 1 or 2 trailing signal axes.
    weights: 'variance' or 'optimal' (with the local multinomial covariance).
    truncate: Gaussian kernel cut in standard deviations.
    p_clip: rate clipping of the default SigmaScaled model.
    v_clip: score clipping of SigmaFree (None: 4.5 in 1D, 6 in 2D).
    model: an `EstimatorModel` to use instead of the one reference_quirks selects.

  Returns:
    (estimate, variance), each with x's shape, float32: the delta-method variance with the kernel's effective
    sample size (SigmaFree: the reference's p(1-p)/(N phi^2)).

  Raises:
    ValueError: a bad threshold, sigma, bandwidth, option name or rank of x.

  References:
    Eqs. 9-10 (Sec. II-C), Appendix A, Eq. 20 (optimal weights).
  """
  a, b = st.check_thresholds(a, b)
  st.check_positive('sigma', sigma)
  st.check_positive('bandwidth', bandwidth)
  checks.one_of('detector', detector, st.DETECTORS)
  checks.one_of('weights', weights, st.WEIGHTS)
  checks.one_of('axes', axes, (1, 2))
  boundary = st.resolve_boundary(boundary, reference_quirks)
  model = st.resolve_model(reference_quirks, model, p_clip, v_clip).for_ndim(axes)
  x = jnp.asarray(x, jnp.float32)
  if x.ndim < axes:
    checks.fail('x', x, f'an array with at least {axes} axes for axes={axes}')
  out = _estimate_jit(x, jnp.float32(sigma), jnp.float32(bandwidth), a=a, b=b, model=model, boundary=boundary,
                      axes=axes, weights=weights, truncate=st.check_truncate(truncate),
                      step=st.kernel_step(reference_quirks, axes))
  return out[st.DETECTORS.index(detector)]


@functools.partial(jax.jit, static_argnames=('a', 'b', 'model', 'boundary', 'axes', 'weights', 'truncate', 'step'))
def _estimate_jit(x, sigma, bandwidth, *, a, b, model, boundary, axes, weights, truncate, step):
  """(estimate, variance) for each of DETECTORS (one compile serves all three)."""
  shape = x.shape[x.ndim - axes:]
  mats = [kernels.dense_kernel(n, bandwidth, boundary, truncate, step) for n in shape]
  i_a, i_b = (x < a).astype(jnp.float32), (x > b).astype(jnp.float32)
  p_a, p_b = kernels.apply_kernels(i_a, mats), kernels.apply_kernels(i_b, mats)
  est = model.estimates(p_a, p_b, a=a, b=b, sigma=sigma, inv_n_eff=kernels.sum_sq_weights(mats),
                        n_total=int(np.prod(shape)))
  return tuple(combine(d, est, weights) for d in st.DETECTORS)


def estimate_constant(x: jnp.ndarray, *, a: float, b: float, sigma: float, detector: str = 'double',
                      weights: str = 'variance', p_clip: float | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Parametric estimate of a CONSTANT signal from all samples of x (the SigmaScaled model).

  p_hat_a = mean(x < a), p_hat_b = mean(x > b) over every element of x; s_sub = a - sigma Phi^{-1}(p_hat_a),
  s_sup = b + sigma Phi^{-1}(p_hat_b), variances sigma^2 p(1-p)/(N phi^2), double as in `double_weights`.

  Args:
    x: noisy observations theta + sigma eps, any non-empty shape (N = x.size samples).
    a: lower threshold (< b).
    b: upper threshold.
    sigma: the noise standard deviation (> 0).
    detector: 'sub', 'sup' or 'double'.
    weights: 'variance' or 'optimal' (Appendix A).
    p_clip: rate clipping; default 1/(2N) (a rate of 0 or 1 becomes half an observation).

  Returns:
    (estimate, variance): float32 scalars.

  References:
    Sec. II-A/B, Eqs. 4-7; Appendix A.
  """
  a, b = st.check_thresholds(a, b)
  st.check_positive('sigma', sigma)
  checks.one_of('detector', detector, st.DETECTORS)
  checks.one_of('weights', weights, st.WEIGHTS)
  x = jnp.asarray(x, jnp.float32)
  n = x.size
  if n == 0:
    checks.fail('x', x, 'a non-empty array')
  p_a = jnp.mean(x < a)
  p_b = jnp.mean(x > b)
  model = models.SigmaScaled(0.5 / n if p_clip is None else p_clip)
  est = model.estimates(p_a, p_b, a=a, b=b, sigma=float(sigma), inv_n_eff=1.0 / n, n_total=n)
  return combine(detector, est, weights)


def amse(signal: jnp.ndarray, estimates_mean: jnp.ndarray) -> jnp.ndarray:
  """Average mean squared error: mean over the signal's samples of (s - trial-averaged estimate)^2.

  Args:
    signal: the true signal [*shape].
    estimates_mean: trial-averaged estimates [..., *shape] (leading axes, e.g. grid points, are kept).

  Returns:
    [...] float.

  References:
    Eq. 18.
  """
  signal = jnp.asarray(signal)
  estimates_mean = jnp.asarray(estimates_mean)
  if estimates_mean.shape[estimates_mean.ndim - signal.ndim:] != signal.shape:
    checks.fail('estimates_mean', estimates_mean, f'an array whose shape ends with the signal shape {signal.shape}')
  axes = tuple(range(estimates_mean.ndim - signal.ndim, estimates_mean.ndim))
  return jnp.mean(jnp.square(estimates_mean - signal), axis=axes)
