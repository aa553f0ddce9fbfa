"""srjax.models.depthwise: the custom-gradient depthwise conv against a float64 NumPy reference (values and the
three gradients, derived by scattering rather than by the flipped kernel), finite differences in float64, and
the grouped `lax.conv_general_dilated` in float32."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from srjax.models import depthwise


def _reference(x, kernel, bias, g):
  """Float64 forward y and the gradients of sum(y * g) wrt x, kernel [k, k, C], bias, by direct loops."""
  k = kernel.shape[0]
  p = k // 2
  _, h, w, _ = x.shape
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  y = np.zeros_like(x) + bias
  dxp = np.zeros_like(xp)
  dk = np.zeros_like(kernel)
  for i in range(k):
    for j in range(k):
      y += xp[:, i:i + h, j:j + w] * kernel[i, j]
      dxp[:, i:i + h, j:j + w] += g * kernel[i, j]        # each input pixel gets the output cotangents it fed
      dk[i, j] = (xp[:, i:i + h, j:j + w] * g).sum(axis=(0, 1, 2))
  return y, dxp[:, p:p + h, p:p + w], dk, g.sum(axis=(0, 1, 2))


def _data(shape, k, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape)
  kernel = rng.normal(size=(k, k, shape[-1]))
  bias = rng.normal(size=shape[-1])
  g = rng.normal(size=shape)
  return x, kernel, bias, g


@pytest.mark.parametrize('shape,k', [((2, 9, 11, 5), 7), ((3, 4, 5, 2), 7), ((2, 6, 6, 3), 3), ((2, 7, 7, 3), 7),
                                     ((2, 7, 8, 3), 7)])
def test_values_and_gradients_match_a_float64_reference(shape, k):
  # (3, 4, 5, 2) with k = 7: the kernel is larger than the image, every shift reaches the zero padding.
  # Maps with H * W <= k^2 take the dense form: (3, 4, 5, 2) and (2, 7, 7, 3) (the boundary); (2, 7, 8, 3) is
  # the first shifted one.
  x, kernel, bias, g = _data(shape, k)
  want_y, want_dx, want_dk, want_db = _reference(x, kernel, bias, g)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  y, vjp = jax.vjp(depthwise.depthwise_conv, f32(x), f32(kernel[:, :, None, :]), f32(bias))
  dx, dk, db = vjp(f32(g))
  assert dk.shape == (k, k, 1, shape[-1])
  np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dk[:, :, 0], want_dk, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(db, want_db, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('shape', [(2, 5, 6, 3), (2, 3, 4, 2)])   # shifted form, dense form (k = 5)
def test_gradients_match_finite_differences_in_float64(shape):
  x, kernel, bias, _ = _data(shape, 5, seed=1)
  with jax.enable_x64(True):
    check_grads(depthwise.depthwise_conv, (jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(bias)), order=1,
                modes=['rev'])


@pytest.mark.parametrize('shape', [(2, 8, 7, 4), (2, 4, 4, 4)])   # shifted form, dense form
def test_equals_the_grouped_conv_in_values_and_gradients(shape):
  x, kernel, bias, g = (jnp.asarray(a, jnp.float32) for a in _data(shape, 7, seed=2))
  kernel = kernel[:, :, None, :]

  def grouped(x, kernel, bias):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                        feature_group_count=x.shape[-1]) + bias

  both = jax.jit(lambda *a: [jax.vjp(f, *a)[1](g) + (f(*a),) for f in (depthwise.depthwise_conv, grouped)])
  got, want = both(x, kernel, bias)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5)


def test_tap_matrix_counts_the_taps_inside_the_map():
  # Output position p sees the taps whose input falls inside the map: for a 3 x 4 map under a 5 x 5 kernel the
  # corner (0, 0) sees rows 0..2 and columns 0..2 (9 taps), the position (1, 1) rows 0..2 and columns 0..3 (12).
  e = depthwise.tap_matrix(3, 4, 5).reshape(12, 12, 25)
  assert set(np.unique(e)) <= {0.0, 1.0}
  assert e[0].sum() == 9 and e[1 * 4 + 1].sum() == 12
  assert e.sum(axis=2).max() == 1          # each (output, input) pair is one tap at most
  # tap (i, j) = (2, 2) is the centre: the identity between output and input positions
  np.testing.assert_array_equal(e[:, :, 2 * 5 + 2], np.eye(12))
