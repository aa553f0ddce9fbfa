"""ResNets (He et al. 2016) in Flax linen, with every stage's feature map and the head exposed for SRT.

Two families share one module, :class:`ResNet`:

* CIFAR-style ResNet-(6n+2) (:func:`cifar_resnet`, :func:`resnet20`, :func:`resnet32`, :func:`resnet56`):
  3x3 stem conv (16 ch) -> three stages of n basic blocks with 16/32/64 channels and strides 1/2/2 -> global
  average pool -> dense. Down-sampling shortcuts use the paper's option A (stride-2 subsampling and zero-padded
  channels, no parameters), so ResNet-20/32/56 have 0.27M/0.46M/0.85M parameters as in He et al. Table 6. These
  are the networks of the SRT paper's Appendix A.
* ImageNet-style ResNet-18 (:func:`resnet18`): 7x7/2 stem + 3x3/2 max-pool (or a 3x3/1 stem for small
  images, ``stem='cifar'``) -> four stages of two basic blocks, widths configurable (default 64..512), option B
  (1x1 conv + norm) projection shortcuts as in torchvision.

Normalisation: ``norm='batch'`` (default) is BatchNorm; the variables are ``{'params', 'batch_stats'}``, the
statistics are updated by ``apply(..., train=True, mutable=['batch_stats'])`` and used frozen when
``train=False`` (the shared training loop keeps ``batch_stats`` as its ``model_state``). ``norm='group'`` uses
GroupNorm (no state, variables ``{'params'}``), which makes features independent of the batch.

For SRT (paper Appendix A, "ensembling at the final layer before the prediction head"): :func:`features`
returns ``apply_fn(variables, x) -> [B, h, w, C]`` after any stage, :func:`head_fn` the pooled linear classifier
that maps a last-stage map to logits, so ``head(srt(features(last)))`` is SRT classification.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from srjax import checks
from srjax.models.apply_fn import ModuleApply

__all__ = ['ResNet', 'BasicBlock', 'cifar_resnet', 'resnet20', 'resnet32', 'resnet56', 'resnet18', 'features',
           'head_fn', 'classify_fn', 'feature_stride']

_NORMS = ('batch', 'group')
_STEMS = ('cifar', 'imagenet')
_SHORTCUTS = ('A', 'B')


class _Norm(nn.Module):
  """BatchNorm (running stats in ``batch_stats``) or GroupNorm, selected by ``kind``."""
  kind: str = 'batch'

  @nn.compact
  def __call__(self, x, train: bool):
    if self.kind == 'batch':
      return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
    groups = min(32, x.shape[-1])
    while x.shape[-1] % groups:
      groups -= 1
    return nn.GroupNorm(num_groups=groups, epsilon=1e-5)(x)


class BasicBlock(nn.Module):
  """Two 3x3 convs with a residual: ``relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))``."""
  features: int
  stride: int = 1
  norm: str = 'batch'
  shortcut: str = 'A'

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = lambda f, k, s, name: nn.Conv(f, (k, k), strides=s, padding=((k // 2, k // 2),) * 2, use_bias=False,
                                         kernel_init=nn.initializers.he_normal(), name=name)
    y = conv(self.features, 3, self.stride, 'conv1')(x)
    y = nn.relu(_Norm(self.norm, name='norm1')(y, train))
    y = conv(self.features, 3, 1, 'conv2')(y)
    y = _Norm(self.norm, name='norm2')(y, train)
    if self.stride != 1 or x.shape[-1] != self.features:
      if self.shortcut == 'A':  # He et al. option A: subsample, zero-pad the new channels; no parameters.
        x = x[:, ::self.stride, ::self.stride, :]
        pad = self.features - x.shape[-1]
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pad // 2, pad - pad // 2)))
      else:  # option B: 1x1 projection.
        x = conv(self.features, 1, self.stride, 'proj_conv')(x)
        x = _Norm(self.norm, name='proj_norm')(x, train)
    return nn.relu(y + x)


class ResNet(nn.Module):
  """A ResNet of basic blocks. ``__call__(x, train)`` maps NHWC images [B, H, W, C_in] to logits [B, classes].

  Attributes:
    stage_sizes: number of blocks per stage.
    widths: channels per stage (same length as ``stage_sizes``).
    num_classes: logits.
    stem: 'cifar' (3x3/1 conv, width ``stem_width``) or 'imagenet' (7x7/2 conv + 3x3/2 max-pool).
    stem_width: stem channels.
    norm: 'batch' or 'group'.
    shortcut: 'A' (parameter-free, CIFAR paper) or 'B' (1x1 projection).

  Methods usable with ``model.apply(variables, x, method=...)``:
    * ``backbone(x, stage=-1, train=False)``: the map after stage ``stage`` (0-based; -1 = last),
      [B, H/s, W/s, widths[stage]] with s = :func:`feature_stride`.
    * ``head(f)``: global average pool + dense, [B, h, w, widths[-1]] -> [B, num_classes].
  """
  stage_sizes: Sequence[int] = (3, 3, 3)
  widths: Sequence[int] = (16, 32, 64)
  num_classes: int = 10
  stem: str = 'cifar'
  stem_width: int = 16
  norm: str = 'batch'
  shortcut: str = 'A'

  def setup(self):
    if len(self.stage_sizes) != len(self.widths) or not self.stage_sizes:
      checks.fail('stage_sizes', tuple(self.stage_sizes), f'a non-empty sequence as long as widths {self.widths}')
    checks.one_of('norm', self.norm, _NORMS)
    checks.one_of('stem', self.stem, _STEMS)
    checks.one_of('shortcut', self.shortcut, _SHORTCUTS)
    k = 3 if self.stem == 'cifar' else 7
    self.stem_conv = nn.Conv(self.stem_width, (k, k), strides=1 if self.stem == 'cifar' else 2,
                             padding=((k // 2, k // 2),) * 2, use_bias=False,
                             kernel_init=nn.initializers.he_normal())
    self.stem_norm = _Norm(self.norm)
    blocks = []
    for i, (n, w) in enumerate(zip(self.stage_sizes, self.widths)):
      blocks.append([BasicBlock(w, (1 if i == 0 else 2) if j == 0 else 1, self.norm, self.shortcut)
                     for j in range(n)])
    self.stages = blocks
    self.fc = nn.Dense(self.num_classes)

  def backbone(self, x, stage: int = -1, train: bool = False):
    n = len(self.stage_sizes)
    checks.integer('stage', stage, -n, n - 1)
    stage %= n
    y = nn.relu(self.stem_norm(self.stem_conv(x), train))
    if self.stem == 'imagenet':
      y = nn.max_pool(y, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for blocks in self.stages[:stage + 1]:
      for block in blocks:
        y = block(y, train)
    return y

  def head(self, f):
    return self.fc(jnp.mean(f, axis=(1, 2)))

  def __call__(self, x, train: bool = False):
    return self.head(self.backbone(x, -1, train))


def cifar_resnet(depth: int = 20, num_classes: int = 10, width: int = 16, norm: str = 'batch') -> ResNet:
  """CIFAR ResNet-``depth`` (depth = 6n + 2): stages of n blocks with width, 2 width, 4 width channels."""
  if depth < 8 or (depth - 2) % 6:
    checks.fail('depth', depth, '6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, ...)')
  n = (depth - 2) // 6
  return ResNet((n, n, n), (width, 2 * width, 4 * width), num_classes, 'cifar', width, norm, 'A')


def resnet20(num_classes: int = 10, **kw) -> ResNet:
  """CIFAR ResNet-20 (He et al. Table 6; SRT paper Appendix A): ``cifar_resnet(20, num_classes, **kw)``."""
  return cifar_resnet(20, num_classes, **kw)


def resnet32(num_classes: int = 10, **kw) -> ResNet:
  """CIFAR ResNet-32: ``cifar_resnet(32, num_classes, **kw)``."""
  return cifar_resnet(32, num_classes, **kw)


def resnet56(num_classes: int = 10, **kw) -> ResNet:
  """CIFAR ResNet-56: ``cifar_resnet(56, num_classes, **kw)``."""
  return cifar_resnet(56, num_classes, **kw)


def resnet18(num_classes: int = 1000, widths: Sequence[int] = (64, 128, 256, 512), stem: str = 'imagenet',
             norm: str = 'batch') -> ResNet:
  """ResNet-18 (torchvision layout: option-B shortcuts); ``stem='cifar'`` keeps full resolution for small inputs."""
  return ResNet((2, 2, 2, 2), tuple(widths), num_classes, stem, widths[0], norm, 'B')


def feature_stride(model: ResNet, stage: int = -1) -> int:
  """Output stride of ``backbone(..., stage)``: 2^stage, times 4 for the ImageNet stem."""
  n = len(model.stage_sizes)
  checks.integer('stage', stage, -n, n - 1)
  return 2 ** (stage % n) * (4 if model.stem == 'imagenet' else 1)


def features(model: ResNet, stage: int = -1) -> ModuleApply:
  """``apply_fn(variables, x) -> [B, h, w, C]``: the inference-mode map after ``stage`` (for ``srjax.srt``).

  Args:
    model: the module.
    stage: 0-based stage index; -1 is the last stage, the map right before the head (Appendix A).

  Returns:
    A hashable ``apply_fn`` taking the variables dict (``{'params', 'batch_stats'}``, or ``{'params'}`` or the
    bare params tree for GroupNorm; see ``srjax.models``) and images [B, H, W, C_in]. It declares its output
    stride :func:`feature_stride` (``.stride``), which ``srjax.srt`` checks the image size against.

  Raises:
    TypeError: ``model`` is not a ResNet.
    ValueError: ``stage`` is out of range.
  """
  if not isinstance(model, ResNet):
    checks.fail('model', type(model).__name__, 'a srjax.models.resnet.ResNet', error=TypeError)
  n = len(model.stage_sizes)
  if isinstance(stage, bool) or not isinstance(stage, int) or not -n <= stage < n:
    checks.fail('stage', stage, f'an int in [{-n}, {n - 1}]')
  s = feature_stride(model, stage)
  return ModuleApply(model, 'backbone', (stage % n,), stride=(s, s))


def head_fn(model: ResNet) -> ModuleApply:
  """``apply_fn(variables, f) -> [B, num_classes]``: average pool + dense on a last-stage map f [B, h, w, C]."""
  return ModuleApply(model, 'head')


def classify_fn(model: ResNet) -> ModuleApply:
  """``apply_fn(variables, x) -> [B, num_classes]`` in inference mode."""
  return ModuleApply(model)
