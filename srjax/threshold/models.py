"""Estimator models: how exceedance rates become sub and sup estimates and their variances (Eqs. 4-5, 9, 21).

A model is a small frozen value that carries its own formulas and clipping, in the style of diffrax's swappable
solvers: the grid search, `recover` and `estimate` call its methods and never ask which model it is. Two ship:

* `SigmaScaled` (srjax's default): the paper's observation model x = s + sigma eps, so P(x < a) = Phi((a - s)/sigma)
  and s_sub = a - sigma Phi^{-1}(p_a), s_sup = b + sigma Phi^{-1}(p_b) (Eq. 9 with the noise scale), with the
  delta-method variances of Eq. 21 and the multinomial covariance of Appendix A.
* `SigmaFree`: the estimator of the authors' MATLAB code (published with the paper, Sec. III), which leaves sigma
  out: s_sub = a - clip(Phi^{-1}(p_a)), s_sup = b - clip(Phi^{-1}(1 - p_b)), clipped at +-v (v = 4.5 in its 1D
  code, 6 in its 2D code), variances p (1 - p) / (N phi(z)^2) with N the number of samples of the whole signal,
  no covariance, and exact 0/1 rates left unclipped (a detector that saw nothing gets variance 0, hence all the
  double detector's weight). `reference_quirks=True` selects it.

A third model (say, one with sigma estimated from the data) is a new subclass of `EstimatorModel`.
"""
from __future__ import annotations

import abc
import dataclasses
import math
from typing import NamedTuple

import jax.numpy as jnp
import scipy.special
from jax.scipy import special as jsp

from srjax import checks

__all__ = ['Estimates', 'EstimatorModel', 'SigmaScaled', 'SigmaFree']

# The reference's clipping constant v, by signal dimension (the authors' 1D and 2D MATLAB drivers).
REFERENCE_V = {1: 4.5, 2: 6.0}


class Estimates(NamedTuple):
  """Sub and sup estimates with their delta-method variances and covariance, all of one broadcast shape.

  Attributes:
    s_sub: sub-threshold estimate (from the lower threshold a).
    s_sup: sup-threshold estimate (from the upper threshold b).
    v_a: variance of s_sub.
    v_b: variance of s_sup.
    cov: covariance of (s_sub, s_sup) (0 for `SigmaFree`).
  """
  s_sub: jnp.ndarray
  s_sup: jnp.ndarray
  v_a: jnp.ndarray
  v_b: jnp.ndarray
  cov: jnp.ndarray


# M. Giles, "Approximating the erfinv function" (GPU Computing Gems Jade, 2011), single-precision version.
_GILES_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                  -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_GILES_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
               0.00943887047, 1.00167406, 2.83297682)
FAST_NDTRI_P_MIN = 1e-7   # the fit's range; at p = 1e-9 its error grows to 6e-5 relative


def ndtri_fast(p: jnp.ndarray) -> jnp.ndarray:
  """Phi^{-1}(p) for float32 p in [1e-7, 1 - 1e-7] (garbage outside: callers clip first).

  Phi^{-1}(p) = sqrt(2) erfinv(2p - 1) with Giles' single-precision erfinv, its w = -log(1 - x^2) computed as
  -log(4 p (1 - p)) so that both tails keep full precision. Against float64 SciPy on that range: at most 4.3
  ulp (jax.scipy.special.ndtri: 4.2 ulp), with one log, one sqrt and no division.
  """
  w = -jnp.log(4.0 * p * (1.0 - p))
  central, tail = w - 2.5, jnp.sqrt(w) - 3.0
  poly_c = jnp.full_like(p, _GILES_CENTRAL[0])
  poly_t = jnp.full_like(p, _GILES_TAIL[0])
  for c_c, c_t in zip(_GILES_CENTRAL[1:], _GILES_TAIL[1:]):
    poly_c = poly_c * central + c_c
    poly_t = poly_t * tail + c_t
  return math.sqrt(2.0) * (2.0 * p - 1.0) * jnp.where(w < 5.0, poly_c, poly_t)


class EstimatorModel(abc.ABC):
  """How a model turns the rates (p_a, p_b) of the two detectors into estimates, variances and a covariance.

  Subclasses are frozen dataclasses (hashable: they are static arguments of the compiled grid search). The
  pipeline is clip_rates -> score (z, one per detector) -> sub_sup (affine in z, so trial-averaged scores give
  trial-averaged estimates) and variance / covariance from the clipped rates and the scores.
  """

  @abc.abstractmethod
  def clip_rates(self, p: jnp.ndarray) -> jnp.ndarray:
    """The rates as the formulas use them."""

  @abc.abstractmethod
  def score(self, p: jnp.ndarray, detector) -> jnp.ndarray:
    """The inverse-normal score z of the clipped rate of detector 0 (a) or 1 (b; a Python int or traced)."""

  @abc.abstractmethod
  def sub_sup(self, z_a, z_b, *, a: float, b: float, sigma) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(s_sub, s_sup) from the scores (affine in them)."""

  @abc.abstractmethod
  def variance(self, p, z, *, sigma, inv_n_eff, n_total: int) -> jnp.ndarray:
    """Delta-method variance of an estimate from its clipped rate and score (either detector)."""

  @abc.abstractmethod
  def covariance(self, p_a, p_b, z_a, z_b, *, sigma, inv_n_eff) -> jnp.ndarray:
    """Delta-method covariance of (s_sub, s_sup)."""

  @property
  @abc.abstractmethod
  def exact_windows(self) -> bool:
    """Whether kernel windows with no exceedance (or only exceedances) need exactly 0 (or 1) as their rate.

    Float64 FFT smoothing leaves rounding (~1e-16) there, which an unclipped formula turns into a variance."""

  def for_ndim(self, ndim: int) -> 'EstimatorModel':
    """The model with its dimension-dependent defaults filled in for a signal of `ndim` axes (1 or 2)."""
    del ndim
    return self

  def estimates(self, p_a, p_b, *, a: float, b: float, sigma, inv_n_eff, n_total: int) -> Estimates:
    """`Estimates` from raw rates: clip, score, then `from_scores`."""
    p_a, p_b = self.clip_rates(p_a), self.clip_rates(p_b)
    return self.from_scores(p_a, p_b, self.score(p_a, 0), self.score(p_b, 1), a=a, b=b, sigma=sigma,
                            inv_n_eff=inv_n_eff, n_total=n_total)

  def from_scores(self, p_a, p_b, z_a, z_b, *, a: float, b: float, sigma, inv_n_eff, n_total: int) -> Estimates:
    """`Estimates` from clipped rates and their scores."""
    s_sub, s_sup = self.sub_sup(z_a, z_b, a=a, b=b, sigma=sigma)
    v_a = self.variance(p_a, z_a, sigma=sigma, inv_n_eff=inv_n_eff, n_total=n_total)
    v_b = self.variance(p_b, z_b, sigma=sigma, inv_n_eff=inv_n_eff, n_total=n_total)
    return Estimates(s_sub, s_sup, v_a, v_b,
                     self.covariance(p_a, p_b, z_a, z_b, sigma=sigma, inv_n_eff=inv_n_eff))


@dataclasses.dataclass(frozen=True)
class SigmaScaled(EstimatorModel):
  """The paper's model with the noise scale: s_sub = a - sigma Phi^{-1}(p_a), s_sup = b + sigma Phi^{-1}(p_b).

  v = sigma^2 p (1 - p) inv_n_eff / phi(Phi^{-1}(p))^2, with n_eff = 1 / sum_j w_ij^2 for a kernel estimate;
  Cov = sigma^2 p_a p_b inv_n_eff / (phi_a phi_b) (multinomial: Cov(I_a, I_b) = -p_a p_b). Rates are clipped to
  [p_clip, 1 - p_clip] first, so everything is finite.

  Attributes:
    p_clip: rate clipping, in (0, 0.5).

  References:
    Eqs. 4-5 and 9 (estimators), Eq. 21 (variance), Appendix A (covariance).
  """
  p_clip: float = 1e-6

  def __post_init__(self):
    object.__setattr__(self, 'p_clip', float(checks.in_range('p_clip', self.p_clip, 0.0, 0.5, low_open=True,
                                                             high_open=True)))

  def clip_rates(self, p):
    return jnp.clip(p, self.p_clip, 1.0 - self.p_clip)

  def score(self, p, detector):
    del detector   # the same Phi^{-1} for both: s_sup uses +sigma Phi^{-1}(p_b)
    return ndtri_fast(p) if self.p_clip >= FAST_NDTRI_P_MIN else jsp.ndtri(p)

  def sub_sup(self, z_a, z_b, *, a, b, sigma):
    return a - sigma * z_a, b + sigma * z_b

  def variance(self, p, z, *, sigma, inv_n_eff, n_total):
    del n_total
    # 1/phi(z)^2 = 2 pi exp(z^2). Written as exp(z^2), not exp(z^2/2)^2: the same value, but XLA:CPU turns the
    # latter into a slower fusion.
    return jnp.square(sigma) * inv_n_eff * p * (1.0 - p) * (2.0 * math.pi) * jnp.exp(jnp.square(z))

  def covariance(self, p_a, p_b, z_a, z_b, *, sigma, inv_n_eff):
    return (jnp.square(sigma) * inv_n_eff * p_a * p_b * (2.0 * math.pi)
            * jnp.exp(0.5 * (jnp.square(z_a) + jnp.square(z_b))))

  @property
  def exact_windows(self):
    return self.p_clip < 1e-10   # otherwise the clip sits far above float64 FFT rounding


@dataclasses.dataclass(frozen=True)
class SigmaFree(EstimatorModel):
  """The authors' MATLAB estimator (no sigma): s_sub = a - clip(Phi^{-1}(p_a)), s_sup = b - clip(Phi^{-1}(1 - p_b)).

  Scores are clipped at +-v_clip; variances p (1 - p) / (N phi(z)^2) with N = n_total, the number of samples of
  the whole signal; covariance 0. Rates are clipped to [0, 1] only, so a detector that saw nothing has variance 0
  (and all of the double detector's weight), as in the reference.

  Attributes:
    v_clip: the clipping constant v (> 0); None means the reference's 4.5 in 1D and 6 in 2D (`for_ndim`).

  References:
    Eqs. 4-5 and 9 without the noise scale, as the authors' MATLAB code computes them (published with the
    paper, Sec. III).
  """
  v_clip: float | None = None

  def __post_init__(self):
    if self.v_clip is not None:
      object.__setattr__(self, 'v_clip', float(checks.in_range('v_clip', self.v_clip, 0.0, None, low_open=True)))

  def for_ndim(self, ndim):
    return self if self.v_clip is not None else SigmaFree(REFERENCE_V[ndim])

  def clip_rates(self, p):
    return jnp.clip(p, 0.0, 1.0)

  def score(self, p, detector):
    v = REFERENCE_V[1] if self.v_clip is None else self.v_clip
    if isinstance(detector, int):
      q = 1.0 - p if detector == 1 else p
    else:
      q = jnp.where(detector == 1, 1.0 - p, p)
    # Rates below Phi(-v) score -v after the clip; half of it still scores below -v, so the fast inverse normal
    # (valid from 1e-7) serves whenever that bound is inside its range.
    q_min = 0.5 * float(scipy.special.ndtr(-v))
    z = ndtri_fast(jnp.clip(q, q_min, 1.0 - q_min)) if q_min >= FAST_NDTRI_P_MIN else jsp.ndtri(q)
    return jnp.clip(z, -v, v)

  def sub_sup(self, z_a, z_b, *, a, b, sigma):
    del sigma
    return a - z_a, b - z_b

  def variance(self, p, z, *, sigma, inv_n_eff, n_total):
    del sigma, inv_n_eff
    return p * (1.0 - p) / (n_total * (jnp.exp(-jnp.square(z)) / (2.0 * math.pi)))

  def covariance(self, p_a, p_b, z_a, z_b, *, sigma, inv_n_eff):
    del p_b, z_a, z_b, sigma, inv_n_eff
    return jnp.zeros_like(p_a)

  @property
  def exact_windows(self):
    return True
