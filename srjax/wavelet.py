"""Orthogonal periodic discrete wavelet transforms as dense matrices (built once with PyWavelets).

The multiscale threshold-SR pipeline (Vimalajeewa et al., "A Multiscale Approach for Enhancing Weak Signal
Detection", Sec. II-D, Eqs. 11-13) writes the DWT as an orthogonal matrix, `d = W s` and `s = W^T d`. Holding W
as an array turns the transform into one matmul, so it runs inside `jit`/`vmap` with everything else.

Layout. `dwt_matrix(n, wavelet, level) @ x` equals
`np.concatenate(pywt.wavedec(x, wavelet, mode='periodization', level=level))`: the coarse approximation block
first, then the detail blocks from coarse to fine.

The authors' MATLAB code (published with the paper, Sec. III; it builds on WaveLab) does not use PyWavelets'
alignment. Its 1D pipeline transforms with `dwtr(x, L, h)` down to a coarse block of 8 (L = 7 for n = 1024), its
2D pipeline with the matrix `Wavmat(h, N, k0, 0)` at 3 levels, both with WaveLab's `MakeONFilter('Symmlet', 8)`.
What we checked against ports of its two transforms (tests/test_wavelet.py):

* `dwtr(x, L, h)` (1D, Vidakovic's cascade) is, at every level, a PyWavelets periodization step applied after
  the input to that level is rolled by `len(h)//2 - 1` (np.roll sense). So it equals `dwt_matrix(...,
  roll=dwtr_roll(wavelet))` when `h` is PyWavelets' `dec_lo`. A single roll of the input would not do: the roll
  happens at every level.
* WaveLab's `MakeONFilter('Symmlet', 8)` is PyWavelets' `sym8.dec_lo` reversed in time (= `sym8.rec_lo`, to
  1e-12). WaveLab's Symmlet 4 and 6 are NOT reversed: they equal `sym4.dec_lo` and `sym6.dec_lo`. So the
  reference's 1D transform `dwtr(x, L, MakeONFilter('Symmlet', 8))` is
  `dwt_matrix(n, 'sym8', L, roll=dwtr_roll('sym8'), reverse_filter=True)`.
* `Wavmat(h, N, k0, 0)` (the reference's 2D matrix, used as `W X W'`) correlates with `h` where `dwtr`
  convolves, which reverses the filter once more. With WaveLab's Symmlet 6 (its published 2D demo) it equals
  `dwt_matrix(N, 'sym6', k0, roll=wavmat_roll('sym6'), reverse_filter=True)`; with WaveLab's Symmlet 8 it
  equals `dwt_matrix(N, 'sym8', k0, roll=wavmat_roll('sym8'))` (the two reversals cancel). Exactly, same signs.

All of these are orthogonal. They differ from one another by shifts and by time reversal of the basis.
"""
from __future__ import annotations

import functools
import warnings

import jax.numpy as jnp
import numpy as np
import pywt

from srjax import checks

__all__ = [
    'dwt_matrix', 'dwt', 'idwt', 'dwt2', 'idwt2', 'max_level', 'dwtr_roll', 'wavmat_roll', 'block_sizes',
]


def _as_float(x) -> jnp.ndarray:
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _wavelet(wavelet: str) -> pywt.Wavelet:
  """Returns the PyWavelets wavelet `wavelet`, checking that it exists and is orthogonal."""
  if not isinstance(wavelet, str):
    checks.fail('wavelet', wavelet, 'a str (a PyWavelets name)', error=TypeError)
  try:
    w = pywt.Wavelet(wavelet)
  except ValueError:
    checks.fail('wavelet', wavelet, "a discrete wavelet known to PyWavelets, as listed by "
                "pywt.wavelist(kind='discrete') (orthogonal ones: haar, dbN, symN, coifN)")
  if not w.orthogonal:
    checks.fail('wavelet', wavelet, "an orthogonal wavelet (the SR pipeline needs W^T W = I; this one is not "
                "orthogonal), such as 'haar', 'dbN', 'symN' or 'coifN'")
  return w


def max_level(n: int, wavelet: str = 'sym8') -> int:
  """The default decomposition depth: PyWavelets' `dwt_max_level(n, filter_len)`.

  That is the deepest level whose coarsest block still has at least `filter_len - 1` samples, e.g. 6 for
  n = 1024 and sym8 (16 taps). The reference's 1D code goes one level further (coarse block of 8, level=7).
  """
  w = _wavelet(wavelet)
  return int(pywt.dwt_max_level(int(n), w.dec_len))


def dwtr_roll(wavelet: str = 'sym8') -> int:
  """Per-level roll that aligns PyWavelets' periodization with the reference's `dwtr`: len(h)//2 - 1."""
  return _wavelet(wavelet).dec_len // 2 - 1


def wavmat_roll(wavelet: str = 'sym6') -> int:
  """Per-level roll that aligns PyWavelets' periodization (reversed filter) with `Wavmat(h, N, k0, 0)`."""
  return -(_wavelet(wavelet).dec_len // 2 + 1)


def block_sizes(n: int, level: int) -> list[int]:
  """Lengths of the coefficient blocks of `dwt_matrix(n, level=level)`: [n/2^L, n/2^L, n/2^(L-1), ..., n/2]."""
  return [n >> level] + [n >> j for j in range(level, 0, -1)]


def _check_n_level(n: int, level: int | None, wavelet: str) -> int:
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
    checks.fail('n', n, 'an integer >= 2', error=ValueError)
  n = int(n)
  if level is None:
    level = max_level(n, wavelet)
    if level < 1:
      checks.fail('n', n, f'a length long enough for wavelet={wavelet!r} (filter length '
                  f'{_wavelet(wavelet).dec_len}), or an explicit level')
  if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 1:
    checks.fail('level', level, 'a positive integer or None')
  if n % (2 ** level):
    checks.fail('n', n, f'a multiple of 2**level = {2 ** level} (level={level}); the largest level n={n} '
                f'allows is {int(np.log2(n & -n))}')
  return int(level)


@functools.lru_cache(maxsize=32)
def _dwt_matrix_cached(n: int, wavelet: str, level: int, roll: int, reverse_filter: bool,
                       detail_sign: int) -> np.ndarray:
  with warnings.catch_warnings():
    # PyWavelets warns when the level is deep enough that every coefficient wraps around; periodization
    # handles that exactly, and deep levels are what the reference uses.
    warnings.simplefilter('ignore', UserWarning)
    return _build(n, wavelet, level, roll, reverse_filter, detail_sign)


def _build(n: int, wavelet: str, level: int, roll: int, reverse_filter: bool, detail_sign: int) -> np.ndarray:
  w = _wavelet(wavelet)
  if roll == 0 and not reverse_filter and detail_sign == 1:
    # Transform the identity's columns: column j of W is wavedec(e_j).
    coeffs = pywt.wavedec(np.eye(n), w, mode='periodization', level=level, axis=0)
    return np.ascontiguousarray(np.concatenate(coeffs, axis=0))
  h = np.asarray(w.dec_lo, np.float64)
  if reverse_filter:
    h = h[::-1]
  # Detail filter built from the low-pass one as the reference does: G = fliplr(h), odd 1-based taps negated.
  g = h[::-1].copy()
  g[0::2] *= -1
  custom = pywt.Wavelet('srjax_custom', filter_bank=[h, g, h[::-1], g[::-1]])
  approx = np.eye(n)
  details = []
  for _ in range(level):
    approx, d = pywt.dwt(np.roll(approx, roll, axis=0), custom, mode='periodization', axis=0)
    details.insert(0, detail_sign * d)
  return np.ascontiguousarray(np.concatenate([approx] + details, axis=0))


def dwt_matrix(n: int, wavelet: str = 'sym8', level: int | None = None, *, roll: int = 0,
               reverse_filter: bool = False, detail_sign: int = 1) -> np.ndarray:
  """The orthogonal periodic DWT analysis matrix W (Eq. 11: d = W s).

  Args:
    n: signal length; must be divisible by 2**level.
    wavelet: an orthogonal PyWavelets wavelet name ('sym8', 'db4', 'haar', ...).
    level: number of decomposition levels; None means `max_level(n, wavelet)` (PyWavelets' default: the
      coarsest block keeps at least filter_len - 1 samples; 6 for n=1024, sym8). The reference's 1D code uses
      level=7 for n=1024 (coarse block of 8); its 2D code uses level=3.
    roll: circular shift (np.roll sense) applied to the input of EVERY level before PyWavelets' periodization
      step. 0 gives PyWavelets' layout; `dwtr_roll(wavelet)` gives the reference's `dwtr` alignment.
    reverse_filter: use the time-reversed low-pass filter (WaveLab's Symmlet 8 orientation, see module doc).
      The detail filter is then derived from it as the reference does.
    detail_sign: +1 or -1, multiplies every detail row (a sign convention; kept for callers that need it).

  Returns:
    W: float64 [n, n] with W @ W.T = I. With the defaults, `W @ x` equals
    `np.concatenate(pywt.wavedec(x, wavelet, mode='periodization', level=level))`. Cached per arguments;
    a read-only array.

  Raises:
    ValueError: n not divisible by 2**level, unknown or non-orthogonal wavelet, bad level or detail_sign.
  """
  level = _check_n_level(n, level, wavelet)
  checks.one_of('detail_sign', detail_sign, (1, -1))
  mat = _dwt_matrix_cached(int(n), wavelet, level, int(roll), bool(reverse_filter), int(detail_sign))
  mat.setflags(write=False)
  return mat


def dwt(x: jnp.ndarray, W: jnp.ndarray) -> jnp.ndarray:
  """1D DWT along the last axis: `x @ W.T`. x: [..., n]; W: [n, n] from `dwt_matrix`. Returns [..., n]."""
  x = _as_float(x)
  return jnp.einsum('...j,ij->...i', x, jnp.asarray(W, dtype=x.dtype))


def idwt(c: jnp.ndarray, W: jnp.ndarray) -> jnp.ndarray:
  """Inverse 1D DWT along the last axis (Eq. 13: s = W^T d): `c @ W`. c: [..., n]. Returns [..., n]."""
  c = _as_float(c)
  return jnp.einsum('...i,ij->...j', c, jnp.asarray(W, dtype=c.dtype))


def dwt2(x: jnp.ndarray, W_rows: jnp.ndarray, W_cols: jnp.ndarray) -> jnp.ndarray:
  """Separable 2D DWT on the last two axes: `W_rows @ x @ W_cols.T` (the reference's `W * X * W'`).

  This is the tensor-product ("standard") decomposition: the full multilevel 1D transform along every column,
  then along every row, i.e. `wavedec` along axis -2 and `wavedec` along axis -1, each concatenated. For
  level=1 it equals `pywt.dwt2(x, wavelet, 'periodization')` laid out in quadrants
  [[cA, cH], [cV, cD]] (cH: detail across rows, as PyWavelets names it). For level >= 2 it is NOT
  `pywt.wavedec2` (the Mallat pyramid only re-decomposes the LL block): the two are different orthogonal bases,
  not a permutation of each other.

  Args:
    x: [..., n_rows, n_cols].
    W_rows: [n_rows, n_rows]; W_cols: [n_cols, n_cols] (from `dwt_matrix`).

  Returns:
    [..., n_rows, n_cols] coefficients.
  """
  x = _as_float(x)
  W_rows = jnp.asarray(W_rows, dtype=x.dtype)
  W_cols = jnp.asarray(W_cols, dtype=x.dtype)
  return jnp.einsum('ij,...jk,lk->...il', W_rows, x, W_cols)


def idwt2(c: jnp.ndarray, W_rows: jnp.ndarray, W_cols: jnp.ndarray) -> jnp.ndarray:
  """Inverse of `dwt2`: `W_rows.T @ c @ W_cols`. c: [..., n_rows, n_cols]. Returns the same shape."""
  c = _as_float(c)
  W_rows = jnp.asarray(W_rows, dtype=c.dtype)
  W_cols = jnp.asarray(W_cols, dtype=c.dtype)
  return jnp.einsum('ji,...jk,kl->...il', W_rows, c, W_cols)
