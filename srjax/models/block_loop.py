"""A stack of residual blocks, y_{k+1} = f(params_k, y_k) for k < depth, run as an XLA loop with a hand-written
gradient, fast on XLA:CPU.

Written as a Python loop, the blocks are inlined into one flat graph; written as `lax.scan` or `fori_loop` with
a small static trip count, XLA unrolls the loop into the same flat graph. On XLA:CPU a ConvNeXt's train step in
that form ran 20-30 % slower than the same blocks inside a diffrax solve, whose adjoint keeps each block's
forward and backward pass as the body of a `while` loop (its own computation, fused and scheduled on its own).
`block_loop` gives any stack of blocks that structure with public `jax.lax` only:

  forward   a `while_loop` over k whose trip count is hidden from XLA (behind an optimization barrier, so the
            loop is kept, not unrolled); under differentiation it also stores each block's input y_k
            ([depth, *y.shape], the same memory as the residuals of the inlined form);
  backward  a `while_loop` from k = depth - 1 down to 0 that recomputes block k's forward from the stored y_k
            inside `jax.vjp` and writes d params_k; the cotangent of y_k is carried to block k - 1.

The values are those of the Python loop (the same `f` on the same inputs); the gradients equal automatic
differentiation of it to float rounding (tests/test_block_loop.py checks both in float64, with
`jax.test_util.check_grads`). In `python -m eval.bench.nsde` it cut the ConvNeXt train step from about 45 to
about 34 ms (batch 32 of 64 x 64, 2 cores; see README.md's speed table).

Forward-mode differentiation (`jax.jvp`, `jax.jacfwd`) is not supported: this is a `jax.custom_vjp`.

References:
  He et al. 2016, "Deep Residual Learning" (the residual stack); Chen et al. 2016, "Training Deep Nets with
  Sublinear Memory Cost" (recomputing a block's forward pass in its backward pass).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def stack(trees: list[Any]) -> Any:
  """Pytrees of equal structure stacked leaf by leaf on a new leading axis (the `stacked` of `block_loop`)."""
  return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def _take(tree: Any, k: jax.Array) -> Any:
  return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, k, keepdims=False), tree)


def _opaque(n: int) -> jax.Array:
  """n as a value XLA cannot constant-fold, so a loop bounded by it stays a loop."""
  return jax.lax.optimization_barrier(jnp.int32(n))


def _run(f: Callable[[Any, jax.Array], jax.Array], depth: int):
  """The custom-VJP loop for one f and depth."""

  def forward(stacked, y, keep_inputs: bool):
    inputs = jnp.zeros((depth if keep_inputs else 0,) + y.shape, y.dtype)

    def body(carry):
      k, y, inputs = carry
      if keep_inputs:
        inputs = jax.lax.dynamic_update_index_in_dim(inputs, y, k, 0)
      return k + 1, f(_take(stacked, k), y), inputs

    _, y, inputs = jax.lax.while_loop(lambda c: c[0] < _opaque(depth), body, (jnp.int32(0), y, inputs))
    return y, inputs

  @jax.custom_vjp
  def run(stacked, y):
    return forward(stacked, y, False)[0]

  def run_fwd(stacked, y):
    y_out, inputs = forward(stacked, y, True)
    return y_out, (stacked, inputs)

  def run_bwd(saved, g):
    stacked, inputs = saved

    def body(carry):
      k, g, grads = carry
      k = k - 1
      _, vjp = jax.vjp(f, _take(stacked, k), inputs[k])
      d_params, g = vjp(g)
      grads = jax.tree.map(lambda acc, d: jax.lax.dynamic_update_index_in_dim(acc, d, k, 0), grads, d_params)
      return k, g, grads

    grads0 = jax.tree.map(jnp.zeros_like, stacked)
    _, g, grads = jax.lax.while_loop(lambda c: c[0] > 0, body, (_opaque(depth), g, grads0))
    return grads, g

  run.defvjp(run_fwd, run_bwd)
  return run


def block_loop(f: Callable[[Any, jax.Array], jax.Array], stacked: Any, y: jax.Array) -> jax.Array:
  """y_depth of y_{k+1} = f(params_k, y_k), y_0 = y, with params_k the k-th slice of `stacked`.

  Args:
    f: a pure function (params, y) -> y' of the same shape and dtype as y (one block; it must not close over
      values that are being differentiated: pass them in `stacked`).
    stacked: the blocks' params, every leaf with a leading axis of size depth >= 1 (`stack([p_0, p_1, ...])`).
    y: the first block's input, any shape, floating point.

  Returns:
    The last block's output, y's shape and dtype; differentiable in `stacked` and `y` (reverse mode).

  Raises:
    ValueError: `stacked` has no leaves, leaves of different leading sizes, or a leading size of 0.
    TypeError: y is not a floating-point array.
  """
  leaves = jax.tree.leaves(stacked)
  sizes = {leaf.shape[0] if getattr(leaf, 'ndim', 0) else None for leaf in leaves}
  if not leaves or len(sizes) != 1 or None in sizes or 0 in sizes:
    raise ValueError(f'block_loop: stacked must be a pytree of arrays sharing one leading axis of size depth >= 1 '
                     f'(stack([params_0, params_1, ...])); got leading sizes {sorted(map(str, sizes))}')
  if not jnp.issubdtype(jnp.result_type(y), jnp.floating):
    raise TypeError(f'block_loop: y must be a floating-point array; got dtype {jnp.result_type(y)}')
  return _run(f, sizes.pop())(stacked, y)
