"""srjax.models.block_loop: the loop's values and gradients equal the Python loop's under automatic
differentiation (float64), finite differences agree, and bad `stacked` / `y` raise."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from srjax.models import block_loop


def _block(p, y):
  """A residual block whose gradient depends on the order of the blocks and on each block's input."""
  return y + jnp.tanh(y @ p['w'] + p['b']) * p['s']


def _params(depth, d, seed, dtype=jnp.float64):
  rng = np.random.default_rng(seed)
  return [{'w': jnp.asarray(rng.normal(size=(d, d)), dtype), 'b': jnp.asarray(rng.normal(size=(d,)), dtype),
           's': jnp.asarray(rng.normal(), dtype)} for _ in range(depth)]


def _python_loop(params, y):
  for p in params:
    y = _block(p, y)
  return y


@pytest.mark.parametrize('depth', [1, 3])
def test_values_and_gradients_equal_the_python_loop(depth):
  with jax.enable_x64(True):
    params = _params(depth, 5, depth)
    y = jnp.asarray(np.random.default_rng(9).normal(size=(4, 5)), jnp.float64)
    cot = jnp.asarray(np.random.default_rng(10).normal(size=(4, 5)), jnp.float64)

    def ref(params, y):
      return jnp.sum(_python_loop(params, y) * cot)

    def got(params, y):
      return jnp.sum(block_loop.block_loop(_block, block_loop.stack(params), y) * cot)

    np.testing.assert_allclose(jax.jit(got)(params, y), ref(params, y), rtol=1e-12)
    (g_p, g_y), (r_p, r_y) = jax.jit(jax.grad(got, (0, 1)))(params, y), jax.grad(ref, (0, 1))(params, y)
    np.testing.assert_allclose(g_y, r_y, rtol=1e-10, atol=1e-12)
    for k in range(depth):   # each block's own gradient, in its own slot
      for name in ('w', 'b', 's'):
        np.testing.assert_allclose(g_p[k][name], r_p[k][name], rtol=1e-10, atol=1e-12)


def test_finite_differences_and_vmap():
  with jax.enable_x64(True):
    stacked = block_loop.stack(_params(2, 3, 4))
    y = jnp.asarray(np.random.default_rng(5).normal(size=(2, 3)), jnp.float64)
    check_grads(lambda s, y: block_loop.block_loop(_block, s, y), (stacked, y), order=1, modes=('rev',))
    batched = jax.vmap(lambda y: block_loop.block_loop(_block, stacked, y))(jnp.stack([y, 2 * y]))
    np.testing.assert_allclose(batched[1], _python_loop(_params(2, 3, 4), 2 * y), rtol=1e-12)


def test_bad_inputs_raise():
  stacked = block_loop.stack(_params(2, 3, 0, jnp.float32))
  y = jnp.ones((2, 3))
  with pytest.raises(ValueError, match='leading axis'):
    block_loop.block_loop(_block, {'w': jnp.ones((2, 3, 3)), 'b': jnp.ones((3, 3))}, y)
  with pytest.raises(ValueError, match='leading axis'):
    block_loop.block_loop(_block, {}, y)
  with pytest.raises(ValueError, match='leading axis'):
    block_loop.block_loop(_block, {'w': jnp.ones((0, 3, 3))}, y)
  with pytest.raises(TypeError, match='floating-point'):
    block_loop.block_loop(_block, stacked, jnp.ones((2, 3), jnp.int32))


def test_convnext_stages_run_as_loops_with_the_python_loops_gradients():
  """The ConvNeXt (deterministic) runs each stage through block_loop; its loss and gradients equal those of the
  same blocks run one after another through the model's `advance` hook (a plain Python loop)."""
  from srjax.models import convnext   # pylint: disable=g-import-not-at-top
  model = convnext.ConvNeXt(num_classes=4, depths=(1, 2), dims=(8, 16), stem_patch=2, layer_scale_init=0.5)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 8, 8, 1)), jnp.float32)
  params = model.init(jax.random.key(0), x)['params']

  def unrolled(s, blocks, stage_params, y):
    del s
    for block, p in zip(blocks, stage_params):
      y = block.apply({'params': p}, y)
    return y

  def loss(params, advance):
    return jnp.sum(jnp.sin(model.apply({'params': params}, x, advance=advance)))

  got = jax.jit(jax.value_and_grad(lambda p: loss(p, None)))(params)
  ref = jax.jit(jax.value_and_grad(lambda p: loss(p, unrolled)))(params)
  np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)
  for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(got[1]), jax.tree.leaves(ref[1])):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path))
