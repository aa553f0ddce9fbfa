"""srjax.models.convnext.patchify_conv: the stem's and the downsampling layers' p x p stride-p conv written as a
matrix product, against a float64 NumPy loop over the patches (values and the three gradients) and against
`lax.conv_general_dilated` (VALID, stride p) in float32; bad shapes raise."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srjax.models import convnext


def _reference(x, kernel, bias, g):
  """Float64 y[b, i, j] = bias + sum_{u, v, c} x[b, p i + u, p j + v, c] K[u, v, c, :] and the gradients of
  sum(y * g) wrt x, K and bias, by looping over the output positions."""
  p = kernel.shape[0]
  b, h, w, _ = x.shape
  y = np.zeros((b, h // p, w // p, kernel.shape[-1])) + bias
  dx = np.zeros_like(x)
  dk = np.zeros_like(kernel)
  for i in range(h // p):
    for j in range(w // p):
      patch = x[:, p * i:p * i + p, p * j:p * j + p]                      # [B, p, p, C_in]
      y[:, i, j] += np.einsum('buvc,uvco->bo', patch, kernel)
      dx[:, p * i:p * i + p, p * j:p * j + p] += np.einsum('bo,uvco->buvc', g[:, i, j], kernel)
      dk += np.einsum('buvc,bo->uvco', patch, g[:, i, j])
  return y, dx, dk, g.sum(axis=(0, 1, 2))


@pytest.mark.parametrize('p, shape, c_out', [(2, (2, 6, 8, 3), 5), (4, (3, 8, 4, 1), 6)])
def test_values_and_gradients_against_a_float64_loop(p, shape, c_out):
  rng = np.random.default_rng(p)
  x = rng.normal(size=shape)
  kernel = rng.normal(size=(p, p, shape[-1], c_out))
  bias = rng.normal(size=c_out)
  g = rng.normal(size=(shape[0], shape[1] // p, shape[2] // p, c_out))
  y_ref, dx_ref, dk_ref, db_ref = _reference(x, kernel, bias, g)
  with jax.enable_x64(True):
    y, vjp = jax.vjp(convnext.patchify_conv, jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(bias))
    grads = vjp(jnp.asarray(g))
  np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
  for got, want in zip(grads, (dx_ref, dk_ref, db_ref)):
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_equals_the_valid_strided_conv_in_float32():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(2, 2, 4, 6)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=6), jnp.float32)

  def conv(x, kernel, bias):
    return jax.lax.conv_general_dilated(x, kernel, (2, 2), 'VALID',
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + bias

  np.testing.assert_allclose(convnext.patchify_conv(x, kernel, bias), conv(x, kernel, bias), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda *a: (f(*a) ** 2).sum()
  for got, want in zip(jax.grad(loss(convnext.patchify_conv), (0, 1, 2))(x, kernel, bias),
                       jax.grad(loss(conv), (0, 1, 2))(x, kernel, bias)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_bad_shapes_raise():
  x = jnp.zeros((1, 8, 8, 3))
  with pytest.raises(ValueError, match='kernel'):
    convnext.patchify_conv(x, jnp.zeros((2, 2, 4, 5)), jnp.zeros(5))
  with pytest.raises(ValueError, match='kernel'):
    convnext.patchify_conv(x, jnp.zeros((2, 3, 3, 5)), jnp.zeros(5))
  with pytest.raises(ValueError, match='multiples of p'):
    convnext.patchify_conv(jnp.zeros((1, 6, 8, 3)), jnp.zeros((4, 4, 3, 5)), jnp.zeros(5))
