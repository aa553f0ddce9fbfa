"""srjax.models.convnext in training mode: stochastic depth (deterministic=False, drop_path > 0) keeps the
expectation of each block and drops a block with its own rate."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from srjax.models import convnext


def _noisy(params, seed):
  """N(0, 0.3) added to every leaf, so that the blocks matter (the default init makes them nearly inert)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [a + 0.3 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])


def test_block_drop_path_keeps_the_expectation():
  """x + mask f(x) / keep with mask ~ Bernoulli(keep) per example: every draw is x or x + f(x) / keep, and the
  mean over K keys is the deterministic x + f(x) within 4 standard errors |f| sqrt((1 - keep) / keep / K)."""
  rate, k = 0.3, 1000
  block = convnext.Block(layer_scale_init=1.0, drop_path=rate)
  x = jax.random.normal(jax.random.key(0), (4, 4, 4, 8))
  params = _noisy(block.init(jax.random.key(1), x)['params'], 2)
  det = np.asarray(block.apply({'params': params}, x))                 # deterministic=True
  f = det - np.asarray(x)
  assert np.abs(f).max() > 0.1
  draws = np.asarray(jax.jit(jax.vmap(lambda r: block.apply({'params': params}, x, deterministic=False,
                                                            rngs={'drop_path': r})))(
      jax.random.split(jax.random.key(3), k)))
  kept = np.abs(draws - np.asarray(x)).max(axis=(2, 3, 4)) > 1e-6          # [K, B]
  want = np.where(kept[..., None, None, None], np.asarray(x) + f / (1 - rate), np.asarray(x))
  np.testing.assert_allclose(draws, want, atol=1e-5)
  assert np.all(np.abs(kept.mean(0) - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / k))
  bound = 4 * np.abs(f) * np.sqrt(rate / (1 - rate) / k) + 1e-5
  assert np.all(np.abs(draws.mean(0) - det) <= bound)


def test_convnext_trains_with_drop_path():
  """The whole network with deterministic=False and drop_path_rate > 0: draws differ, block rates rise linearly
  from 0, and with drop_path_rate = 0 training mode is the inference forward."""
  x = jax.random.uniform(jax.random.key(4), (3, 8, 8, 1))
  model = convnext.ConvNeXt(num_classes=3, depths=(1, 2), dims=(8, 16), stem_patch=2, layer_scale_init=1.0,
                            drop_path_rate=0.4)
  assert model.drop_rates() == [[0.0], [0.2, 0.4]]
  variables = {'params': _noisy(model.init(jax.random.key(5), x)['params'], 6)}
  apply = jax.jit(lambda v, r: model.apply(v, x, deterministic=False, rngs={'drop_path': r}))
  a, b = apply(variables, jax.random.key(7)), apply(variables, jax.random.key(8))
  assert np.all(np.isfinite(a)) and float(jnp.max(jnp.abs(a - b))) > 1e-3
  plain = model.clone(drop_path_rate=0.0)
  np.testing.assert_allclose(plain.apply(variables, x, deterministic=False, rngs={'drop_path': jax.random.key(7)}),
                             plain.apply(variables, x), atol=1e-6)
