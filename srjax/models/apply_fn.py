"""A hashable `apply_fn(variables, x)` bound to one method of a linen module (the library's apply_fn protocol).

Equal instances hash equal, so jitted library functions that take `apply_fn` as a static argument (`srjax.srt`)
share their compile cache across calls.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax


@dataclasses.dataclass(frozen=True)
class ModuleApply:
  """`apply_fn(variables, x) = model.apply(variables, x, *args, method=method)`.

  Attributes:
    model: the linen module.
    method: name of the module method to call; None calls `__call__`.
    args: extra static positional arguments after `x` (e.g. a stage index or an output stride).
  """
  model: nn.Module
  method: str | None = None
  args: tuple[Any, ...] = ()

  def __call__(self, variables: Any, x: jax.Array) -> jax.Array:
    method = getattr(type(self.model), self.method) if self.method else None
    return self.model.apply(variables, x, *self.args, method=method)
