"""ConvNeXt (Liu et al. 2022, "A ConvNet for the 2020s") in Flax linen, with timm's variants and weight layout.

Parameter tree (the contents of the `'params'` collection)::

  stem/{conv {kernel [p, p, C_in, C0], bias}, norm {scale, bias}}      patchify conv + LayerNorm
  stage{s}_down/{norm, conv {kernel [2, 2, C_{s-1}, C_s], bias}}       s >= 1: LayerNorm + 2x2 stride-2 conv
  stage{s}_block{j}/                                                   ConvNeXt block j of stage s
    dwconv {kernel [7, 7, 1, C], bias [C]}                             depthwise 7x7 (nn.Conv grouped layout)
    norm {scale, bias}                                                 LayerNorm, eps 1e-6
    fc1 {kernel [C, 4C], bias}, fc2 {kernel [4C, C], bias}             the inverted-bottleneck MLP, exact GELU
    gamma [C]                                                          layer scale
  head/{norm, fc}                                                      global mean pool, LayerNorm, Dense

A block computes x + drop_path(gamma * fc2(gelu(fc1(norm(dwconv(x)))))) (paper Fig. 4; timm `ConvNeXtBlock`); the
part after the depthwise conv runs as one function with a hand-written gradient (`srjax.models.norm_mlp`).
The depthwise conv and that branch each run as their own XLA computation (`srjax.models.isolate`), which made
the train step about a third faster on XLA:CPU than the same graph fused as a whole.
The stem is a p x p stride-p patchify conv (p = 4 in timm and the paper), computed like the 2 x 2 stride-2
downsampling convs as one matrix product over the patches (`patchify_conv`). For 64 x 64 spectrograms the default
here is p = 2 (`stem_patch=2`), so stage 0 sees a 32 x 32 map and the last stage a 4 x 4 map instead of 2 x 2;
p = 4 reproduces timm exactly (`params_from_timm` reads p from the weights).

The depthwise conv runs as k^2 shifted multiply-adds with a hand-written gradient (`depthwise='shift'`, the
default; `srjax.models.depthwise`) or as `nn.Conv(feature_group_count=C)` (`depthwise='conv'`); both use the same
kernel and give the same result. On XLA:CPU the shifted form's training step is several times faster than the
grouped conv's, in the plain network and inside the `scan`/`while` body of the neural-SDE solver (`srjax.nsde`);
`python -m eval.bench.nsde` measures both, and PyTorch on timm's blocks when it is installed.

Each part is also a standalone module (`Stem`, `Downsample`, `Block`, `Head`) so `srjax.nsde` can apply block j
of stage s with `Block(...).apply({'params': params[f'stage{s}_block{j}']}, x)` inside its solver.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from srjax import checks
from srjax.models import depthwise, norm_mlp

_TRUNC = nn.initializers.truncated_normal(0.02)   # timm's init of every conv and dense kernel

# timm's variants (timm/models/convnext.py): depths and widths per stage.
VARIANTS: dict[str, dict[str, tuple[int, ...]]] = {
    'atto': dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)),
    'femto': dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384)),
    'pico': dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512)),
    'nano': dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640)),
    'tiny': dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    'cpu': dict(depths=(1, 1, 2), dims=(24, 48, 96)),   # this library's small CPU variant (3 stages)
    'micro': dict(depths=(1, 1), dims=(8, 16)),         # for tests and smoke runs only
}
DEPTHWISE = ('shift', 'conv')
LN_EPS = 1e-6


def variant(name: str) -> dict[str, tuple[int, ...]]:
  """`depths` and `dims` of a named variant (a key of VARIANTS).

  Raises:
    ValueError: unknown name.
  """
  return dict(VARIANTS[checks.one_of('variant', name, VARIANTS)])


def depthwise_shift(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """'SAME' depthwise cross-correlation as k^2 shifted multiply-adds, with the hand-written gradient of
  `srjax.models.depthwise.depthwise_conv`.

  Args:
    x: [B, H, W, C].
    kernel: [k, k, 1, C] (k odd), the `nn.Conv(feature_group_count=C)` layout.
    bias: [C].

  Returns:
    [B, H, W, C], equal to the grouped conv with the same kernel.
  """
  return depthwise.depthwise_conv(x, kernel, bias)


class DepthwiseConv(nn.Module):
  """k x k depthwise conv with bias, params {kernel [k, k, 1, C], bias [C]}."""
  kernel_size: int = 7
  impl: str = 'shift'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c, k = x.shape[-1], self.kernel_size
    kernel = self.param('kernel', _TRUNC, (k, k, 1, c))
    bias = self.param('bias', nn.initializers.zeros, (c,))
    if self.impl == 'shift':
      return depthwise_shift(x, kernel, bias)
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                     feature_group_count=c)
    return y + bias


class _Params(nn.Module):
  """Declares a (weight, bias) pair under this module's name with the names, shapes and initialisers that
  `nn.LayerNorm` ('scale', 'bias') or `nn.Dense` ('kernel', 'bias') use, so a block whose branch runs the fused
  `srjax.models.norm_mlp` keeps the standard param tree and the same init draws. Returns {name: array}."""
  names: tuple[str, str]
  shape: tuple[int, ...]
  init: Callable[..., jax.Array]

  @nn.compact
  def __call__(self) -> dict[str, jax.Array]:
    weight = self.param(self.names[0], self.init, self.shape)
    bias = self.param(self.names[1], nn.initializers.zeros, self.shape[-1:])
    return {self.names[0]: weight, self.names[1]: bias}


def _dense(features: int, name: str) -> nn.Dense:
  return nn.Dense(features, kernel_init=_TRUNC, name=name)


class Block(nn.Module):
  """One ConvNeXt block: x + drop_path(gamma * MLP(LN(dwconv(x)))).

  Attributes:
    layer_scale_init: initial value of gamma (1e-6 in timm and the paper).
    drop_path: probability of dropping the residual branch per example (stochastic depth); needs the
      'drop_path' rng when `deterministic` is False.
    depthwise: 'shift' or 'conv' (see the module docstring).
  """
  layer_scale_init: float = 1e-6
  drop_path: float = 0.0
  depthwise: str = 'shift'

  def residual(self, x: jax.Array, deterministic: bool = True, rate: float | jax.Array | None = None) -> jax.Array:
    """The residual branch gamma * MLP(LN(dwconv(x))) without the skip, with stochastic depth in training.

    Args:
      x: [B, H, W, C].
      deterministic: True: no stochastic depth. False: each example's branch is dropped with probability
        `rate` and rescaled by 1 / (1 - rate) when kept (the expectation is the deterministic branch); needs the
        'drop_path' rng.
      rate: the drop probability; default `drop_path`. It may be traced (the NSDE's solver indexes its blocks'
        rates by the step).
    """
    y = self._branch(x)
    rate = self.drop_path if rate is None else rate
    if deterministic or (isinstance(rate, (int, float)) and rate <= 0.0):
      return y
    keep = 1.0 - rate
    mask = jax.random.bernoulli(self.make_rng('drop_path'), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return y * mask / keep

  @nn.compact
  def _branch(self, x):
    c = x.shape[-1]
    y = DepthwiseConv(7, self.depthwise, name='dwconv')(x)
    params = {'norm': _Params(('scale', 'bias'), (c,), nn.initializers.ones, name='norm')(),
              'fc1': _Params(('kernel', 'bias'), (c, 4 * c), _TRUNC, name='fc1')(),
              'fc2': _Params(('kernel', 'bias'), (4 * c, c), _TRUNC, name='fc2')(),
              'gamma': self.param('gamma', nn.initializers.constant(self.layer_scale_init), (c,))}
    return norm_mlp.norm_mlp(y, params, LN_EPS)

  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    return x + self.residual(x, deterministic)


def patchify_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """A p x p conv with stride p and no padding (non-overlapping patches), as one matrix product.

  Equals `nn.Conv(C_out, (p, p), (p, p), padding='VALID')` with the same kernel and bias for sides that are
  multiples of p. Written as reshape + transpose + matmul because XLA:CPU's strided convolution and its gradient
  cost more than the product of the [B * H/p * W/p, p * p * C_in] patches with the [p * p * C_in, C_out] kernel:
  the 'cpu' ConvNeXt's train step (stem and two downsampling layers) went from 30.3 to 28.5 ms (medians of 15
  interleaved rounds, batch 32 of 64 x 64, 2 cores, AVX-512).

  Args:
    x: [B, H, W, C_in], H and W multiples of p.
    kernel: [p, p, C_in, C_out] (flax's HWIO layout).
    bias: [C_out].

  Returns:
    [B, H/p, W/p, C_out].

  Raises:
    ValueError: a non-square kernel, a kernel whose C_in differs from x's, or sides that are not multiples of p.
  """
  p, q, c_in, c_out = kernel.shape
  b, h, w, c = x.shape
  if p != q or c_in != c:
    raise ValueError(f'patchify_conv: kernel {kernel.shape} for x {x.shape}; accepted: [p, p, {c}, C_out]')
  if h % p or w % p:
    raise ValueError(f'patchify_conv: x {x.shape} has sides that are not multiples of p = {p}; a VALID stride-p '
                     'conv would drop the last rows and columns')
  patches = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // p, w // p, p * p * c)
  return patches @ kernel.reshape(p * p * c, c_out) + bias


class PatchConv(nn.Module):
  """`patchify_conv` with nn.Conv's params: {kernel [p, p, C_in, features] (timm's init), bias [features]}."""
  features: int
  patch: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', _TRUNC, (self.patch, self.patch, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    return patchify_conv(x, kernel, bias)


class Stem(nn.Module):
  """p x p stride-p patchify conv, then LayerNorm."""
  dim: int
  patch: int

  @nn.compact
  def __call__(self, x):
    x = PatchConv(self.dim, self.patch, name='conv')(x)
    return nn.LayerNorm(epsilon=LN_EPS, name='norm')(x)


class Downsample(nn.Module):
  """LayerNorm, then a 2x2 stride-2 conv to `dim` channels."""
  dim: int

  @nn.compact
  def __call__(self, x):
    x = nn.LayerNorm(epsilon=LN_EPS, name='norm')(x)
    return PatchConv(self.dim, 2, name='conv')(x)


class Head(nn.Module):
  """Global mean pool over space, LayerNorm, Dense to the logits (timm's NormMlpClassifierHead)."""
  num_classes: int

  @nn.compact
  def __call__(self, x):
    x = nn.LayerNorm(epsilon=LN_EPS, name='norm')(x.mean(axis=(1, 2)))
    return _dense(self.num_classes, 'fc')(x)


class ConvNeXt(nn.Module):
  """ConvNeXt classifier.

  Attributes:
    num_classes: logits per example.
    depths: blocks per stage.
    dims: channels per stage.
    stem_patch: patchify size p of the stem (2 suits 64 x 64 inputs; timm uses 4).
    layer_scale_init: initial layer-scale gamma.
    drop_path_rate: stochastic-depth rate of the last block, linearly increasing from 0 over all blocks
      (timm's schedule).
    depthwise: 'shift' or 'conv'.
    input_mean, input_std: inputs are standardised as (x - input_mean) / input_std before the stem (timm
      models expect the data pipeline to do this; here it is part of the model, so attacks and attributions
      work in the [0, 1] input space). Spectrograms in [0, 1] with a large mean need it: a patchify conv of an
      offset input followed by LayerNorm is dominated by the offset, and training stalls.

  Call: `model.apply(variables, x, deterministic=True, advance=None)` with x [B, H, W, C_in] float32, H and W
  divisible by stem_patch * 2^(len(depths) - 1); returns [B, num_classes] float32 logits. Training with
  drop_path_rate > 0 and deterministic=False needs `rngs={'drop_path': key}`.

  `advance` is the hook for how a stage advances: None runs the residual blocks in turn; otherwise
  `advance(stage, blocks, params, x) -> x` gets the stage index, its unbound `Block`s (each with its own
  stochastic-depth rate), their params (a list, in order) and the stage input [B, h, w, C], and returns the
  stage output. `srjax.nsde` passes one that solves the stage's SDE. Only at apply time (init creates the
  params by running the blocks).

  References:
    Liu et al. 2022, Sec. 2 and Fig. 4; timm `ConvNeXt` (weights layout in `params_from_timm`).
  """
  num_classes: int
  depths: Sequence[int] = VARIANTS['cpu']['depths']
  dims: Sequence[int] = VARIANTS['cpu']['dims']
  stem_patch: int = 2
  layer_scale_init: float = 1e-6
  drop_path_rate: float = 0.0
  depthwise: str = 'shift'
  input_mean: float = 0.0
  input_std: float = 1.0

  def standardize(self, x: jax.Array) -> jax.Array:
    """(x - input_mean) / input_std, the first operation of the forward pass."""
    return (x - self.input_mean) / self.input_std

  def drop_rates(self) -> list[list[float]]:
    """Stochastic-depth rate of each block, per stage: linear from 0 to drop_path_rate (timm)."""
    total = sum(self.depths)
    rates = [self.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    out, i = [], 0
    for depth in self.depths:
      out.append(rates[i:i + depth])
      i += depth
    return out

  def input_multiple(self) -> int:
    """stem_patch * 2^(stages - 1): input sides must be multiples of it (the stem and the 2x2 stride-2
    downsampling convs are VALID, so any other size would lose its last rows and columns at some stage)."""
    return int(self.stem_patch) * 2 ** (len(self.depths) - 1)

  def check_input(self, shape: Sequence[int]) -> None:
    """Raises ValueError unless `shape` is [B, H, W, C] with H and W multiples of `input_multiple()`."""
    m = self.input_multiple()
    if len(shape) != 4 or shape[1] % m or shape[2] % m:
      checks.fail('x', tuple(shape), f'a channels-last batch [B, H, W, C] with H and W multiples of stem_patch * '
                  f'2^(stages - 1) = {m} (other sizes would be cropped by the VALID stem and downsampling convs)')

  def check(self) -> None:
    """Raises ValueError for a bad depthwise name or mismatched depths/dims."""
    checks.one_of('depthwise', self.depthwise, DEPTHWISE)
    if len(self.depths) != len(self.dims) or not self.depths or min(self.depths) < 1:
      checks.fail('depths', tuple(self.depths), f'one positive depth per stage ({len(self.dims)} dims)')
    checks.in_range('input_std', self.input_std, 0.0, low_open=True)

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True,
               advance: Callable[[int, list[Block], list[Any], jax.Array], jax.Array] | None = None) -> jax.Array:
    self.check()
    self.check_input(x.shape)
    x = Stem(self.dims[0], self.stem_patch, name='stem')(self.standardize(x))
    for s, rates in enumerate(self.drop_rates()):
      if s:
        x = Downsample(self.dims[s], name=f'stage{s}_down')(x)
      names = [f'stage{s}_block{j}' for j in range(len(rates))]
      if advance is None:
        for name, rate in zip(names, rates):
          x = Block(self.layer_scale_init, rate, self.depthwise, name=name)(x, deterministic)
      else:
        if self.is_initializing():
          checks.fail('advance', advance, 'None at init (the blocks create their params by running)')
        blocks = [Block(self.layer_scale_init, rate, self.depthwise, parent=None) for rate in rates]
        x = advance(s, blocks, [self.variables['params'][name] for name in names], x)
    return Head(self.num_classes, name='head')(x)


def build(name: str, num_classes: int, **overrides: Any) -> ConvNeXt:
  """A `ConvNeXt` of the named variant (atto, femto, pico, nano, tiny, or the small 'cpu' one).

  Args:
    name: a key of VARIANTS.
    num_classes: logits per example.
    **overrides: other `ConvNeXt` attributes (stem_patch, layer_scale_init, drop_path_rate, depthwise,
      input_mean, input_std).

  Raises:
    ValueError: unknown variant or depthwise implementation.
  """
  cfg = variant(name)
  if 'depthwise' in overrides:
    checks.one_of('depthwise', overrides['depthwise'], DEPTHWISE)
  return ConvNeXt(num_classes=num_classes, depths=cfg['depths'], dims=cfg['dims'], **overrides)


def config_from_timm(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """`ConvNeXt` keyword arguments read from the shapes of a timm ConvNeXt state dict."""
  sd = state_dict
  if 'stem.0.weight' not in sd:
    checks.fail('state_dict', sorted(sd)[:3], "a timm ConvNeXt state dict (with 'stem.0.weight')")
  n_stages = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r'stages\.(\d+)\.', k)))
  depths = tuple(1 + max(int(m.group(1)) for k in sd if (m := re.match(rf'stages\.{s}\.blocks\.(\d+)\.', k)))
                 for s in range(n_stages))
  dims = tuple(int(np.shape(sd[f'stages.{s}.blocks.0.conv_dw.weight'])[0]) for s in range(n_stages))
  return dict(num_classes=int(np.shape(sd['head.fc.weight'])[0]), depths=depths, dims=dims,
              stem_patch=int(np.shape(sd['stem.0.weight'])[-1]))


def params_from_timm(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Converts a timm ConvNeXt state dict (NumPy arrays) to the params of `ConvNeXt(**config_from_timm(sd))`.

  Keys: stem.0 (conv [C0, C_in, p, p]) and stem.1 (LayerNorm); stages.{s}.downsample.0 (LayerNorm) and .1
  (conv [C_s, C_{s-1}, 2, 2]) for s >= 1; stages.{s}.blocks.{j}.conv_dw ([C, 1, 7, 7]), .norm, .mlp.fc1,
  .mlp.fc2 (Linear [out, in], or 1x1 conv [out, in, 1, 1] in the conv_mlp variants atto..nano), .gamma;
  head.norm and head.fc. Conv weights [O, I, kh, kw] become [kh, kw, I, O] kernels and Linear weights [out, in]
  become [in, out]; the math is unchanged (timm uses LayerNorm eps 1e-6 and exact GELU, as `ConvNeXt` does).
  Any other key (a head MLP `head.pre_logits`, GRN of ConvNeXt-V2, a conv-stem) raises ValueError rather than
  being dropped.

  Args:
    state_dict: mapping from timm parameter names to arrays (convert tensors with `.numpy()` first).

  Returns:
    Nested dict of float32 NumPy arrays, the contents of the 'params' collection.

  Raises:
    ValueError: a key the model does not hold, or a missing one.

  References:
    timm `convnext.py` (ConvNeXtBlock, ConvNeXtStage, NormMlpClassifierHead).
  """
  sd = {k: np.asarray(v, dtype=np.float32) for k, v in state_dict.items()}
  cfg = config_from_timm(sd)
  used: set[str] = set()

  def take(key):
    if key not in sd:
      checks.fail('state_dict', key, 'a timm ConvNeXt state dict; this key is missing')
    used.add(key)
    return sd[key]

  def ln(prefix):
    return {'scale': take(f'{prefix}.weight'), 'bias': take(f'{prefix}.bias')}

  def conv(prefix):
    return {'kernel': take(f'{prefix}.weight').transpose(2, 3, 1, 0), 'bias': take(f'{prefix}.bias')}

  def linear(prefix):
    w = take(f'{prefix}.weight')
    return {'kernel': w.reshape(w.shape[0], w.shape[1]).T, 'bias': take(f'{prefix}.bias')}

  params: dict[str, Any] = {'stem': {'conv': conv('stem.0'), 'norm': ln('stem.1')}}
  for s, depth in enumerate(cfg['depths']):
    if s:
      params[f'stage{s}_down'] = {'norm': ln(f'stages.{s}.downsample.0'), 'conv': conv(f'stages.{s}.downsample.1')}
    for j in range(depth):
      b = f'stages.{s}.blocks.{j}'
      params[f'stage{s}_block{j}'] = {'dwconv': conv(f'{b}.conv_dw'), 'norm': ln(f'{b}.norm'),
                                      'fc1': linear(f'{b}.mlp.fc1'), 'fc2': linear(f'{b}.mlp.fc2'),
                                      'gamma': take(f'{b}.gamma')}
  params['head'] = {'norm': ln('head.norm'), 'fc': linear('head.fc')}
  unknown = sorted(set(sd) - used)
  if unknown:
    checks.fail('state_dict', unknown[:4], 'only the keys of a timm ConvNeXt (V1) that this model holds')
  return params


def from_timm(state_dict: Mapping[str, Any]) -> tuple[ConvNeXt, dict[str, Any]]:
  """A timm ConvNeXt state dict as (model, params): the twin of `srjax.models.vit.from_torch`.

  The architecture (depths, dims, stem patch, classes) is read from the shapes (`config_from_timm`) and the
  weights are converted by `params_from_timm`. The model standardises nothing (`input_mean=0`, `input_std=1`):
  like timm's, it expects inputs already normalised the way the weights were trained (ImageNet weights: RGB in
  [0, 1], minus mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225)), channels-last
  [B, H, W, C_in] with H and W multiples of stem_patch * 2^(stages - 1).

  Args:
    state_dict: mapping from timm parameter names to arrays.

  Returns:
    (`ConvNeXt`, params) where `model.apply({'params': params}, x)` gives timm's logits.

  Raises:
    ValueError: see `params_from_timm`.
  """
  return ConvNeXt(**config_from_timm(state_dict)), params_from_timm(state_dict)
