"""Proportion of Fisher information about a signal level kept by one and by two thresholds (Sec. II-E).

With z = (eta - theta)/sigma (threshold minus signal, in noise units), the Fisher information about theta in the
indicator observations times sigma^2 is the proportion of the information of x itself that the thresholds keep
(Greenwood, Ward & Wefelmeyer 1999; Sec. II-E of the paper). Everything is computed in log space (log_ndtr), so
the values are finite for every finite z.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.special
from jax.scipy import special as jsp

__all__ = ['fisher_single', 'fisher_double', 'fisher_double_maximum']

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _log_phi(z):
  return -0.5 * z * z - _LOG_SQRT_2PI


def _fisher_single(z, xp, log_ndtr):
  return xp.exp(2.0 * _log_phi(z) - log_ndtr(z) - log_ndtr(-z))


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
  lphi_lo, lphi_hi = _log_phi(z_lo), _log_phi(z_hi)
  outer = xp.exp(2.0 * lphi_lo - log_ndtr(z_lo)) + xp.exp(2.0 * lphi_hi - log_ndtr(-z_hi))
  # Middle cell: (phi(z_hi) - phi(z_lo))^2 / (Phi(z_hi) - Phi(z_lo)), in log space around the larger phi.
  distinct = (z_hi - z_lo) > 1e-6
  z_hi_s = xp.where(distinct, z_hi, z_lo + 1.0)   # a safe stand-in where the cell is empty
  lphi_hi_s = _log_phi(z_hi_s)
  lmax = xp.maximum(lphi_lo, lphi_hi_s)
  diff = xp.exp(lphi_lo - lmax) - xp.exp(lphi_hi_s - lmax)
  log_num = 2.0 * (lmax + xp.log(xp.where(diff != 0, xp.abs(diff), 1.0)))
  middle = xp.exp(log_num - _log_interval(z_lo, z_hi_s, xp, log_ndtr))
  return outer + xp.where(distinct & (diff != 0), middle, 0.0)


_fisher_single_jit = jax.jit(lambda z: _fisher_single(z, jnp, jsp.log_ndtr))
_fisher_double_jit = jax.jit(lambda z_a, z_b: _fisher_double(z_a, z_b, jnp, jsp.log_ndtr))


def fisher_single(z: jnp.ndarray) -> jnp.ndarray:
  """Proportion of Fisher information kept by one threshold: phi(z)^2 / (Phi(z) (1 - Phi(z))).

  The maximum is 2/pi = 0.636620, at z = 0.

  Args:
    z: (threshold - signal) / sigma, an array of any shape.

  Returns:
    An array of z's shape (float32 unless x64 is on), finite for every finite z.

  References:
    Sec. II-E; Greenwood, Ward & Wefelmeyer (1999).
  """
  return _fisher_single_jit(jnp.asarray(z, dtype=jnp.result_type(float)))


def fisher_double(z_a: jnp.ndarray, z_b: jnp.ndarray) -> jnp.ndarray:
  """Proportion of Fisher information kept by two thresholds (the ternary observation {x<a}, between, {x>b}).

  phi(z_a)^2/Phi(z_a) + (phi(z_b) - phi(z_a))^2/(Phi(z_b) - Phi(z_a)) + phi(z_b)^2/(1 - Phi(z_b)). Symmetric in
  its two arguments (the formula is applied to the sorted pair); z_a = z_b reduces to `fisher_single`.

  Args:
    z_a: (a - theta) / sigma for the lower threshold a; broadcastable with z_b.
    z_b: (b - theta) / sigma for the upper threshold b.

  Returns:
    An array of the broadcast shape, finite for all finite inputs.

  References:
    Sec. II-E; Greenwood, Ward & Wefelmeyer (1999).
  """
  return _fisher_double_jit(jnp.asarray(z_a, dtype=jnp.result_type(float)),
                            jnp.asarray(z_b, dtype=jnp.result_type(float)))


def fisher_double_maximum(constrained: bool) -> tuple[float, float, float]:
  """Numerical maximum of `fisher_double` (float64, SciPy).

  Args:
    constrained: True fixes z_a = 0 (the signal sits on the lower threshold, Greenwood et al.'s sub-threshold
      setting) and maximises over z_b >= 0; False maximises over both.

  Returns:
    (value, z_a, z_b). Published values: 0.759569 at z_b ~ 0.98 (constrained); 0.809826 at z = -+0.612.

  References:
    Sec. II-E; Greenwood, Ward & Wefelmeyer (1999).
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
