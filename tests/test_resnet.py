"""Tests for srjax.models.resnet: parameter counts against the published closed forms, feature-map shapes and
strides, head(features) == model, option-A shortcuts against NumPy, BatchNorm state and GroupNorm independence."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srjax.models import resnet


def _np_init(model, x, seed=0):
  """Variables with the model's structure filled from NumPy (no jitted initializer: keeps compile time low)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)

  def fill(path, a):
    name = jax.tree_util.keystr(path)
    if 'kernel' in name:
      return jnp.asarray(rng.normal(size=a.shape) / np.sqrt(np.prod(a.shape[:-1])), jnp.float32)
    if 'scale' in name or "'var'" in name:
      return jnp.ones(a.shape, jnp.float32)
    return jnp.zeros(a.shape, jnp.float32)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _cifar_params_closed_form(n: int, classes: int = 10) -> int:
  """He et al. (2016) Sec. 4.2 network with option-A shortcuts, conv without bias, BN scale + bias."""
  conv = lambda cin, cout: 9 * cin * cout + 2 * cout
  total = conv(3, 16)
  for cin, cout in ((16, 16), (16, 32), (32, 64)):
    total += conv(cin, cout) + conv(cout, cout) + (n - 1) * 2 * conv(cout, cout)
  return total + 64 * classes + classes


@pytest.mark.parametrize('depth,published', [(20, 0.27e6), (32, 0.46e6), (56, 0.85e6)])
def test_cifar_parameter_counts(depth, published):
  v = jax.eval_shape(resnet.cifar_resnet(depth).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  n = _count(v['params'])
  assert n == _cifar_params_closed_form((depth - 2) // 6)
  assert abs(n - published) < 0.005e6  # He et al. Table 6: 0.27M, 0.46M, 0.85M


def test_resnet18_parameter_count():
  v = jax.eval_shape(resnet.resnet18().init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  assert _count(v['params']) == 11_689_512  # torchvision resnet18 (1000 classes)


@pytest.fixture(scope='module')
def small_cifar():
  model = resnet.cifar_resnet(8, num_classes=5, width=4)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 12, 12, 2)), jnp.float32)
  v = _np_init(model, x)
  # Make the running statistics non-trivial so inference-mode BN is not the identity.
  _, state = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(v, 2.0 * x + 1.0)
  return model, {'params': v['params'], **state}, x


def test_feature_maps_and_head(small_cifar):
  model, v, x = small_cifar
  shapes = [(3, 12, 12, 4), (3, 6, 6, 8), (3, 3, 3, 16)]
  for stage, shape in enumerate(shapes):
    f = resnet.features(model, stage)(v, x)
    chex.assert_shape(f, shape)
    assert resnet.feature_stride(model, stage) == 12 // shape[1]
  f = resnet.features(model)(v, x)
  np.testing.assert_allclose(resnet.head_fn(model)(v, f), resnet.classify_fn(model)(v, x), rtol=1e-6, atol=1e-6)
  # The head is global average pooling then the dense layer.
  fc = v['params']['fc']
  np.testing.assert_allclose(resnet.head_fn(model)(v, f), f.mean((1, 2)) @ fc['kernel'] + fc['bias'],
                             rtol=1e-5, atol=1e-6)


def test_imagenet_stem_stride():
  model = resnet.resnet18(num_classes=3, widths=(4, 8, 8, 8))
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  v = jax.eval_shape(model.init, jax.random.key(0), x)
  chex.assert_shape(jax.eval_shape(resnet.features(model, 0), v, x), (1, 16, 16, 4))
  chex.assert_shape(jax.eval_shape(resnet.features(model, -1), v, x), (1, 2, 2, 8))
  assert resnet.feature_stride(model, 0) == 4 and resnet.feature_stride(model, 3) == 32


def test_option_a_shortcut_matches_numpy():
  """With both convs zeroed the block reduces to relu(bias + shortcut(x)); option A = subsample + zero-pad."""
  block = resnet.BasicBlock(features=6, stride=2, norm='group')
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5, 5, 2)), jnp.float32)
  v = jax.tree_util.tree_map_with_path(
      lambda p, a: jnp.zeros_like(a) if 'kernel' in jax.tree_util.keystr(p) else a, _np_init(block, x))
  xs = np.asarray(x)[:, ::2, ::2, :]
  ref = np.maximum(np.pad(xs, ((0, 0), (0, 0), (0, 0), (2, 2))), 0.0)  # norm of zeros = its bias = 0
  np.testing.assert_allclose(block.apply(v, x), ref, atol=1e-6)


def test_batchnorm_state_and_group_norm_batch_independence(small_cifar):
  model, v, x = small_cifar
  assert set(v) == {'params', 'batch_stats'}
  _, new = model.apply(v, x, train=True, mutable=['batch_stats'])
  diff = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), v['batch_stats'], new['batch_stats'])
  assert max(jax.tree_util.tree_leaves(diff)) > 0  # training mode updates the running statistics
  # Inference mode uses the stored statistics: each example's logits ignore the rest of the batch.
  full = model.apply(v, x)
  np.testing.assert_allclose(model.apply(v, x[:1]), full[:1], rtol=1e-5, atol=1e-6)
  gmodel = resnet.cifar_resnet(8, num_classes=5, width=4, norm='group')
  gv = _np_init(gmodel, x)
  assert set(gv) == {'params'}
  np.testing.assert_allclose(gmodel.apply(gv, x[1:2], train=True), gmodel.apply(gv, x, train=True)[1:2],
                             rtol=1e-5, atol=1e-6)


def test_argument_validation():
  with pytest.raises(ValueError, match=r'depth: got 21; accepted: 6n \+ 2'):
    resnet.cifar_resnet(21)
  model = resnet.resnet20()
  with pytest.raises(ValueError, match=r'stage: got 3; accepted: an int in \[-3, 2\]'):
    resnet.features(model, 3)
  with pytest.raises(ValueError, match=r'stage: got -4; accepted: an integer in \[-3, 2\]'):
    resnet.feature_stride(model, -4)
  with pytest.raises(ValueError, match="norm: got 'layer'; accepted: one of"):
    resnet.ResNet(norm='layer').init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
