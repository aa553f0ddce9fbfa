"""A hashable `apply_fn(variables, x)` bound to one method of a linen module (the library's apply_fn protocol).

Equal instances hash equal, so jitted library functions that take `apply_fn` as a static argument (`srjax.srt`)
share their compile cache across calls. The convention for the first argument is stated in `srjax.models`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax


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
