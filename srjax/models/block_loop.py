"""A stack of residual blocks, y_{k+1} = f(params_k, y_k) for k < depth, run as an XLA loop with a checkpointed
gradient, fast on XLA:CPU.

Written as a Python loop, the blocks are inlined into one flat graph. On XLA:CPU a ConvNeXt's train step in that
form (and as a `lax.scan` over the stacked blocks, with or without `jax.checkpoint`) ran 20-30 % slower than the same blocks inside a diffrax solve, whose adjoint keeps each block's
forward and backward pass as the body of a `while` loop (its own computation, fused and scheduled on its own).
`block_loop` gives any stack of blocks that structure. It runs the blocks with the loop diffrax's
`RecursiveCheckpointAdjoint` is built on, `equinox.internal.while_loop(kind='checkpointed')` with one checkpoint
per block:

  forward   a `while_loop` over k that stores each block's input y_k ([depth, *y.shape], the same memory as
            the residuals of the inlined form);
  backward  a `while_loop` from k = depth - 1 down to 0 that recomputes block k's forward from the stored y_k
            inside `jax.vjp`, adds d params_k and carries the cotangent of y_k to block k - 1.

A hand-written version of the same two loops with public `jax.lax` only (a `custom_vjp`, the trip count hidden
from XLA so the loops are kept) gave the same values and gradients but ran at the inlined form's speed (about
43 ms against equinox's 33 ms per ConvNeXt train step, measured side by side); equinox is already a
dependency through diffrax. `equinox.internal` carries no stability promise: tests/test_block_loop.py pins the
values and gradients, so a change there fails the suite instead of training silently wrong.

The values are those of the Python loop (the same `f` on the same inputs); the gradients equal automatic
differentiation of it to float rounding (tests/test_block_loop.py checks both in float64, with
`jax.test_util.check_grads`). Only reverse-mode differentiation is supported.

References:
  He et al. 2016, "Deep Residual Learning" (the residual stack); Chen et al. 2016, "Training Deep Nets with
  Sublinear Memory Cost" (recomputing a block's forward pass in its backward pass).
"""
from __future__ import annotations

from typing import Any, Callable

import equinox.internal as eqxi
import jax
import jax.numpy as jnp


def stack(trees: list[Any]) -> Any:
  """Pytrees of equal structure stacked leaf by leaf on a new leading axis (the `stacked` of `block_loop`)."""
  return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def take(tree: Any, k: jax.Array) -> Any:
  """Slice k (a traced integer) of every leaf of a `stack`ed pytree."""
  return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, k, keepdims=False), tree)


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
  depth = sizes.pop()

  def body(carry):
    k, y = carry
    return k + 1, f(take(stacked, k), y)

  return eqxi.while_loop(lambda carry: carry[0] < depth, body, (jnp.int32(0), y), max_steps=depth,
                         kind='checkpointed', checkpoints=depth)[1]
