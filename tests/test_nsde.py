"""srjax.nsde: sigma = 0 is the ConvNeXt; zero drift gives variance sigma^2 T; diffrax == lax.scan; noise shapes."""
from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srjax import attribution, nsde
from srjax.models import convnext

MODEL = convnext.ConvNeXt(num_classes=3, depths=(2, 1), dims=(8, 16), stem_patch=2, layer_scale_init=1.0,
                          input_mean=0.5, input_std=0.25)
X = jax.random.uniform(jax.random.key(1), (3, 8, 8, 1))


@pytest.fixture(scope='module')
def variables():
  """The model's init plus N(0, 0.3) on every leaf: the default init's 0.02 kernels make blocks nearly
  inert, which would let a test pass with the blocks skipped."""
  params = jax.jit(MODEL.init)(jax.random.key(0), X)['params']
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(9), len(leaves))
  noisy = [a + 0.3 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
  return {'params': jax.tree.unflatten(tree, noisy)}


@functools.partial(jax.jit, static_argnames=('noise', 'solver', 'path'))
def _nsde(variables, x, key, noise_map=None, *, sigma, noise='brownian', solver='diffrax', path='folded'):
  # sigma is traced, so every sigma shares one compile per (noise, solver, path).
  return nsde.apply(MODEL, variables, x, key, sigma=sigma, noise=noise, noise_map=noise_map, solver=solver,
                    path=path)


def test_sigma_zero_is_the_convnext_with_the_same_params(variables):
  want = jax.jit(MODEL.apply)(variables, X)
  # With layer scale 1 the blocks matter: zeroing their gammas changes the logits.
  no_blocks = jax.tree_util.tree_map_with_path(
      lambda p, a: a * 0 if 'gamma' in jax.tree_util.keystr(p) else a, variables)
  assert float(jnp.max(jnp.abs(jax.jit(MODEL.apply)(no_blocks, X) - want))) > 1e-2
  for solver in nsde.SOLVERS:
    got = _nsde(variables, X, jax.random.key(5), sigma=0.0, solver=solver)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_diffrax_and_scan_solve_the_same_sde_and_noise_is_on(variables):
  key = jax.random.key(7)
  a = _nsde(variables, X, key, sigma=0.3)
  b = _nsde(variables, X, key, sigma=0.3, solver='scan')
  np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  assert float(jnp.max(jnp.abs(a - _nsde(variables, X, jax.random.key(8), sigma=0.3)))) > 1e-3
  # The attribution shape S multiplies the noise: S = 1 is the Brownian case, S = 0 removes the noise.
  ones = jnp.ones(X.shape[:3])
  np.testing.assert_allclose(_nsde(variables, X, key, ones, sigma=0.3, noise='attribution'), a, atol=1e-6)
  np.testing.assert_allclose(_nsde(variables, X, key, 0 * ones, sigma=0.3, noise='attribution'),
                             _nsde(variables, X, key, sigma=0.0), atol=1e-6)


@pytest.mark.parametrize('path, smoothing', [('folded', 0.0), ('tree', 0.0), ('folded', 1.5)])
def test_zero_drift_variance_is_sigma_squared_t(path, smoothing):
  """gamma = 0 makes every drift zero, so x_T = x_0 + sigma S W_T with Var = sigma^2 T for every shape."""
  c, depth, sigma = 4, 5, 0.7
  block = convnext.Block(layer_scale_init=0.0)
  params = block.init(jax.random.key(0), jnp.zeros((1, 4, 4, c)))['params']
  stacked = jax.tree.map(lambda a: jnp.stack([a] * depth), params)
  y0 = jnp.full((512, 8, 8, c), 3.0)

  @jax.jit
  def solve(key):
    return nsde.solve_stage(block, stacked, y0, key, sigma=sigma, shape=jnp.ones(()), rates=jnp.zeros(depth),
                            smoothing=smoothing, path=path)
  y = np.asarray(solve(jax.random.key(11))) - 3.0
  # Four standard errors; a blur of std s correlates ~pi s^2 (variance) / 4 pi s^2 (mean) neighbours.
  n = y.size
  assert abs(y.mean()) < 4 * sigma * np.sqrt(depth * (4 * np.pi * smoothing ** 2 + 1) / n)
  np.testing.assert_allclose(y.var(), sigma ** 2 * depth, rtol=4 * np.sqrt(2 * (np.pi * smoothing ** 2 + 1) / n))
  corr = np.mean(y[:, :-1] * y[:, 1:]) / y.var()     # neighbouring rows of the feature map
  if smoothing:
    assert corr > 0.5                                  # spatially correlated
  else:
    assert abs(corr) < 0.05


def test_predict_averages_the_softmax_over_draws():
  """`predict` is generic over apply_fn: checked on a cheap stochastic model against a Python loop."""
  def apply_fn(w, x, rng):
    return x.reshape(x.shape[0], -1)[:, :4] @ w + jax.random.normal(rng, (x.shape[0], 4))
  w = jax.random.normal(jax.random.key(2), (4, 4))
  key = jax.random.key(3)
  probs = jax.jit(nsde.Predict(apply_fn, draws=3))(w, X, key)
  chex.assert_shape(probs, (3, 4))
  want = np.mean([jax.nn.softmax(apply_fn(w, X, jax.random.fold_in(key, i)), -1) for i in range(3)], axis=0)
  np.testing.assert_allclose(probs, want, atol=1e-6)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
  assert float(jnp.max(jnp.abs(probs - jax.nn.softmax(apply_fn(w, X, key), -1)))) > 1e-3


def test_attribution_noise_map_is_mean_one_and_nonnegative():
  a = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  m = attribution.noise_map(a, normalize='mean')
  chex.assert_shape(m, (2, 8, 8, 1))
  assert float(m.min()) >= 0
  np.testing.assert_allclose(m.mean(axis=(1, 2, 3)), 1.0, rtol=1e-5)


def test_errors_name_the_argument(variables):
  key = jax.random.key(0)
  with pytest.raises(ValueError, match='sigma'):
    nsde.apply(MODEL, variables, X, key, sigma=-0.1)
  with pytest.raises(ValueError, match='noise'):
    nsde.apply(MODEL, variables, X, key, sigma=0.1, noise='pink')
  with pytest.raises(ValueError, match='solver'):
    nsde.apply(MODEL, variables, X, key, sigma=0.1, solver='rk4')
  with pytest.raises(ValueError, match='noise_map'):
    nsde.apply(MODEL, variables, X, key, sigma=0.1, noise='attribution')
  with pytest.raises(ValueError, match='noise_map'):
    nsde.apply(MODEL, variables, X, key, sigma=0.1, noise='attribution', noise_map=jnp.ones((3, 4, 4)))
  with pytest.raises(ValueError, match='sigma'):
    nsde.NSDEApply(MODEL, sigma=-1.0)


def test_attribution_noise_map_documented_call_feeds_nsde_apply(variables):
  """The call srjax.attribution.noise_map documents: IG attributions of x -> noise_map(a) -> nsde.apply's map."""
  target = jnp.zeros(X.shape[0], jnp.int32)
  a = attribution.integrated_gradients(jax.jit(MODEL.apply), variables, X, target, steps=4)
  m = attribution.noise_map(a)
  chex.assert_shape(m, X.shape[:3] + (1,))
  key = jax.random.key(7)
  shaped = _nsde(variables, X, key, m, sigma=0.3, noise='attribution')
  # sigma * S: doubling the map is doubling sigma, and a non-constant map is not the Brownian case.
  np.testing.assert_allclose(_nsde(variables, X, key, 2 * m, sigma=0.15, noise='attribution'), shaped, atol=1e-5)
  assert float(jnp.max(jnp.abs(shaped - _nsde(variables, X, key, sigma=0.3)))) > 1e-4
