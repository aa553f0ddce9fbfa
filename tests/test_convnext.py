"""srjax.models.convnext: shifted depthwise conv == grouped conv; params_from_timm == a float64 NumPy forward."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from srjax.models import convnext


def test_shifted_depthwise_equals_grouped_conv():
  x = jax.random.normal(jax.random.key(0), (2, 9, 11, 5))
  kernel = jax.random.normal(jax.random.key(1), (7, 7, 1, 5))
  bias = jax.random.normal(jax.random.key(2), (5,))
  grouped = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                         feature_group_count=5) + bias
  variables = {'params': {'kernel': kernel, 'bias': bias}}
  both = jax.jit(lambda v, x: [convnext.DepthwiseConv(7, impl).apply(v, x) for impl in convnext.DEPTHWISE])
  for out in both(variables, x):
    np.testing.assert_allclose(out, grouped, atol=1e-5)


# --- a float64 NumPy forward of timm's ConvNeXt, written from the architecture (NCHW, torch conventions) ----------

def _conv(x, w, b, stride):
  """torch Conv2d, no padding: x [N, I, H, W], w [O, I, k, k]."""
  k = w.shape[-1]
  n, _, h, wd = x.shape
  oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
  out = np.zeros((n, w.shape[0], oh, ow))
  for i in range(k):
    for j in range(k):
      patch = x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
      out += np.einsum('nihw,oi->nohw', patch, w[:, :, i, j])
  return out + b[None, :, None, None]


def _dwconv(x, w, b):
  """torch depthwise Conv2d(k=7, padding=3, groups=C): w [C, 1, 7, 7]."""
  k = w.shape[-1]
  p = k // 2
  h, wd = x.shape[2], x.shape[3]
  xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
  out = np.zeros_like(x)
  for i in range(k):
    for j in range(k):
      out += xp[:, :, i:i + h, j:j + wd] * w[None, :, 0, i, j, None, None]
  return out + b[None, :, None, None]


def _ln_channels(x, g, b, axis):
  mu = x.mean(axis=axis, keepdims=True)
  var = ((x - mu) ** 2).mean(axis=axis, keepdims=True)
  shape = [1] * x.ndim
  shape[axis] = -1
  return (x - mu) / np.sqrt(var + 1e-6) * g.reshape(shape) + b.reshape(shape)


def _linear(x, w, b):
  return x @ w.reshape(w.shape[0], w.shape[1]).T + b


def _timm_forward(sd, x, depths):
  sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
  patch = sd['stem.0.weight'].shape[-1]
  y = _ln_channels(_conv(x, sd['stem.0.weight'], sd['stem.0.bias'], patch), sd['stem.1.weight'],
                   sd['stem.1.bias'], 1)
  for s, depth in enumerate(depths):
    if s:
      y = _ln_channels(y, sd[f'stages.{s}.downsample.0.weight'], sd[f'stages.{s}.downsample.0.bias'], 1)
      y = _conv(y, sd[f'stages.{s}.downsample.1.weight'], sd[f'stages.{s}.downsample.1.bias'], 2)
    for j in range(depth):
      p = f'stages.{s}.blocks.{j}'
      z = _dwconv(y, sd[f'{p}.conv_dw.weight'], sd[f'{p}.conv_dw.bias']).transpose(0, 2, 3, 1)   # NHWC
      z = _ln_channels(z, sd[f'{p}.norm.weight'], sd[f'{p}.norm.bias'], 3)
      z = _linear(z, sd[f'{p}.mlp.fc1.weight'], sd[f'{p}.mlp.fc1.bias'])
      z = 0.5 * z * (1 + erf(z / np.sqrt(2)))
      z = _linear(z, sd[f'{p}.mlp.fc2.weight'], sd[f'{p}.mlp.fc2.bias'])
      y = y + (z * sd[f'{p}.gamma']).transpose(0, 3, 1, 2)
  pooled = y.mean(axis=(2, 3))
  pooled = _ln_channels(pooled, sd['head.norm.weight'], sd['head.norm.bias'], 1)
  return _linear(pooled, sd['head.fc.weight'], sd['head.fc.bias'])


def _random_timm_state_dict(rng, depths, dims, patch, in_chans, num_classes):
  sd = {}
  r = lambda *shape, scale=0.3: rng.normal(0, scale, size=shape).astype(np.float32)
  sd['stem.0.weight'], sd['stem.0.bias'] = r(dims[0], in_chans, patch, patch), r(dims[0])
  sd['stem.1.weight'], sd['stem.1.bias'] = 1 + r(dims[0]), r(dims[0])
  for s, (depth, dim) in enumerate(zip(depths, dims)):
    if s:
      sd[f'stages.{s}.downsample.0.weight'], sd[f'stages.{s}.downsample.0.bias'] = 1 + r(dims[s - 1]), r(dims[s - 1])
      sd[f'stages.{s}.downsample.1.weight'] = r(dim, dims[s - 1], 2, 2)
      sd[f'stages.{s}.downsample.1.bias'] = r(dim)
    for j in range(depth):
      p = f'stages.{s}.blocks.{j}'
      sd[f'{p}.conv_dw.weight'], sd[f'{p}.conv_dw.bias'] = r(dim, 1, 7, 7), r(dim)
      sd[f'{p}.norm.weight'], sd[f'{p}.norm.bias'] = 1 + r(dim), r(dim)
      conv_mlp = s % 2 == 1        # atto..nano store the MLP as 1x1 convs: test both layouts
      extra = (1, 1) if conv_mlp else ()
      sd[f'{p}.mlp.fc1.weight'], sd[f'{p}.mlp.fc1.bias'] = r(4 * dim, dim, *extra), r(4 * dim)
      sd[f'{p}.mlp.fc2.weight'], sd[f'{p}.mlp.fc2.bias'] = r(dim, 4 * dim, *extra), r(dim)
      sd[f'{p}.gamma'] = rng.uniform(0.5, 1.5, size=dim).astype(np.float32)   # large: every block matters
  sd['head.norm.weight'], sd['head.norm.bias'] = 1 + r(dims[-1]), r(dims[-1])
  sd['head.fc.weight'], sd['head.fc.bias'] = r(num_classes, dims[-1]), r(num_classes)
  return sd


def test_params_from_timm_matches_a_float64_numpy_forward():
  rng = np.random.default_rng(0)
  depths, dims = (1, 2), (8, 16)
  sd = _random_timm_state_dict(rng, depths, dims, patch=4, in_chans=2, num_classes=5)
  x = rng.uniform(size=(2, 2, 16, 16))                                   # NCHW, as timm takes it
  want = _timm_forward(sd, x, depths)
  cfg = convnext.config_from_timm(sd)
  assert cfg == dict(num_classes=5, depths=depths, dims=dims, stem_patch=4)
  model = convnext.ConvNeXt(**cfg)
  params = convnext.params_from_timm(sd)
  got = jax.jit(model.apply)({'params': params}, jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32))
  chex.assert_shape(got, (2, 5))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
  # The converted tree is exactly the tree the model initialises.
  init = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 2)))['params']
  assert jax.tree.map(np.shape, init) == jax.tree.map(np.shape, params)


def test_params_from_timm_refuses_keys_it_does_not_model():
  sd = _random_timm_state_dict(np.random.default_rng(1), (1,), (8,), patch=4, in_chans=1, num_classes=3)
  sd['head.pre_logits.fc.weight'] = np.zeros((8, 8), np.float32)
  with pytest.raises(ValueError, match='state_dict'):
    convnext.params_from_timm(sd)
  del sd['head.pre_logits.fc.weight'], sd['stages.0.blocks.0.gamma']
  with pytest.raises(ValueError, match='gamma'):
    convnext.params_from_timm(sd)


def test_variants_and_errors():
  assert convnext.variant('atto') == {'depths': (2, 2, 6, 2), 'dims': (40, 80, 160, 320)}
  assert convnext.variant('tiny') == {'depths': (3, 3, 9, 3), 'dims': (96, 192, 384, 768)}
  assert convnext.build('nano', 4).dims == (80, 160, 320, 640)
  with pytest.raises(ValueError, match='variant'):
    convnext.build('huge', 4)
  with pytest.raises(ValueError, match='depthwise'):
    convnext.build('cpu', 4, depthwise='fft')


def test_the_stage_hook_sees_each_stage_once_and_the_plain_hook_is_the_forward():
  """`advance` gets every stage in order with its unbound blocks (their own drop rates) and params; a hook that
  runs the blocks in turn reproduces the default forward, and a hook that skips the blocks gives the network
  without them. At init the hook is refused (the blocks create their params by running)."""
  model = convnext.ConvNeXt(num_classes=3, depths=(2, 1), dims=(8, 16), stem_patch=2, layer_scale_init=1.0,
                            drop_path_rate=0.5)
  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
  variables = model.init(jax.random.key(1), x)
  seen = []

  def plain(s, blocks, params, y):
    seen.append((s, [b.drop_path for b in blocks], len(params)))
    for block, p in zip(blocks, params):
      y = block.apply({'params': p}, y)
    return y
  np.testing.assert_allclose(model.apply(variables, x, advance=plain), model.apply(variables, x), atol=1e-6)
  assert seen == [(0, [0.0, 0.25], 2), (1, [0.5], 1)]
  skipped = model.apply(variables, x, advance=lambda s, blocks, params, y: y)
  no_blocks = jax.tree_util.tree_map_with_path(
      lambda p, a: a * 0 if 'gamma' in jax.tree_util.keystr(p) else a, variables)
  np.testing.assert_allclose(skipped, model.apply(no_blocks, x), atol=1e-6)
  assert float(jnp.max(jnp.abs(skipped - model.apply(variables, x)))) > 1e-3
  with pytest.raises(ValueError, match='^advance: '):
    model.init(jax.random.key(1), x, advance=plain)


def test_the_convnext_equals_its_blocks_run_one_by_one_through_the_hook():
  # The test above compares values; this one adds the gradients. The hook applies each block with Block.apply
  # (the same isolated parts), so it pins the stage wiring: the block order, the params each block gets, and the
  # skip connections.
  model = convnext.ConvNeXt(depths=(2, 2), dims=(8, 16), num_classes=3, stem_patch=2, layer_scale_init=0.5)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  params = model.init(jax.random.key(1), x)['params']

  def by_hook(s, blocks, ps, y):
    for block, p in zip(blocks, ps):
      y = y + block.apply({'params': p}, y, method=convnext.Block.residual)
    return y

  loss = lambda advance: lambda p: jnp.sum(model.apply({'params': p}, x, advance=advance) ** 2)
  v0, g0 = jax.value_and_grad(loss(None))(params)
  v1, g1 = jax.value_and_grad(loss(by_hook))(params)
  np.testing.assert_allclose(v0, v1, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
