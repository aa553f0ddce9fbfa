"""srjax.models.isolate.isolated: the same values and derivatives as calling the function, under jit, grad,
jvp and vmap, for several arguments and pytree outputs; a conditional only in the CPU lowering."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from srjax.models import isolate


def _f(w, x):
  """Two outputs that depend on both arguments differently (a swapped argument or output changes both)."""
  h = jnp.tanh(x @ w['a'] + w['b'])
  return {'y': h * x[..., :1], 'z': (h ** 2).sum(axis=-1) - x.sum(axis=-1)}


def _args():
  rng = np.random.default_rng(0)
  w = {'a': jnp.asarray(rng.normal(size=(3, 4))), 'b': jnp.asarray(rng.normal(size=4))}
  return w, jnp.asarray(rng.normal(size=(5, 3)))


def test_values_and_derivatives_equal_the_plain_call():
  with jax.enable_x64(True):
    w, x = _args()
    got = jax.jit(lambda w, x: isolate.isolated(_f, w, x))(w, x)
    want = _f(w, x)
    for k in want:
      np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12)
    loss = lambda g: lambda w, x: sum(jnp.sum(v * (i + 1.5)) for i, v in enumerate(g(w, x).values()))
    for a, b in zip(jax.tree.leaves(jax.grad(loss(lambda w, x: isolate.isolated(_f, w, x)), (0, 1))(w, x)),
                    jax.tree.leaves(jax.grad(loss(_f), (0, 1))(w, x))):
      np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    check_grads(lambda w, x: isolate.isolated(_f, w, x), (w, x), order=2, modes=('fwd', 'rev'))


def test_vmap_over_a_batch_axis():
  with jax.enable_x64(True):
    w, x = _args()
    xs = jnp.stack([x, 2 * x, -x])
    got = jax.vmap(lambda x: isolate.isolated(_f, w, x))(xs)
    want = jax.vmap(lambda x: _f(w, x))(xs)
    for k in want:
      np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12)


def test_a_conditional_only_when_lowered_for_cpu():
  # The runtime predicate is the optimization_barrier; lowered for a GPU, f is inlined (the platform switch has a
  # constant index, which XLA folds), so no predicate is copied to the host.
  w, x = _args()
  lower = lambda platform: jax.jit(jax.grad(lambda w, x: isolate.isolated(_f, w, x)['z'].sum())).trace(
      w, x).lower(lowering_platforms=(platform,)).as_text()
  assert 'optimization_barrier' in lower('cpu')
  assert 'optimization_barrier' not in lower('cuda')
