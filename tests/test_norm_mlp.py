"""srjax.models.norm_mlp: the fused LayerNorm-MLP branch against the same chain built from flax's layers under
automatic differentiation (float64, values and every gradient), finite differences, and its errors."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from srjax.models import norm_mlp


def _params(c, d, seed=0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  p = {'norm': {'scale': 1 + 0.3 * rng.normal(size=c), 'bias': 0.3 * rng.normal(size=c)},
       'fc1': {'kernel': rng.normal(size=(c, d)) / np.sqrt(c), 'bias': rng.normal(size=d)},
       'fc2': {'kernel': rng.normal(size=(d, c)) / np.sqrt(d), 'bias': rng.normal(size=c)},
       'gamma': rng.normal(size=c)}
  return jax.tree.map(lambda a: jnp.asarray(a, dtype), p)


def _flax_chain(z, p, eps=norm_mlp.LN_EPS):
  """gamma * Dense(gelu(Dense(LayerNorm(z)))) with flax's own layers, differentiated automatically."""
  y = nn.LayerNorm(epsilon=eps).apply({'params': p['norm']}, z)
  y = nn.Dense(p['fc1']['kernel'].shape[1]).apply({'params': p['fc1']}, y)
  y = nn.gelu(y, approximate=False)
  y = nn.Dense(p['fc2']['kernel'].shape[1]).apply({'params': p['fc2']}, y)
  return p['gamma'] * y


@pytest.mark.parametrize('shape,d', [((2, 3, 4, 5), 20), ((7, 8), 3)])
def test_values_and_gradients_match_flax_layers_in_float64(shape, d):
  rng = np.random.default_rng(1)
  with jax.enable_x64(True):
    # Large offsets and spreads per position: the LayerNorm statistics matter.
    z = jnp.asarray(rng.normal(size=shape) * rng.uniform(0.5, 3, size=shape[:-1] + (1,)) + 2.0)
    g = jnp.asarray(rng.normal(size=shape))
    p = _params(shape[-1], d)
    got, got_vjp = jax.vjp(norm_mlp.norm_mlp, z, p)
    want, want_vjp = jax.vjp(_flax_chain, z, p)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    for a, b in zip(jax.tree.leaves(got_vjp(g)), jax.tree.leaves(want_vjp(g))):
      np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_gradients_match_finite_differences_in_float64():
  rng = np.random.default_rng(2)
  with jax.enable_x64(True):
    z = jnp.asarray(rng.normal(size=(3, 4)) + 1.0)
    check_grads(norm_mlp.norm_mlp, (z, _params(4, 6, seed=3)), order=1, modes=['rev'])


def test_float32_matches_the_float64_chain():
  rng = np.random.default_rng(4)
  z64, g64 = rng.normal(size=(2, 6, 6, 8)) * 2 + 1, rng.normal(size=(2, 6, 6, 8))
  with jax.enable_x64(True):
    want, vjp = jax.vjp(_flax_chain, jnp.asarray(z64), _params(8, 32))
    want_grads = jax.tree.leaves(vjp(jnp.asarray(g64)))
  got, vjp = jax.jit(lambda z, p: jax.vjp(norm_mlp.norm_mlp, z, p))(jnp.asarray(z64, jnp.float32),
                                                                     _params(8, 32, dtype=np.float32))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(vjp(jnp.asarray(g64, jnp.float32))), want_grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_wrong_param_shapes_are_refused():
  p = _params(4, 8, dtype=np.float32)
  with pytest.raises(ValueError, match=r"params\['norm'\]\['scale'\] has shape \(4,\).*5 channels"):
    norm_mlp.norm_mlp(jnp.zeros((2, 5)), p)
  p['fc2']['kernel'] = jnp.zeros((7, 4))
  with pytest.raises(ValueError, match='fc2 kernel'):
    norm_mlp.norm_mlp(jnp.zeros((2, 4)), p)
