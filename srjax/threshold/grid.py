"""Trial-averaged recovery and the (sigma x bandwidth) AMSE grid search, each one compiled call.

`recover` and `grid_search` take the fields of `Settings` as keyword arguments. `grid_program` prepares the
grid search's compiled computation without running it: a benchmark can lower it (compile time, memory) and
call it. Cost: every bandwidth costs one inverse FFT per (sigma, trial) and detector plus the estimators, see
`srjax.threshold.smoothing`; `python -m eval.bench.threshold` prints the measured times.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from srjax import checks
from srjax import wavelet as wv
from srjax.threshold import settings as st
from srjax.threshold import smoothing as sm_lib
from srjax.threshold import trials
from srjax.threshold.models import Estimates

__all__ = ['GridResult', 'GridProgram', 'grid_program', 'grid_search', 'recover']

_SUMS_BUDGET_BYTES = 256 << 20   # running sums of one pass over the trials, all bandwidths of a group together


def _is_orthogonal(mats: Sequence[np.ndarray]) -> bool:
  """W W^T = I to float32 accuracy for every user-given matrix."""
  for m in mats:
    m = np.asarray(m, np.float64)
    if np.max(np.abs(m @ m.T - np.eye(m.shape[0]))) > 1e-4:
      return False
  return True


def _wavelet_matrices(s: st.Settings, shape: tuple[int, ...]):
  """(W per signal axis as float32, orthogonal) for the wavelet domain; (None, True) for the data domain."""
  if s.domain != 'wavelet':
    return None, True
  if isinstance(s.wavelet, str):
    return tuple(jnp.asarray(wv.dwt_matrix(n, s.wavelet, s.level), jnp.float32) for n in shape), True
  mats = (s.wavelet,) if len(shape) == 1 and not isinstance(s.wavelet, (tuple, list)) else tuple(s.wavelet)
  if len(mats) != len(shape) or any(np.shape(m) != (n, n) for m, n in zip(mats, shape)):
    checks.fail('wavelet', s.wavelet, f'a PyWavelets name or one [n, n] matrix per signal axis for shape {shape}')
  return tuple(jnp.asarray(m, jnp.float32) for m in mats), _is_orthogonal(mats)


def plan(s: st.Settings, signal, key, noise, *, n_sigma: int, h_max: float, n_h: int = 1, h_batch: int = 1):
  """Signal-dependent checks and the static `trials.Plan`; returns (plan, signal, W, noise)."""
  signal = jnp.asarray(signal, jnp.float32)
  if signal.ndim not in (1, 2):
    checks.fail('signal', signal, 'a 1D [n] or 2D [n, m] array')
  shape = tuple(int(d) for d in signal.shape)
  if noise is None and key is None:
    checks.fail('key', key, 'a PRNG key when noise is None (noise=None draws the trials from key)')
  if noise is not None:
    noise = jnp.asarray(noise, jnp.float32)
    if noise.shape != (s.n_trials,) + shape:
      checks.fail('noise', noise, f'standard-normal draws of shape (n_trials,) + signal.shape = '
                  f'{(s.n_trials,) + shape}')
  W, orthogonal = _wavelet_matrices(s, shape)
  numel = int(np.prod(shape))
  chunk = s.chunk_size
  if chunk is None:
    # Keep the per-chunk working set near 2M elements per array: [n_sigma, chunk, *shape].
    chunk = max(1, min(s.n_trials, (1 << 21) // max(1, n_sigma * numel)))
    while s.n_trials % chunk:
      chunk -= 1
  # Bandwidths per pass over the trials: as many as keep the running sums within the budget, in equal groups.
  per_h = (5 if s.weights == 'optimal' else 4) * n_sigma * numel * 4
  n_groups = -(-n_h // max(1, min(n_h, _SUMS_BUDGET_BYTES // per_h)))
  h_group = -(-n_h // n_groups)
  # Static smoothing path (`smoothing.band_limit`): shifted multiply-adds over the exact support, or FFT.
  step = s.reference_step(len(shape))
  half = sm_lib.support_bound(float(h_max), shape, step, s.truncate, exact=True)
  banded = half <= sm_lib.band_limit(len(shape), n_h if s.pooling == 'rates' else h_group)
  if not banded:
    half = sm_lib.support_bound(float(h_max), shape, step, s.truncate)
  p = trials.Plan(shape=shape, a=s.a, b=s.b, model=s.model.for_ndim(len(shape)), reference_step=step,
                  boundary=s.boundary, truncate=s.truncate, weights=s.weights, pooling=s.pooling,
                  n_trials=s.n_trials, chunk=int(chunk), wavelet=s.domain == 'wavelet', h_batch=int(h_batch),
                  axes=sm_lib.make_axes(shape, half), banded=banded, h_group=h_group,
                  s_batch=trials.largest_divisor(n_sigma, (1 << 21) // (2 * numel)), orthogonal=orthogonal)
  return p, signal, W, noise


def _grid_amse(p: trials.Plan, signal, W, sigmas, bandwidths, key, noise):
  """AMSE [3, S, H] of the three detectors over the grid."""
  coeffs = trials.to_coeffs(p, signal, W)
  n_h = bandwidths.shape[0]
  if p.pooling == 'rates':
    freqs = trials.pooled_rates(p, coeffs, sigmas, key, noise)         # [2, S, *shape]
    sms = jax.vmap(lambda h: trials.smoother_for(p, h))(bandwidths)    # [H, ...]

    def per_sigma(args):                                                # s_batch sigmas at a time (lax.map)
      f, sg = args                                                      # [2, *shape], scalar
      tables = trials.pooled_tables(p, f[:, None])                      # transformed once for every h

      def per_h(sm):
        return trials.amse_all(p, trials.pooled_means(p, tables, sg[None], sm), signal, coeffs, W)[:, 0]   # [3]
      return trials.batched_map(per_h, sms, p.h_batch)                  # [H, 3]
    out = trials.batched_map(per_sigma, (jnp.moveaxis(freqs, 1, 0), sigmas), p.s_batch)   # [S, H, 3]
    return jnp.transpose(out, (2, 0, 1))                                # [3, S, H]
  # Bandwidths in groups of h_group (the last group padded with copies of the last bandwidth).
  n_groups = -(-n_h // p.h_group)
  hs = jnp.concatenate([bandwidths, jnp.repeat(bandwidths[-1:], n_groups * p.h_group - n_h)])

  def per_group(h_group):
    sms = jax.vmap(lambda h: trials.smoother_for(p, h))(h_group)
    means = trials.trial_means(p, coeffs, sigmas, sms, key, noise)                          # [G, S, *shape]
    return jax.vmap(lambda *m: trials.amse_all(p, Estimates(*m), signal, coeffs, W))(*means)  # [G, 3, S]
  out = jax.lax.map(per_group, hs.reshape(n_groups, p.h_group)).reshape((-1,) + (3, sigmas.shape[0]))[:n_h]
  return jnp.transpose(out, (1, 2, 0))                                  # [3, S, H]


def _recover(p: trials.Plan, signal, W, sigma, bandwidth, key, noise):
  """Trial-averaged estimates [3, *shape] of the three detectors, data domain."""
  coeffs = trials.to_coeffs(p, signal, W)
  sm = trials.smoother_for(p, bandwidth)
  if p.pooling == 'rates':
    tables = trials.pooled_tables(p, trials.pooled_rates(p, coeffs, sigma[None], key, noise))
    means = trials.pooled_means(p, tables, sigma[None], sm)
  else:
    sms = jax.tree.map(lambda v: v[None], sm)
    means = jax.tree.map(lambda v: v[0], trials.trial_means(p, coeffs, sigma[None], sms, key, noise))
  return trials.detector_estimates(p, means, W)[:, 0]


@functools.lru_cache(maxsize=64)
def _compiled(fn: Callable, p: trials.Plan) -> Callable:
  """One jitted function per (computation, plan): reused by every call with the same static configuration
  (every signal of the same shape and settings), so a run over many signals compiles once."""
  return jax.jit(functools.partial(fn, p))


class GridResult(NamedTuple):
  """Result of `grid_search`.

  Attributes:
    amse: detector -> float64 [n_sigma, n_h] AMSE (Eq. 18) of the trial-averaged, data-domain estimate.
    best: detector -> (sigma, bandwidth, amse) at the minimum.
    sigmas: the sigma axis, float64 [n_sigma].
    bandwidths: the bandwidth axis, float64 [n_h].
  """
  amse: dict[str, np.ndarray]
  best: dict[str, tuple[float, float, float]]
  sigmas: np.ndarray
  bandwidths: np.ndarray


@dataclasses.dataclass(frozen=True)
class GridProgram:
  """A grid search prepared for one signal and grid, not yet run.

  Attributes:
    fn: the jitted computation of the array arguments; `fn(*args)` is the AMSE, float32 [3, n_sigma, n_h]
      (detectors in `DETECTORS` order). Its spectra are float64: trace, lower and call it inside
      `srjax.threshold.fft64()`, as `__call__` and `lower` do.
    args: its array arguments (signal, wavelet matrices, sigmas, bandwidths, key, noise).
    sigmas: the sigma axis, float64 [n_sigma].
    bandwidths: the bandwidth axis, float64 [n_h].
  """
  fn: Callable[..., jax.Array]
  args: tuple
  sigmas: np.ndarray
  bandwidths: np.ndarray

  def __call__(self, compiled: Any = None) -> jax.Array:
    """Runs `fn` (or an AOT-compiled version of it, from `lower().compile()`) on `args`."""
    with sm_lib.fft64():
      return (self.fn if compiled is None else compiled)(*self.args)

  def lower(self) -> jax.stages.Lowered:
    """`fn` lowered for `args`; `.compile()` it to time the compilation and read `memory_analysis()`."""
    with sm_lib.fft64():
      return self.fn.lower(*self.args)


def grid_program(signal: jnp.ndarray, key: jax.Array | None, *, sigmas: Sequence[float],
                 bandwidths: Sequence[float], h_batch: int = 1, noise: jnp.ndarray | None = None,
                 **settings: Any) -> GridProgram:
  """The compiled computation behind `grid_search`, prepared but not run (same arguments and checks).

  Args:
    signal: [n] or [n, m].
    key: PRNG key (trial chunk c uses fold_in(key, c)); may be None when `noise` is given.
    sigmas: noise standard deviations (> 0), the grid's first axis.
    bandwidths: kernel bandwidths (> 0), the grid's second axis.
    h_batch: bandwidths vectorised together (usually slower on CPU than 1).
    noise: optional standard-normal draws [n_trials, *signal.shape] to use instead of `key`.
    **settings: the fields of `Settings` (a, b and n_trials required).

  Returns:
    A `GridProgram`: `program()` is the AMSE array [3, n_sigma, n_h] that `grid_search` tabulates;
    `program.lower()` lowers it ahead of time.
  """
  s = st.Settings(**settings)
  sig = st.check_positive('sigmas', sigmas).reshape(-1)
  hs = st.check_positive('bandwidths', bandwidths).reshape(-1)
  h_batch = st.check_count('h_batch', h_batch)
  p, signal, W, noise = plan(s, signal, key, noise, n_sigma=sig.size, h_max=float(hs.max()), n_h=hs.size,
                             h_batch=min(h_batch, hs.size))
  args = (signal, W, jnp.asarray(sig, jnp.float32), jnp.asarray(hs, jnp.float32), key, noise)
  return GridProgram(fn=_compiled(_grid_amse, p), args=args, sigmas=sig, bandwidths=hs)


def grid_search(signal: jnp.ndarray, key: jax.Array | None, *, sigmas: Sequence[float],
                bandwidths: Sequence[float], h_batch: int = 1, noise: jnp.ndarray | None = None,
                **settings: Any) -> GridResult:
  """AMSE of all three detectors over a (sigma x bandwidth) grid, in one compiled computation.

  pooling='estimates': trials are scanned in chunks (sigmas vectorised); each chunk's indicators are transformed
  once, then every bandwidth (`lax.map`, h_batch at a time) costs one inverse FFT (or banded pass) and the
  estimators, added to running sums. Memory is O(n_sigma * (chunk_size + h_group) * numel) whatever n_trials
  is, h_group being as many bandwidths as keep the running sums near 256 MB (more bandwidths: more passes over
  the trials). pooling='rates': the pooled frequencies are transformed once per sigma (a few sigmas at a time)
  and smoothed for every bandwidth. The noise draws are shared by all grid points and detectors.

  Args:
    signal: the clean signal, [n] or [n, m] (2D: separable kernel and transform).
    key: PRNG key; trial chunk c uses fold_in(key, c) (may be None when `noise` is given).
    sigmas: noise standard deviations (> 0), the grid's first axis.
    bandwidths: kernel standard deviations in samples (> 0; with reference_quirks the reference's
      kernel_width), the grid's second axis.
    h_batch: bandwidths vectorised together (a positive integer; usually slower on CPU than 1).
    noise: optional standard-normal draws [n_trials, *signal.shape] to use instead of `key`.
    **settings: the fields of `Settings`, as keywords:
      a: lower threshold in the detection domain (required).
      b: upper threshold (required, > a).
      n_trials: noisy repetitions per grid point (required).
      domain: 'data' or 'wavelet'.
      wavelet: a PyWavelets name, or explicit matrices (one [n, n] per signal axis).
      level: the decomposition depth of a named wavelet.
      reference_quirks: the authors' MATLAB pipeline (SigmaFree model, reference kernel, zero padding).
      model: an `EstimatorModel` instead of the one reference_quirks selects.
      boundary: 'renormalize' or 'zeros' (None: by reference_quirks).
      weights: 'variance' or 'optimal'.
      pooling: 'estimates' or 'rates'.
      truncate: Gaussian kernel cut in standard deviations.
      p_clip: rate clipping of the default SigmaScaled model.
      v_clip: score clipping of SigmaFree (reference_quirks).
      chunk_size: trials per scan step (a divisor of n_trials).
      (`Settings` documents each field.)

  Returns:
    `GridResult` with amse[detector] of shape [len(sigmas), len(bandwidths)] and the argmin per detector.

  Raises:
    ValueError, TypeError: an argument out of range, of the wrong type, or an unknown option (naming it).

  References:
    Sec. III-A (grid search), Eq. 18 (AMSE); Sec. II-C/D (the recovery it evaluates).
  """
  program = grid_program(signal, key, sigmas=sigmas, bandwidths=bandwidths, h_batch=h_batch, noise=noise,
                         **settings)
  out = np.asarray(program(), dtype=np.float64)
  table = {d: out[i] for i, d in enumerate(st.DETECTORS)}
  best = {}
  for d, m in table.items():
    i, j = np.unravel_index(np.nanargmin(np.where(np.isfinite(m), m, np.nan)), m.shape)
    best[d] = (float(program.sigmas[i]), float(program.bandwidths[j]), float(m[i, j]))
  return GridResult(amse=table, best=best, sigmas=program.sigmas, bandwidths=program.bandwidths)


def recover(signal: jnp.ndarray, key: jax.Array | None, *, sigma: float, bandwidth: float,
            detector: str = 'double', noise: jnp.ndarray | None = None, **settings: Any) -> jnp.ndarray:
  """Trial-averaged SR recovery of a weak signal.

  For each trial: x = d + sigma eps with d = s (domain='data') or d = W s (domain='wavelet', Eq. 14, noise on
  the whole coefficient vector); I_a, I_b; kernel rates; sub/sup estimates and variances (the estimator model).
  pooling='estimates' averages estimates and variances over the trials (as the paper and the reference) and
  combines them (Eq. 17); pooling='rates' averages the indicators and estimates once. In the wavelet domain the
  result is mapped back with W^T (Eq. 13).

  Args:
    signal: the clean signal, [n] or [n, m].
    key: PRNG key; trial chunk c uses fold_in(key, c) (may be None when `noise` is given).
    sigma: noise standard deviation (> 0).
    bandwidth: kernel standard deviation in samples (> 0; reference_quirks: the reference's kernel_width).
    detector: 'sub', 'sup' or 'double'.
    noise: optional standard-normal draws [n_trials, *signal.shape] to use instead of `key`.
    **settings: the fields of `Settings` (a, b and n_trials required; see `grid_search`).

  Returns:
    The trial-averaged estimate in the data domain, signal's shape, float32.

  Raises:
    ValueError, TypeError: an argument out of range, of the wrong type, or an unknown option (naming it).

  References:
    Sec. II-C/D, Eqs. 13-17; Sec. III-A.
  """
  st.check_positive('sigma', sigma)
  st.check_positive('bandwidth', bandwidth)
  checks.one_of('detector', detector, st.DETECTORS)
  s = st.Settings(**settings)
  p, signal, W, noise = plan(s, signal, key, noise, n_sigma=1, h_max=float(bandwidth))
  with sm_lib.fft64():
    out = _compiled(_recover, p)(signal, W, jnp.asarray(sigma, jnp.float32), jnp.asarray(bandwidth, jnp.float32),
                                 key, noise)
  return out[st.DETECTORS.index(detector)]
