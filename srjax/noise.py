"""Latent noise of "positive noise" (Li et al., NoisyNN): Gaussian, linear-transform and salt-and-pepper noise.

The paper injects three kinds of noise into a latent representation X (one row per data sample, k rows):

* Gaussian noise, X + eps with eps ~ N(0, 1) (Eq. 16). Sec. 3.2 (Eq. 10-11) argues it is harmful.
* Linear-transform noise, eps = Q X, so the layer sees (I + Q) X (Eq. 12). With Q = -alpha I + alpha f(I)
  (Eq. 17, f a cyclic row shift) each row becomes (1 - alpha) x_i + alpha x_j of a neighbouring row; the optimal
  quality matrix of Eq. 19 replaces every row by (2 x_i + sum_{j != i} x_j) / (k + 1). The paper calls it
  *positive* noise: its mutual information with the task is -log|I + Q| > 0 (Eq. 13).
* Salt-and-pepper noise (Eq. 18): each entry becomes max(X) with probability alpha/2, min(X) with probability
  alpha/2. Eq. 15 argues it is harmful.

**Which axis holds the k rows.** In the authors' code the k rows are the samples of the mini-batch: the ResNet
applies `x + alpha * (roll(x, -1, batch) - x)` and the ViT the optimal Q over the batch. That mixes the
features of *other test images* into each prediction, so a prediction depends on what else is in its batch,
and with class-sorted test batches (the authors' test loaders read a class-sorted folder in order) it uses the
labels of the batch. `linear_transform(x, alpha, axis=0)` is that faithful version; `axis=1` (tokens or
flattened spatial positions) is the per-sample variant, which mixes only within one example and cannot leak.

Every array function follows the library's shape convention: axis 0 is the batch axis. Mixing along axis 0 with
a batch of one is the identity (there is no other sample to mix in, as with the authors' roll); mixing along
any other axis of size 1 is an error, since the requested mixing cannot happen.

References:
  Li, Zhang, Xu, Hu, Wang, Gool, Pfister. "Positive noise" / NoisyNN: Sec. 3.2 (Eq. 10-15), Sec. 4.1
  (Eq. 16-18), Sec. 4.4 (Eq. 19).
"""
from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from srjax import checks

__all__ = ['KINDS', 'gaussian', 'salt_and_pepper', 'linear_transform', 'optimal_transform', 'linear_q',
           'optimal_q', 'mutual_information', 'constraints', 'perturb', 'check_strength']

KINDS = ('none', 'gaussian', 'linear', 'optimal', 'salt_and_pepper')


def _static_number(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_strength(kind: str, strength: Any) -> Any:
  """Validates the strength of a noise kind (a traced value is passed through unchecked); returns it.

  Accepted: gaussian a std >= 0; linear and salt_and_pepper an alpha in [0, 1); optimal a weight in [0, 1]
  (1 is Eq. 19's matrix); none anything.

  Raises:
    ValueError: `kind` is unknown or `strength` is out of range (messages name 'kind' / 'strength').
  """
  checks.one_of('kind', kind, KINDS)
  if kind == 'none' or not _static_number(strength):
    return strength
  if kind == 'gaussian':
    return checks.in_range('strength', strength, 0.0, None)
  if kind == 'optimal':
    return checks.in_range('strength', strength, 0.0, 1.0)
  return checks.in_range('strength', strength, 0.0, 1.0, high_open=True)


def _check_alpha(alpha: Any) -> None:
  if _static_number(alpha):
    checks.in_range('alpha', alpha, 0.0, 1.0, high_open=True)


def _mix_axis(x: jax.Array, axis: Any) -> int:
  x = jnp.asarray(x)
  if x.ndim == 0:
    checks.fail('x', x, 'an array with at least one axis')
  checks.integer('axis', axis, -x.ndim, x.ndim - 1)
  axis %= x.ndim
  if axis != 0 and x.shape[axis] < 2:
    checks.fail('axis', axis, f'an axis of x (shape {tuple(x.shape)}) with at least 2 entries to mix '
                '(axis 0, the batch, may have 1)')
  return axis


def gaussian(key: jax.Array, x: jax.Array, sigma: float = 1.0) -> jax.Array:
  """Additive Gaussian noise x + sigma * eps, eps ~ N(0, 1) i.i.d. per entry (Eq. 16 uses sigma = 1).

  Args:
    key: PRNG key.
    x: any float array.
    sigma: noise std >= 0.

  Returns:
    Array of x's shape and dtype.

  References:
    Positive noise, Sec. 4.1, Eq. 16; Sec. 3.2, Eq. 10 (its mutual information is negative).
  """
  if _static_number(sigma):
    checks.in_range('sigma', sigma, 0.0, None)
  x = jnp.asarray(x)
  return x + jnp.asarray(sigma, x.dtype) * jax.random.normal(key, x.shape, x.dtype)


def salt_and_pepper(key: jax.Array, x: jax.Array, alpha: float, *, batch_axis: int | None = 0) -> jax.Array:
  """Salt-and-pepper noise (Eq. 18): each entry, with p ~ U(0, 1), becomes max(X) if p < alpha/2 and min(X) if
  p > 1 - alpha/2, and stays otherwise; a fraction alpha of the entries is replaced on average.

  The extremes are taken per sample (over every axis but `batch_axis`), so one sample's noise does not depend
  on the others; `batch_axis=None` takes them over the whole array.

  Args:
    key: PRNG key.
    x: float array, e.g. a feature map [B, h, w, C] or tokens [B, N, D].
    alpha: replacement probability in [0, 1).
    batch_axis: the sample axis, or None.

  Returns:
    Array of x's shape and dtype.

  References:
    Positive noise, Sec. 4.1, Eq. 18; Sec. 3.2, Eq. 15 (its mutual information is -H(eps) < 0).
  """
  _check_alpha(alpha)
  x = jnp.asarray(x)
  if batch_axis is None:
    axes = None
  else:
    checks.integer('batch_axis', batch_axis, -x.ndim, x.ndim - 1)
    axes = tuple(a for a in range(x.ndim) if a != batch_axis % x.ndim) or None
  hi = jnp.max(x, axis=axes, keepdims=True)
  lo = jnp.min(x, axis=axes, keepdims=True)
  p = jax.random.uniform(key, x.shape, jnp.float32)
  half = jnp.asarray(alpha, jnp.float32) / 2
  return jnp.where(p < half, hi, jnp.where(p > 1 - half, lo, x))


def linear_transform(x: jax.Array, alpha: float, axis: int = 0) -> jax.Array:
  """Linear-transform noise (I + Q) X with Eq. 17's Q = -alpha I + alpha P, applied along `axis` by a roll.

  Row i of the result is (1 - alpha) x_i + alpha x_{(i+1) mod k}: this is the authors' code,
  `x + alpha * (roll(x, -1) - x)`, i.e. P[i, i+1] = 1 (`linear_q`). The paper's text describes f as moving row 1
  to row 2 (P[i, i-1] = 1); the two are transposes, with the same determinant and constraints.

  Args:
    x: float array; k = x.shape[axis] rows are mixed.
    alpha: strength in [0, 1) (alpha <= 0.5 keeps the dominant diagonal of Eq. 14).
    axis: 0 mixes samples of the batch (faithful to the paper, leaks across samples; a batch of 1 is returned
      unchanged); another axis (tokens, flattened positions) mixes within each sample.

  Returns:
    Array of x's shape and dtype, equal to `einsum('ij,j...->i...', I + linear_q(k, alpha), x)` along `axis`.

  Raises:
    ValueError: alpha outside [0, 1); axis not an axis of x, or a non-batch axis of size 1.

  References:
    Positive noise, Sec. 3.2 Eq. 12-13, Sec. 4.1 Eq. 17.
  """
  _check_alpha(alpha)
  axis = _mix_axis(x, axis)
  x = jnp.asarray(x)
  a = jnp.asarray(alpha, x.dtype)
  return x + a * (jnp.roll(x, -1, axis=axis) - x)


def optimal_transform(x: jax.Array, strength: float = 1.0, axis: int = 0) -> jax.Array:
  """(I + s Q_opt) X along `axis` with Eq. 19's optimal quality matrix; s = 1 is the paper's (and the authors'
  ViT code's) choice: row i becomes (2 x_i + sum_{j != i} x_j) / (k + 1).

  For s in [0, 1] the rows of I + s Q_opt keep unit sums and a dominant diagonal; s = 0 is the identity.

  Args:
    x: float array; k = x.shape[axis] rows are mixed.
    strength: s in [0, 1].
    axis: 0 mixes the batch (faithful, leaks across samples); another axis mixes within each sample.

  Returns:
    Array of x's shape and dtype.

  Raises:
    ValueError: strength outside [0, 1]; axis not an axis of x, or a non-batch axis of size 1.

  References:
    Positive noise, Sec. 4.4, Eq. 19.
  """
  if _static_number(strength):
    checks.in_range('strength', strength, 0.0, 1.0)
  axis = _mix_axis(x, axis)
  x = jnp.asarray(x)
  k = x.shape[axis]
  mixed = (x + jnp.sum(x, axis=axis, keepdims=True)) / (k + 1)
  return x + jnp.asarray(strength, x.dtype) * (mixed - x)


def linear_q(k: int, alpha: float) -> np.ndarray:
  """Eq. 17's quality matrix Q = -alpha I + alpha P, P the cyclic shift with P[i, (i+1) mod k] = 1.

  Args:
    k: number of rows (samples, or tokens for the per-sample variant), >= 1.
    alpha: strength in [0, 1).

  Returns:
    [k, k] float64 NumPy array; `linear_transform` applies I + Q.

  References:
    Positive noise, Sec. 4.1, Eq. 17.
  """
  checks.integer('k', k, 1)
  checks.in_range('alpha', alpha, 0.0, 1.0, high_open=True)
  eye = np.eye(k)
  return -alpha * eye + alpha * np.roll(eye, 1, axis=1)


def optimal_q(k: int) -> np.ndarray:
  """Eq. 19's optimal quality matrix: diag(1/(k+1) - 1) + 1/(k+1) 1_{k x k}.

  I + Q has 2/(k+1) on the diagonal and 1/(k+1) elsewhere, and |I + Q| = (k+1)^-(k-1), so its mutual
  information (Eq. 13) is (k-1) log(k+1), as the paper states.

  Args:
    k: number of rows, >= 1.

  Returns:
    [k, k] float64 NumPy array.

  References:
    Positive noise, Sec. 4.4, Eq. 19 and the MI formula below it.
  """
  checks.integer('k', k, 1)
  return np.diag(np.full(k, 1.0 / (k + 1) - 1.0)) + np.full((k, k), 1.0 / (k + 1))


def _square(name: str, q: Any) -> np.ndarray:
  q = np.asarray(q, dtype=np.float64)
  if q.ndim != 2 or q.shape[0] != q.shape[1] or q.shape[0] == 0:
    checks.fail(name, q, 'a non-empty square matrix [k, k]')
  checks.all_in_range(name, q)
  return q


def mutual_information(q: Any) -> float:
  """The paper's mutual information of linear-transform noise with the task, -log|det(I + Q)| (Eq. 13).

  This is the paper's closed form under its Gaussian assumptions, a property of Q alone; it does not measure
  anything about a trained model. A singular I + Q gives +inf.

  Args:
    q: [k, k] quality matrix.

  Returns:
    float (nats).

  References:
    Positive noise, Sec. 3.2, Eq. 13.
  """
  q = _square('q', q)
  sign, logdet = np.linalg.slogdet(np.eye(len(q)) + q)
  return float('inf') if sign == 0 else float(-logdet)


def constraints(q: Any, atol: float = 1e-9) -> dict[str, bool]:
  """Checks the four constraints of Eq. 14 on a quality matrix Q, each literally as written.

  * 'full_rank': rank(I + Q) = k.
  * 'row_equivalent_to_identity': Q ~ I, i.e. Q itself is invertible (rank k).
  * 'dominant_diagonal': [I + Q]_ii >= [I + Q]_ij for every i != j.
  * 'unit_row_norm': ||[I + Q]_i||_1 = 1 for every row.

  Note: when I + Q is non-negative, unit row norms mean (I + Q) 1 = 1, so Q 1 = 0 and Q is singular; the second
  constraint then contradicts the fourth. The paper's own matrices (Eq. 17 and Eq. 19) satisfy the first,
  third and fourth and fail the second.

  Args:
    q: [k, k] quality matrix.
    atol: tolerance of the equality and inequality tests.

  Returns:
    dict of the four names above -> bool.

  References:
    Positive noise, Sec. 3.2, Eq. 14.
  """
  q = _square('q', q)
  k = len(q)
  m = np.eye(k) + q
  diag = np.diag(m)
  off = np.where(np.eye(k, dtype=bool), -np.inf, m)
  return {
      'full_rank': bool(np.linalg.matrix_rank(m, tol=atol) == k),
      'row_equivalent_to_identity': bool(np.linalg.matrix_rank(q, tol=atol) == k),
      'dominant_diagonal': bool(np.all(diag[:, None] >= off - atol)),
      'unit_row_norm': bool(np.all(np.abs(np.abs(m).sum(axis=1) - 1.0) <= atol)),
  }


def perturb(key: jax.Array | None, x: jax.Array, kind: str, strength: float, axis: int = 0) -> jax.Array:
  """Applies one kind of noise to x [B, ...] (the dispatcher used by `srjax.inject`).

  Args:
    key: PRNG key (needed by 'gaussian' and 'salt_and_pepper'; ignored by the others, may be None for them).
    x: float array with the batch on axis 0.
    kind: one of KINDS: 'none', 'gaussian' (std = strength), 'linear' (Eq. 17, alpha = strength),
      'optimal' (Eq. 19, weight = strength), 'salt_and_pepper' (Eq. 18, alpha = strength).
    strength: see `check_strength`.
    axis: the mixing axis of 'linear' and 'optimal' (0: the batch; other: within a sample); the other kinds are
      per entry ('gaussian') or per sample ('salt_and_pepper').

  Returns:
    Array of x's shape and dtype.

  Raises:
    ValueError: unknown kind, strength out of range, a missing key for a random kind, a bad axis.

  References:
    Positive noise, Sec. 4.1, Eq. 16-18; Sec. 4.4, Eq. 19.
  """
  check_strength(kind, strength)
  if kind in ('gaussian', 'salt_and_pepper') and key is None:
    checks.fail('key', key, f'a PRNG key (kind {kind!r} is random)', error=TypeError)
  if kind == 'none':
    return jnp.asarray(x)
  if kind == 'gaussian':
    return gaussian(key, x, strength)
  if kind == 'salt_and_pepper':
    return salt_and_pepper(key, x, strength, batch_axis=0)
  if kind == 'linear':
    return linear_transform(x, strength, axis)
  return optimal_transform(x, strength, axis)
