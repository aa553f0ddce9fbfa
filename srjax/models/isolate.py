"""Run a function as its own XLA computation: the branch of a conditional whose predicate XLA cannot fold.

XLA compiles the whole jitted program as one graph and fuses across every function boundary. On XLA:CPU the
ConvNeXt's train step ran slowly in that form. In its optimised HLO, for example, the depthwise conv's 49 shifted
multiply-adds, the LayerNorm and the first matrix product of the MLP were one library fusion fed by separately
materialised shifted slices; which of XLA's choices costs the most was not isolated. Wrapping the depthwise
conv and the LayerNorm-MLP branch of each block in `isolated` makes each of them a computation of its own,
fused and scheduled alone, in the forward and in the backward pass (JAX differentiates a `lax.cond` into a
conditional of the transposed branch, with the residuals passed between them, so nothing is recomputed).

Measured on the 'cpu' ConvNeXt (batch 32 of 64 x 64, 2 cores, AMD EPYC with AVX-512; medians of 9 interleaved
rounds of 10 steps): train step 39.7 ms with the blocks inlined, 27.3 ms with each stage in an equinox
checkpointed loop (the previous form, which recomputes each block's forward pass in the backward pass), 21.1 ms
with the depthwise conv and the MLP branch isolated and the blocks inlined. `optimization_barrier`s on the same
values did not help (40.5 ms): the separate computation is what matters, not the fusion boundary alone.

The values are f's (to float rounding: fusion changes the order of operations); the predicate is an
`optimization_barrier` around True, so the other branch (zeros of f's output shapes) is compiled but never runs.
Works under jit, grad (both modes) and vmap (the predicate is never batched).

Only on CPU: the choice is made per platform when the program is lowered (`jax.lax.platform_dependent`), and on
GPU and TPU f is inlined as usual. There a conditional would cost a device-to-host copy of the predicate and a
synchronisation at every call, and nothing was measured to gain.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def isolated(f: Callable[..., Any], *args: Any) -> Any:
  """f(*args), compiled on CPU as its own computation (the taken branch of a `lax.cond`); inlined elsewhere.

  Args:
    f: a pure function of array pytrees.
    *args: its arguments (pytrees of arrays; static values must be closed over in f).

  Returns:
    f(*args).
  """
  shapes = jax.eval_shape(f, *args)

  def zeros(*_):
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def on_cpu(*args):
    return jax.lax.cond(jax.lax.optimization_barrier(jnp.bool_(True)), f, zeros, *args)

  return jax.lax.platform_dependent(*args, cpu=on_cpu, default=f)
