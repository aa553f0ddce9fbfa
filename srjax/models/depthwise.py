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

The result equals `lax.conv_general_dilated(..., feature_group_count=C)` with the same kernel in values and
gradients (tests/test_depthwise.py checks both against a float64 reference and `jax.test_util.check_grads`).

References:
  Liu et al. 2022, "A ConvNet for the 2020s", Sec. 2.4 (the 7 x 7 depthwise conv of a ConvNeXt block).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


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
  return _conv(x, kernel, bias)
