"""Noise injection into one layer of an unmodified `srjax.models.resnet.ResNet` or `srjax.models.vit.ViT`.

The model code is not touched: `apply` runs `model.apply` under `flax.linen.intercept_methods`, and the
interceptor rewrites the input of one submodule, found by its stable name:

* ResNet: the input of a `BasicBlock` named `stages_{i}_{j}` (stage i, block j). The default is the last block of
  the last stage, where the authors' code injects ("the last micro sublayer of the last macro layer", Sec. 4).
* ViT: the input of the `MultiHeadDotProductAttention` of block `encoderblock_{i}`, i.e. the tokens after the
  block's first LayerNorm (norm1). The class token is left untouched and only the patch tokens are perturbed, as
  in the authors' ViT code. The default is the last block.

`Noise.axis` picks where the linear-transform kinds mix: 'batch' (the paper: samples of the batch, so each
prediction depends on the other samples) or 'sample' (flattened spatial positions of a ResNet map, patch tokens of
a ViT: within one sample, no leak). Gaussian noise is per entry and salt-and-pepper per sample either way.

The key is an explicit argument; the same key gives the same result.

References:
  Positive noise (NoisyNN), Sec. 4 (where the noise is injected), Sec. 4.3 and Fig. 2 (layer ablation).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from srjax import checks
from srjax import noise as noise_lib
from srjax.models import resnet, vit

__all__ = ['AXES', 'Noise', 'layers', 'default_layer', 'apply', 'NoisyApply']

AXES = ('batch', 'sample')
DEFAULT = 'default'


@dataclasses.dataclass(frozen=True)
class Noise:
  """What to inject and where (hashable, so it can be a static argument of a jitted function).

  Attributes:
    kind: one of `srjax.noise.KINDS` ('none', 'gaussian', 'linear', 'optimal', 'salt_and_pepper').
    strength: Gaussian std; alpha of 'linear' (Eq. 17) and 'salt_and_pepper' (Eq. 18), in [0, 1); weight of
      'optimal' (Eq. 19) in [0, 1]. 0 injects nothing.
    layer: a name from `layers(model)`, or 'default' (the authors' place, `default_layer(model)`).
    axis: 'batch' or 'sample' (see the module docstring).
  """
  kind: str = 'linear'
  strength: float = 0.4
  layer: str = DEFAULT
  axis: str = 'batch'

  def __post_init__(self):
    noise_lib.check_strength(self.kind, self.strength)
    checks.one_of('axis', self.axis, AXES)
    if not isinstance(self.layer, str):
      checks.fail('layer', self.layer, "a layer name (str) or 'default'", error=TypeError)

  @property
  def active(self) -> bool:
    return self.kind != 'none'


def _check_model(model: Any) -> None:
  if not isinstance(model, (resnet.ResNet, vit.ViT)):
    checks.fail('model', type(model).__name__, 'a srjax.models.resnet.ResNet or srjax.models.vit.ViT',
                error=TypeError)


def layers(model: Any) -> tuple[str, ...]:
  """The layer names a `Noise` can target, in forward order.

  Returns:
    ResNet: ('stages_0_0', ..., 'stages_{S-1}_{n-1}'), the inputs of its basic blocks; ViT:
    ('encoderblock_0', ..., 'encoderblock_{depth-1}'), the inputs of their attention (after norm1).
  """
  _check_model(model)
  if isinstance(model, resnet.ResNet):
    return tuple(f'stages_{i}_{j}' for i, n in enumerate(model.stage_sizes) for j in range(n))
  return tuple(f'encoderblock_{i}' for i in range(model.depth))


def default_layer(model: Any) -> str:
  """The authors' injection place: the last ResNet block of the last stage, or the last ViT block."""
  return layers(model)[-1]


def resolve_layer(model: Any, layer: str) -> str:
  """`layer`, with 'default' replaced by `default_layer(model)`.

  Raises:
    ValueError: `layer` is not one of `layers(model)` (the message lists them).
  """
  if layer == DEFAULT:
    return default_layer(model)
  return checks.one_of('layer', layer, layers(model))


def _perturb_tokens(key, x: jax.Array, spec: Noise, per_sample_axis: bool) -> jax.Array:
  """Perturbs x [B, ...] with the sample-axis variant mixing along the flattened non-channel axes."""
  if not per_sample_axis or spec.kind in ('gaussian', 'salt_and_pepper', 'none'):
    return noise_lib.perturb(key, x, spec.kind, spec.strength, axis=0)
  b, c = x.shape[0], x.shape[-1]
  flat = x.reshape(b, -1, c)
  if flat.shape[1] < 2:
    checks.fail('axis', spec.axis, f"'batch': the layer's input {tuple(x.shape)} has a single position to mix")
  return noise_lib.perturb(key, flat, spec.kind, spec.strength, axis=1).reshape(x.shape)


def _interceptor(model: Any, spec: Noise, key: jax.Array | None, hits: list[str]):
  layer = resolve_layer(model, spec.layer)
  per_sample = spec.axis == 'sample'
  is_resnet = isinstance(model, resnet.ResNet)

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != '__call__' or not args:
      return next_fun(*args, **kwargs)
    path = module.path
    if is_resnet:
      match = isinstance(module, resnet.BasicBlock) and path and path[-1] == layer
    else:
      match = (isinstance(module, nn.MultiHeadDotProductAttention) and len(path) >= 2 and path[-2] == layer)
    if not match:
      return next_fun(*args, **kwargs)
    hits.append(layer)
    x = args[0]
    if is_resnet:
      y = _perturb_tokens(key, x, spec, per_sample)
    else:  # tokens [B, 1 + N, D]: the class token stays, the patch tokens get the noise.
      y = jnp.concatenate([x[:, :1], _perturb_tokens(key, x[:, 1:], spec, per_sample)], axis=1)
    new_args = tuple(y if a is x else a for a in args)
    new_kwargs = {k: (y if v is x else v) for k, v in kwargs.items()}
    return next_fun(*new_args, **new_kwargs)

  return intercept


def apply(model: Any, variables: Any, x: jax.Array, *args: Any, noise: Noise, key: jax.Array | None = None,
          method: Any = None, **kwargs: Any) -> Any:
  """`model.apply(variables, x, *args, method=method, **kwargs)` with `noise` injected into its layer.

  Args:
    model: a ResNet or ViT.
    variables: the Flax variables dict ({'params'} or {'params', 'batch_stats'}).
    x: images [B, H, W, C_in] float32 (the batch axis is the one 'batch' noise mixes).
    *args: further positional arguments of the method.
    noise: the `Noise` to inject; kind 'none' (or strength 0) gives exactly `model.apply`.
    key: PRNG key, required by 'gaussian' and 'salt_and_pepper' (called `rng` before; renamed to the
      library's one name for a PRNG argument).
    method: as in `model.apply`.
    **kwargs: as in `model.apply` (`train=True`, `mutable=[...]`, ...).

  Returns:
    What `model.apply` returns.

  Raises:
    ValueError: `noise.layer` is not a layer of `model` (the message lists the layers), or the call never reaches
      that layer (e.g. a `backbone(stage=...)` that stops before it); a 'sample'-axis mix at a layer with a
      single position.
    TypeError: a random kind without `key`, or a model that is neither a ResNet nor a ViT.

  References:
    Positive noise (NoisyNN), Sec. 4 and Sec. 4.3.
  """
  _check_model(model)
  if not isinstance(noise, Noise):
    checks.fail('noise', noise, 'a srjax.inject.Noise', error=TypeError)
  resolve_layer(model, noise.layer)
  if not noise.active:
    return model.apply(variables, x, *args, method=method, **kwargs)
  if noise.kind in ('gaussian', 'salt_and_pepper') and key is None:
    checks.fail('key', key, f'a PRNG key (kind {noise.kind!r} is random)', error=TypeError)
  hits: list[str] = []
  with nn.intercept_methods(_interceptor(model, noise, key, hits)):
    out = model.apply(variables, x, *args, method=method, **kwargs)
  if not hits:
    checks.fail('noise.layer', noise.layer, 'a layer this call runs through (the method stopped before it)')
  return out


@dataclasses.dataclass(frozen=True)
class NoisyApply:
  """Hashable `apply_fn(variables, x, key) -> y`: `apply(model, variables, x, *args, noise=noise, key=key,
  method=method)` in inference mode.

  Attributes:
    model: a ResNet or ViT.
    noise: the `Noise`.
    method: name of the module method (None: `__call__`, logits).
    args: extra static positional arguments after x.
  """
  model: Any
  noise: Noise
  method: str | None = None
  args: tuple[Any, ...] = ()

  def __call__(self, variables: Any, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
    method = getattr(type(self.model), self.method) if self.method else None
    return apply(self.model, variables, x, *self.args, noise=self.noise, key=key, method=method)
