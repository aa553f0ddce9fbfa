"""Tests for srjax.models.efficientnet: ImageNet predictions on bundled photos (an independent truth), the layout
conversion against a NumPy convolution with the raw PyTorch weights, and the exposed feature maps / head."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data

from srjax.models import efficientnet, torch_pickle


@pytest.fixture(scope='module')
def torch_sd():
  with open(efficientnet.pretrained_path(), 'rb') as f:
    return torch_pickle.load_state_dict(f)


@pytest.fixture(scope='module')
def variables(torch_sd):
  return efficientnet.from_torch_state_dict(torch_sd)


def test_load_pretrained_returns_model_and_variables_like_every_loader(torch_sd, variables):
  model, loaded = efficientnet.load_pretrained()
  assert isinstance(model, efficientnet.EfficientNetLite0) and model.num_classes == 1000
  assert sorted(loaded) == ['batch_stats', 'params']
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)


@pytest.fixture(scope='module')
def photos():
  """chelsea (a tabby cat) and coffee (a cup of espresso), preprocessed to [2, 224, 224, 3]."""
  imgs = [skimage.data.chelsea() / 255.0, skimage.data.coffee() / 255.0]
  return jnp.concatenate([efficientnet.preprocess(i) for i in imgs])


@pytest.fixture(scope='module')
def forward(variables, photos):
  """One 224x224 forward pass returning the logits and the stride 8/16/32 maps (computed once)."""
  model = efficientnet.EfficientNetLite0()

  def run(v, x):
    f8 = model.apply(v, x, 8, method=efficientnet.EfficientNetLite0.backbone)
    f16 = model.apply(v, x, 16, method=efficientnet.EfficientNetLite0.backbone)
    f32 = efficientnet.features(model, 32)(v, x)
    return efficientnet.classify_fn(model)(v, x), f8, f16, f32, efficientnet.head_fn(model)(v, f32)
  return jax.device_get(jax.jit(run)(variables, photos))


def test_imagenet_predictions_on_bundled_photos(forward):
  logits = forward[0]
  chex.assert_shape(logits, (2, 1000))
  probs = jax.nn.softmax(logits)
  cat, coffee = np.argmax(logits, -1)
  # ImageNet: 281 tabby, 282 tiger cat, 283 Persian, 284 Siamese, 285 Egyptian cat.
  assert 281 <= cat <= 285, cat
  assert probs[0, 281:286].sum() > 0.5
  # 967 espresso, 968 cup, 504 coffee mug.
  assert coffee in (967, 968, 504), coffee
  assert probs[1, [967, 968, 504]].sum() > 0.5


def test_feature_maps_and_head(forward):
  logits, f8, f16, f32, head_logits = forward
  chex.assert_shape(f8, (2, 28, 28, 40))
  chex.assert_shape(f16, (2, 14, 14, 112))
  chex.assert_shape(f32, (2, 7, 7, 1280))
  assert f32.min() >= 0.0 and f32.max() <= 6.0  # after ReLU6
  np.testing.assert_allclose(head_logits, logits, rtol=1e-5, atol=1e-4)  # head(features) == full model


def _numpy_conv_same(x_nchw, w_oihw, stride, groups=1):
  """Brute-force TF-'SAME' convolution in PyTorch layout (extra padding goes bottom/right)."""
  n, c, h, w = x_nchw.shape
  o, ci, kh, kw = w_oihw.shape
  oh, ow = -(-h // stride), -(-w // stride)
  ph, pw = max((oh - 1) * stride + kh - h, 0), max((ow - 1) * stride + kw - w, 0)
  xp = np.pad(x_nchw, ((0, 0), (0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))
  out = np.zeros((n, o, oh, ow))
  per = o // groups
  for oc in range(o):
    g = oc // per
    for i in range(oh):
      for j in range(ow):
        patch = xp[:, g * ci:(g + 1) * ci, i * stride:i * stride + kh, j * stride:j * stride + kw]
        out[:, oc, i, j] = np.sum(patch * w_oihw[oc], axis=(1, 2, 3))
  return out


def test_layout_conversion_matches_numpy_with_raw_torch_weights(torch_sd, variables):
  """Stem conv (3x3/2) + BN + ReLU6, then block 0's depthwise 3x3 + BN, in NCHW NumPy with OIHW weights."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 8, 6, 3)).astype(np.float32)  # even sizes: asymmetric 'SAME' padding matters

  def bn(y, prefix):
    g, b, m, v = (torch_sd[f'{prefix}.{s}'][None, :, None, None]
                  for s in ('weight', 'bias', 'running_mean', 'running_var'))
    return (y - m) / np.sqrt(v + 1e-3) * g + b

  ref = np.clip(bn(_numpy_conv_same(x.transpose(0, 3, 1, 2), torch_sd['_conv_stem.weight'], 2), '_bn0'), 0, 6)
  ref_dw = bn(_numpy_conv_same(ref, torch_sd['_blocks.0._depthwise_conv.weight'], 1, groups=32), '_blocks.0._bn1')

  v = variables
  model = efficientnet.EfficientNetLite0()
  stem = model.apply(v, jnp.asarray(x), method=lambda m, x: jnp.clip(
      m.stem_bn(m.stem_conv(x), use_running_average=True), 0, 6))
  np.testing.assert_allclose(np.asarray(stem).transpose(0, 3, 1, 2), ref, rtol=1e-4, atol=1e-4)
  # Block 0 = depthwise + BN + ReLU6 -> 1x1 project + BN (no expansion, no residual: 32 -> 16 channels).
  proj = np.einsum('nchw,oc->nohw', np.clip(ref_dw, 0, 6), torch_sd['_blocks.0._project_conv.weight'][:, :, 0, 0])
  ref_block0 = bn(proj, '_blocks.0._bn2')
  got = model.apply(v, jnp.asarray(x), method=lambda m, x: m.blocks[0](
      jnp.clip(m.stem_bn(m.stem_conv(x), use_running_average=True), 0, 6)))
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), ref_block0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('impl', ['shifted', 'conv'])
@pytest.mark.parametrize('size,k,stride', [((7, 8), 5, 2), ((6, 5), 3, 2), ((5, 6), 5, 1)])
def test_depthwise_conv_matches_numpy(impl, size, k, stride):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2,) + size + (3,)).astype(np.float32)
  kernel = rng.normal(size=(k, k, 1, 3)).astype(np.float32)
  conv = efficientnet.DepthwiseConv(k, stride, impl)
  got = conv.apply({'params': {'kernel': jnp.asarray(kernel)}}, jnp.asarray(x))
  ref = _numpy_conv_same(x.transpose(0, 3, 1, 2), kernel.transpose(3, 2, 0, 1), stride, groups=3)
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), ref, rtol=1e-5, atol=1e-5)


def test_conversion_rejects_wrong_state_dicts(torch_sd):
  missing = dict(torch_sd)
  del missing['_blocks.3._depthwise_conv.weight']
  with pytest.raises(ValueError, match='_blocks.3._depthwise_conv.weight'):
    efficientnet.from_torch_state_dict(missing)
  extra = dict(torch_sd, **{'_blocks.3._se_reduce.weight': np.zeros((4, 40, 1, 1), np.float32)})
  with pytest.raises(ValueError, match='_se_reduce'):
    efficientnet.from_torch_state_dict(extra)
  wrong = dict(torch_sd, **{'_fc.weight': np.zeros((10, 1280), np.float32), '_fc.bias': np.zeros(10, np.float32)})
  with pytest.raises(ValueError, match='shapes'):
    efficientnet.from_torch_state_dict(wrong)


def test_argument_validation():
  model = efficientnet.EfficientNetLite0()
  with pytest.raises(ValueError, match='stride: got 64; accepted: one of'):
    efficientnet.features(model, 64)
  with pytest.raises(ValueError, match="depthwise: got 'fft'; accepted: one of"):
    efficientnet.EfficientNetLite0(depthwise='fft').init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match=r'images01: got .*\[H, W, 3\]'):
    efficientnet.preprocess(jnp.zeros((5, 5)))
