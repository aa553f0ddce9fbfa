"""Argument checks at the public boundary, with one message format for every error.

Every message names the argument, the value received and what is accepted:

  >>> checks.one_of('norm', 'L3', ('L2', 'Linf'))
  ValueError: norm: got 'L3'; accepted: one of 'L2', 'Linf'

The library, the training loop and the configs all raise through these helpers, so a user sees the same shape of
message wherever a value is refused. Each helper returns the value it checked, so it can be used inline.
"""
from __future__ import annotations

import numbers
from typing import Any, Iterable, NoReturn, TypeVar

T = TypeVar('T')


def fail(name: str, value: Any, accepted: str, *, error: type[Exception] = ValueError) -> NoReturn:
  """Raises `error` with the one message format: '<name>: got <value!r>; accepted: <accepted>'."""
  raise error(f'{name}: got {_show(value)}; accepted: {accepted}')


def _show(value: Any) -> str:
  shape = getattr(value, 'shape', None)
  if shape is not None and len(shape) > 0:
    return f'an array of shape {tuple(shape)}'
  return repr(value)


def one_of(name: str, value: T, options: Iterable[Any]) -> T:
  """Checks that `value` is one of `options` (compared with ==); returns it.

  Raises:
    ValueError: '<name>: got <value>; accepted: one of <options>'.
  """
  options = tuple(options)
  if value not in options:
    fail(name, value, 'one of ' + ', '.join(repr(o) for o in options))
  return value


def in_range(name: str, value: T, low: float | None = None, high: float | None = None, *,
             low_open: bool = False, high_open: bool = False) -> T:
  """Checks low <= value <= high (strict on an open side; None means unbounded); returns `value`.

  Raises:
    TypeError: `value` is not a real number.
    ValueError: '<name>: got <value>; accepted: a number in [low, high]' (with the interval's own brackets).
  """
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    fail(name, value, 'a real number', error=TypeError)
  below = low is not None and (value <= low if low_open else value < low)
  above = high is not None and (value >= high if high_open else value > high)
  if below or above or value != value:  # value != value: NaN
    fail(name, value, 'a number in ' + interval(low, high, low_open=low_open, high_open=high_open))
  return value


def integer(name: str, value: T, low: int | None = None, high: int | None = None) -> T:
  """Checks that `value` is an integer (not a bool) with low <= value <= high; returns it.

  Raises:
    TypeError: `value` is not an integer.
    ValueError: it is out of range.
  """
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    fail(name, value, 'an integer', error=TypeError)
  if (low is not None and value < low) or (high is not None and value > high):
    fail(name, value, 'an integer in ' + interval(low, high))
  return value


def all_in_range(name: str, values: Any, low: float | None = None, high: float | None = None) -> Any:
  """Checks that every element of the array-like `values` is finite and in [low, high]; returns `values`.

  Raises:
    ValueError: '<name>: got <the offending element>; accepted: values in [low, high]'.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  arr = np.asarray(values, dtype=np.float64)
  bad = ~np.isfinite(arr)
  if low is not None:
    bad |= arr < low
  if high is not None:
    bad |= arr > high
  if bad.any():
    fail(name, float(arr[bad].flat[0]), 'finite values in ' + interval(low, high))
  return values


def interval(low: float | None, high: float | None, *, low_open: bool = False, high_open: bool = False) -> str:
  """'[0, 1)', '(0, inf)', ... for messages."""
  left = '(' if low_open or low is None else '['
  right = ')' if high_open or high is None else ']'
  return f'{left}{"-inf" if low is None else low}, {"inf" if high is None else high}{right}'


# Channel counts images commonly have (grey, RGB, RGBA): an axis of this size in the wrong place is a layout hint.
_CHANNEL_COUNTS = (1, 3, 4)
_MIN_SIDE = 8  # without a known channel count, only axes at least this long count as image sides


def image_batch(name: str, x: Any, channels: int | None = None, *, single: bool = False) -> Any:
  """Checks that `x` is channels-last images, [B, H, W, C] (or [H, W, C] too when `single`); returns `x`.

  A channels-first array gets a message that says so. With `channels` (e.g. read from the model's parameters) the
  last axis must equal it; without, an array whose last axis is not a usual channel count (1, 3 or 4) but whose
  third-from-last is, followed by two axes of at least 8 (image sides), is taken for channels-first.

  Args:
    name: the argument's name, for the message.
    x: the array (anything with `shape`).
    channels: the channel count the model expects, or None when it is unknown.
    single: whether one image [H, W, C] is accepted besides a batch.

  Raises:
    ValueError: a wrong rank, a channels-first layout, or a channel count other than `channels`, e.g.
      'img: got an array of shape (3, 224, 224); accepted: channels-last images [H, W, C] or [B, H, W, C];
      this looks like channels-first [C, H, W] (move the axis: jnp.moveaxis(img, -3, -1))'.
  """
  shape = tuple(getattr(x, 'shape', ()))
  ranks = (3, 4) if single else (4,)
  layout = '[H, W, C] or [B, H, W, C]' if single else '[B, H, W, C]'
  accepted = f'channels-last images {layout}' + ('' if channels is None else f' with C = {channels}')
  if len(shape) not in ranks:
    fail(name, x, accepted)
  first, last = shape[-3], shape[-1]
  if channels is not None:
    looks_first = last != channels and first == channels
  else:  # a usual channel count before two image-sized axes (>= 8), and none last
    looks_first = (first in _CHANNEL_COUNTS and last not in _CHANNEL_COUNTS
                   and min(shape[-2], last) >= _MIN_SIDE)
  if looks_first:
    seen = '[C, H, W]' if len(shape) == 3 else '[B, C, H, W]'
    fail(name, x, f'{accepted}; this looks like channels-first {seen} (move the axis: '
         f'jnp.moveaxis({name}, -3, -1))')
  if channels is not None and last != channels:
    fail(name, x, accepted)
  return x


def apply_fn(name: str, fn: Any, accepted: str = 'a function (variables, x) -> y') -> Any:
  """Checks that `fn` is a callable function and not a Flax module (whose call needs bound variables); returns it.

  Raises:
    TypeError: 'apply_fn: got a Flax module ViT(...); accepted: a function (variables, x) -> y, e.g. model.apply
      or srjax.models.vit.features(model)', or a value that is not callable.
  """
  module_types = []
  try:
    from flax import linen  # pylint: disable=g-import-not-at-top
    module_types.append(linen.Module)
    from flax import nnx  # pylint: disable=g-import-not-at-top
    module_types.append(nnx.Module)
  except ImportError:
    pass
  if module_types and isinstance(fn, tuple(module_types)):
    raise TypeError(f'{name}: got a Flax module {type(fn).__name__}; accepted: {accepted}, e.g. '
                    f'model.apply, or a feature function such as srjax.models.vit.features(model)')
  if not callable(fn):
    fail(name, fn, accepted, error=TypeError)
  return fn
