"""'SAME' depthwise 2-D cross-correlation with a hand-written gradient, fast on XLA:CPU.

Forward, y[b, h, w, c] = bias[c] + sum_{i, j} xp[b, h + i, w + j, c] * K[i, j, c] with xp = x zero-padded by
k // 2, written as k^2 shifted multiply-adds that XLA fuses into one loop. Automatic differentiation of that form
is slow on XLA:CPU: the transpose of each shifted slice is a full-size pad (k^2 of them), and the kernel gradient
becomes k^2 separate reductions over batch and space with the channel axis minor, which XLA:CPU runs as strided
scalar loops. `depthwise_conv` therefore carries a `jax.custom_vjp` with

  input gradient   dx[b, h, w, c] = sum_{i, j} gp[b, h + i, w + j, c] * K[k-1-i, k-1-j, c]  (gp = g padded):
                   the correlation with the flipped kernel, again k^2 shifted multiply-adds in one fused loop;
  kernel gradient  dK[i, j, c] = sum_{b, h, w} xp[b, h + i, w + j, c] g[b, h, w, c]: one batched matmul over
                   (batch, rows) per channel, M[c, i, w, u] = sum_{b, h} xp[c, b, h + i, u] g[c, b, h, w], in
                   the channels-first layout, whose k diagonals u = w + j are then summed over w. That is
                   (W + k - 1) / k times the multiply-adds of the direct sum, but runs on the matmul kernels
                   instead of k^2 column reductions;
  bias gradient    the sum of g over batch and space.

Maps no larger than the kernel's taps (H * W <= k^2: the 4 x 4 last stage of the 'cpu' ConvNeXt under a 7 x 7
kernel) take a dense form instead: per channel, the conv is the [H W, H W] matrix T[p, q, c] = K[q - p + k // 2, c]
(zero where the offset falls outside the kernel), built as E @ K with a constant 0/1 tap matrix E, and
y[b, p, c] = sum_q T[p, q, c] x[b, q, c]. That is (H W)^2 <= k^2 H W multiply-adds per image and channel, and
its automatic gradient is two such contractions plus E^T dT. At 4 x 4 with 96 channels it took the conv's
value-and-gradient from 0.76 to 0.25 ms (batch 32); at 8 x 8 it was no faster, at 16 x 16 much slower.

The result equals `lax.conv_general_dilated(..., feature_group_count=C)` with the same kernel in values and
gradients (tests/test_depthwise.py checks both against a float64 reference and `jax.test_util.check_grads`).

References:
  Liu et al. 2022, "A ConvNet for the 2020s", Sec. 2.4 (the 7 x 7 depthwise conv of a ConvNeXt block).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from srjax.models import isolate


def _pad(x: jax.Array, p: int) -> jax.Array:
  """x zero-padded by p on both spatial sides, as its own buffer: without the barrier XLA fuses the pad and
  x's producer (a LayerNorm, say) into each of the k^2 shifted reads and emits k^2 separate loops."""
  return jax.lax.optimization_barrier(jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0))))


def shifted_sum(xp: jax.Array, kernel: jax.Array, h: int, w: int) -> jax.Array:
  """sum_{i, j} xp[:, i:i + h, j:j + w, :] * kernel[i, j]: xp [B, h + k - 1, w + k - 1, C], kernel [k, k, C]."""
  k = kernel.shape[0]
  out = None
  for i in range(k):
    for j in range(k):
      term = xp[:, i:i + h, j:j + w, :] * kernel[i, j]
      out = term if out is None else out + term
  return out


def kernel_grad(x: jax.Array, g: jax.Array, k: int) -> jax.Array:
  """dK[i, j, c] = sum_{b, h, w} xp[b, h + i, w + j, c] g[b, h, w, c] for x, g [B, H, W, C]; returns [k, k, C].

  One batched matmul (batch c, contraction over batch and rows) gives M[c, i, w, u] for all row shifts i and
  padded columns u; the column shift j is the diagonal u = w + j, read by the skew reshape
  (w, u) -> w * (Wp + 1) + j and summed over w.
  """
  p = k // 2
  _, h, w, c = x.shape
  wp = w + 2 * p
  xt = jnp.pad(x.transpose(3, 0, 1, 2), ((0, 0), (0, 0), (p, p), (p, p)))    # [C, B, Hp, Wp]
  gt = g.transpose(3, 0, 1, 2)                                                 # [C, B, H, W]
  # Keep the two transposes as their own (cheap) loops: fused into the stack below, XLA:CPU reads x with a
  # channel stride for each of the k row shifts, which costs more than the matmul.
  xt, gt = jax.lax.optimization_barrier((xt, gt))
  rows = jnp.stack([xt[:, :, i:i + h, :] for i in range(k)], axis=3)          # [C, B, H, k, Wp]
  m = jnp.einsum('cbhiu,cbhw->ciwu', rows, gt)                                 # [C, k, W, Wp]
  m = jnp.pad(m.reshape(c, k, w * wp), ((0, 0), (0, 0), (0, w)))              # row w starts at w * (Wp + 1)
  diag = m.reshape(c, k, w, wp + 1)[..., :k]                                   # [C, k(i), W, k(j)]: u = w + j
  return diag.sum(axis=2).transpose(1, 2, 0)


@jax.custom_vjp
def _conv(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  k = kernel.shape[0]
  return shifted_sum(_pad(x, k // 2), kernel, x.shape[1], x.shape[2]) + bias


def _conv_fwd(x, kernel, bias):
  return _conv(x, kernel, bias), (x, kernel)


def _conv_bwd(res, g):
  x, kernel = res
  k = kernel.shape[0]
  dx = shifted_sum(_pad(g, k // 2), kernel[::-1, ::-1], x.shape[1], x.shape[2])
  return dx, kernel_grad(x, g, k), g.sum(axis=(0, 1, 2))


_conv.defvjp(_conv_fwd, _conv_bwd)


@functools.lru_cache(maxsize=None)
def tap_matrix(h: int, w: int, k: int) -> np.ndarray:
  """E [(H W)^2, k^2] with E[p * H W + q, t] = 1 when input position q is tap t = (i, j) of output position p
  under a 'SAME' k x k kernel (q = p + (i - k // 2, j - k // 2) inside the map), else 0. Positions are
  row-major, p = row * W + column."""
  p = k // 2
  a, b, i, j = np.meshgrid(np.arange(h), np.arange(w), np.arange(k), np.arange(k), indexing='ij')
  hh, ww = a + i - p, b + j - p
  inside = (hh >= 0) & (hh < h) & (ww >= 0) & (ww < w)
  e = np.zeros((h * w, h * w, k * k), np.float32)
  e[(a * w + b)[inside], (hh * w + ww)[inside], (i * k + j)[inside]] = 1.0
  e.setflags(write=False)
  return e.reshape(h * w * h * w, k * k)


def _dense(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """The same conv as [H W, H W] matrices per channel (module docstring), differentiated automatically."""
  b, h, w, c = x.shape
  k = kernel.shape[0]
  e = jnp.asarray(tap_matrix(h, w, k), kernel.dtype)
  t = (e @ kernel.reshape(k * k, c)).reshape(h * w, h * w, c)
  return jnp.einsum('pqc,bqc->bpc', t, x.reshape(b, h * w, c)).reshape(x.shape) + bias


def depthwise_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """'SAME' depthwise cross-correlation with bias (stride 1, odd k), differentiable with the fast gradient above.

  Args:
    x: [B, H, W, C].
    kernel: [k, k, 1, C] (the `nn.Conv(feature_group_count=C)` layout) or [k, k, C]; k odd.
    bias: [C].

  Returns:
    [B, H, W, C], equal to the grouped conv with the same kernel plus bias.
  """
  if kernel.ndim == 4:
    kernel = kernel[:, :, 0, :]
  form = _dense if x.shape[1] * x.shape[2] <= kernel.shape[0] ** 2 else _conv
  return isolate.isolated(form, x, kernel, bias)
