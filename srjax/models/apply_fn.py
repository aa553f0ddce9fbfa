"""A hashable `apply_fn(variables, x)` bound to one method of a linen module (the library's apply_fn protocol),
and `deterministic`, which puts a deterministic model behind the attacks' and attributions' one model protocol
`apply_fn(variables, x, key) -> logits` (the key is ignored).

Equal instances hash equal, so jitted library functions that take `apply_fn` as a static argument (`srjax.srt`)
share their compile cache across calls. The convention for the first argument is stated in `srjax.models`.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from srjax import checks


def as_variables(variables: Any) -> Any:
  """`{'params': tree}` for a bare params tree (a mapping without a top-level 'params' key), else unchanged."""
  if isinstance(variables, Mapping) and 'params' not in variables:
    return {'params': variables}
  return variables


@dataclasses.dataclass(frozen=True)
class ModuleApply:
  """`apply_fn(variables, x) = model.apply(as_variables(variables), x, *args, method=method, **kwargs)`.

  Attributes:
    model: the linen module.
    method: name of the module method to call; None calls `__call__`.
    args: extra static positional arguments after `x` (e.g. a stage index or an output stride).
    kwargs: extra static keyword arguments, as a tuple of (name, value) pairs (hashable).
    stride: the output stride (py, px) of a feature extractor, which `srjax.srt` checks the image against;
      None for apply_fns whose output is not a feature map (heads, classifiers).
  """
  model: nn.Module
  method: str | None = None
  args: tuple[Any, ...] = ()
  kwargs: tuple[tuple[str, Any], ...] = ()
  stride: tuple[int, int] | None = None

  def __call__(self, variables: Any, x: jax.Array) -> jax.Array:
    method = getattr(type(self.model), self.method) if self.method else None
    return self.model.apply(as_variables(variables), x, *self.args, method=method, **dict(self.kwargs))


@dataclasses.dataclass(frozen=True)
class Deterministic:
  """`apply_fn(variables, x, key) = fn(variables, x)`: a deterministic model behind the one model protocol of
  `srjax.attack` and `srjax.attribution`. The key is ignored (and may be omitted), and the library knows from
  this wrapper that draws are all equal: EOT and draws > 1 are refused, AutoAttack defaults to 'standard'.
  Hashable when `fn` is (a `ModuleApply`, a module-level function).
  """
  fn: Callable[[Any, jax.Array], jax.Array]

  def __call__(self, variables: Any, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
    del key
    return self.fn(variables, x)


def deterministic(fn: Callable[[Any, jax.Array], jax.Array]) -> Deterministic:
  """Wraps a deterministic `fn(variables, x) -> logits` as `apply_fn(variables, x, key)` (see `Deterministic`)."""
  return Deterministic(fn)


def takes_key(apply_fn: Callable[..., jax.Array]) -> bool:
  """False for a `Deterministic` model, True for any other apply_fn (its draws come from the key)."""
  return not isinstance(apply_fn, Deterministic)


def check_protocol(name: str, apply_fn: Callable[..., Any]) -> None:
  """Raises TypeError when `apply_fn` visibly takes only (variables, x): the one protocol is
  `apply_fn(variables, x, key)`, and a deterministic model is wrapped with `deterministic(f)`."""
  if isinstance(apply_fn, Deterministic):
    return
  try:
    params = list(inspect.signature(apply_fn).parameters.values())
  except (TypeError, ValueError):
    return   # no signature to read (a C function): the call itself will say
  positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
  if len(positional) == 2 and not any(p.kind == p.VAR_POSITIONAL for p in params):
    raise TypeError(f'{name}: got a function of (variables, x); accepted: apply_fn(variables, x, key) -> logits '
                    '(wrap a deterministic model once: srjax.models.apply_fn.deterministic(f))')


def check_call(apply_fn: Callable[..., Any], x: Any) -> jax.Array:
  """The checks every attack and attribution makes of its model and batch (one helper for both packages).

  `apply_fn` must be a function of (variables, x, key), not a Flax module or an unwrapped (variables, x)
  function; `x` a floating-point batch [B, ...] with at least 2 dimensions, channels-last when it is 4-D images
  [B, H, W, C] (any other rank, e.g. [B, D] features, is taken as it is).

  Returns:
    x as a jax array.

  Raises:
    TypeError: a module, an unwrapped (variables, x) function, or an integer x.
    ValueError: x with fewer than 2 dimensions, or a channels-first image batch.
  """
  checks.apply_fn('apply_fn', apply_fn, 'a function (params, x, key) -> logits, e.g. '
                  'srjax.models.apply_fn.deterministic(model.apply)')
  check_protocol('apply_fn', apply_fn)
  x = jnp.asarray(x)
  if x.ndim < 2:
    checks.fail('x', x, 'a batch [B, ...] with at least 2 dimensions')
  if x.ndim == 4:   # images: channels last, as every srjax model takes them
    checks.image_batch('x', x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    checks.fail('x', x.dtype, 'a floating-point array', error=TypeError)
  return x
