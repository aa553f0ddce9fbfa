"""The settings `recover` and `grid_search` share: one record, each default and each check written once.

`Settings(a=..., b=..., n_trials=..., **options)` validates everything that does not depend on the signal when it
is built; `recover` and `grid_search` take the same keyword arguments and build it. `reference_quirks=True` is a
shorthand for the authors' MATLAB pipeline: the `SigmaFree` estimator model, the reference kernel (taps
-h:0.01:h in 1D, -h:1:h in 2D, see `srjax.threshold.kernels`) and zero padding.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from srjax import checks
from srjax.threshold import models

__all__ = ['Settings', 'DETECTORS', 'DOMAINS', 'BOUNDARIES', 'WEIGHTS', 'POOLINGS']

DETECTORS = ('sub', 'sup', 'double')
DOMAINS = ('data', 'wavelet')
BOUNDARIES = ('renormalize', 'zeros')
WEIGHTS = ('variance', 'optimal')
POOLINGS = ('estimates', 'rates')
# Tap spacing of the reference kernel, in the reference's bandwidth unit (its 1D and 2D MATLAB drivers).
REFERENCE_STEP = {1: 0.01, 2: 1.0}


def check_thresholds(a: Any, b: Any) -> tuple[float, float]:
  """(a, b) as floats: concrete, finite, a < b."""
  values = []
  for name, v in (('a', a), ('b', b)):
    try:
      values.append(float(v))
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
      checks.fail(name, v, 'a concrete real scalar', error=TypeError)
    if not np.isfinite(values[-1]):
      checks.fail(name, v, 'a finite number')
  if values[0] >= values[1]:
    checks.fail('a', values[0], f'a lower threshold a < the upper threshold b = {values[1]}')
  return values[0], values[1]


def check_positive(name: str, value: Any) -> np.ndarray:
  """`value` (a scalar or a non-empty sequence) as a float64 array of finite values > 0."""
  arr = np.asarray(value, dtype=np.float64)
  if arr.size == 0:
    checks.fail(name, value, 'a non-empty sequence of finite values > 0')
  bad = ~np.isfinite(arr) | (arr <= 0)
  if bad.any():
    checks.fail(name, float(arr[bad].flat[0]) if arr.ndim else value, 'finite values > 0')
  return arr


def resolve_model(reference_quirks: bool, model: models.EstimatorModel | None, p_clip: float,
                  v_clip: float | None) -> models.EstimatorModel:
  """The estimator model: `model` itself, or the one `reference_quirks` names (with p_clip / v_clip)."""
  if model is None:
    return models.SigmaFree(v_clip) if reference_quirks else models.SigmaScaled(p_clip)
  if not isinstance(model, models.EstimatorModel):
    checks.fail('model', model, 'an srjax.threshold.EstimatorModel (SigmaScaled(), SigmaFree(), ...)',
                error=TypeError)
  if reference_quirks:
    checks.fail('model', model, 'None when reference_quirks=True (which selects SigmaFree)')
  return model


def resolve_boundary(boundary: str | None, reference_quirks: bool) -> str:
  """None means 'zeros' (the reference's zero padding) with reference_quirks, 'renormalize' otherwise."""
  if boundary is None:
    return 'zeros' if reference_quirks else 'renormalize'
  return checks.one_of('boundary', boundary, BOUNDARIES)


def kernel_step(reference_quirks: bool, ndim: int) -> float | None:
  """The reference kernel's tap step with reference_quirks, else None (srjax's Gaussian kernel)."""
  return REFERENCE_STEP[ndim] if reference_quirks else None


def check_truncate(truncate: float | None) -> float | None:
  return None if truncate is None else float(checks.in_range('truncate', truncate, 0.0, None, low_open=True))


def check_count(name: str, value: Any) -> int:
  """A positive integer (NumPy integers accepted)."""
  if isinstance(value, np.integer):
    value = int(value)
  return checks.integer(name, value, 1)


@dataclasses.dataclass(frozen=True, eq=False)
class Settings:
  """What `recover` and `grid_search` share (checked on construction; the signal-dependent checks come later).

  Attributes:
    a: lower threshold, in the detection domain (wavelet coefficients for domain='wavelet').
    b: upper threshold (> a).
    n_trials: number of noisy repetitions (a positive integer).
    domain: 'data' (detect on the samples) or 'wavelet' (on the coefficients d = W s, Eq. 14).
    wavelet: a PyWavelets name (with `level`, see `srjax.wavelet.dwt_matrix`) or explicit matrices, one [n, n]
      per signal axis (e.g. the reference's alignment from `dwt_matrix(..., roll=..., reverse_filter=True)`).
    level: decomposition depth for a named wavelet (None: `srjax.wavelet.max_level`).
    reference_quirks: shorthand for the authors' MATLAB pipeline (module docstring).
    model: an `EstimatorModel` to use instead (None: `SigmaScaled(p_clip)`, or `SigmaFree(v_clip)` with
      reference_quirks); after construction, always the resolved model.
    boundary: 'renormalize' or 'zeros'; None: 'zeros' with reference_quirks, else 'renormalize'.
    weights: 'variance' (Eqs. 6/10/17) or 'optimal' (Appendix A, Eq. 20: with the covariance).
    pooling: 'estimates' (estimate per trial, average the estimates and variances: the paper and the
      reference) or 'rates' (average the indicators over the trials and estimate once, with n_eff * n_trials
      observations: cheaper by n_trials and less biased).
    truncate: Gaussian kernel cut in standard deviations (None: uncut); unused by the reference kernel.
    p_clip: rate clipping of the `SigmaScaled` model built when model is None.
    v_clip: score clipping of the `SigmaFree` model built with reference_quirks (None: 4.5 in 1D, 6 in 2D).
    chunk_size: trials per scan step, a divisor of n_trials (None: ~2M elements per working array).
  """
  a: float
  b: float
  n_trials: int
  domain: str = 'data'
  wavelet: Any = 'sym8'
  level: int | None = None
  reference_quirks: bool = False
  model: models.EstimatorModel | None = None
  boundary: str | None = None
  weights: str = 'variance'
  pooling: str = 'estimates'
  truncate: float | None = 4.0
  p_clip: float = 1e-6
  v_clip: float | None = None
  chunk_size: int | None = None

  def __post_init__(self):
    a, b = check_thresholds(self.a, self.b)
    n_trials = check_count('n_trials', self.n_trials)
    chunk = self.chunk_size
    if chunk is not None:
      chunk = check_count('chunk_size', chunk)
      if n_trials % chunk:
        checks.fail('chunk_size', chunk, f'a positive divisor of n_trials={n_trials}')
    quirks = bool(self.reference_quirks)
    resolved = dict(a=a, b=b, n_trials=n_trials, chunk_size=chunk, reference_quirks=quirks,
                    domain=checks.one_of('domain', self.domain, DOMAINS),
                    weights=checks.one_of('weights', self.weights, WEIGHTS),
                    pooling=checks.one_of('pooling', self.pooling, POOLINGS),
                    boundary=resolve_boundary(self.boundary, quirks), truncate=check_truncate(self.truncate),
                    model=resolve_model(quirks, self.model, self.p_clip, self.v_clip))
    for name, value in resolved.items():
      object.__setattr__(self, name, value)

  def reference_step(self, ndim: int) -> float | None:
    """The reference kernel's tap step for a signal of `ndim` axes, or None for srjax's Gaussian kernel."""
    return kernel_step(self.reference_quirks, ndim)
