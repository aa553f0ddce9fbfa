"""srjax.checks: one message format (argument, value received, what is accepted) for every argument error."""
from __future__ import annotations

import numpy as np
import pytest

from srjax import checks


def test_one_of():
  assert checks.one_of('norm', 'L2', ('L2', 'Linf')) == 'L2'
  with pytest.raises(ValueError, match=r"^norm: got 'L3'; accepted: one of 'L2', 'Linf'$"):
    checks.one_of('norm', 'L3', ('L2', 'Linf'))


def test_in_range_open_and_closed_ends():
  assert checks.in_range('alpha', 0.0, 0.0, 1.0, high_open=True) == 0.0
  with pytest.raises(ValueError, match=r'^alpha: got 1.0; accepted: a number in \[0.0, 1.0\)$'):
    checks.in_range('alpha', 1.0, 0.0, 1.0, high_open=True)
  with pytest.raises(ValueError, match=r'sigma: got -0.1; accepted: a number in \[0, inf\)'):
    checks.in_range('sigma', -0.1, 0)
  with pytest.raises(ValueError, match='nan'):
    checks.in_range('sigma', float('nan'), 0)
  with pytest.raises(TypeError, match="eps: got 'big'"):
    checks.in_range('eps', 'big', 0)


def test_integer_and_arrays():
  assert checks.integer('draws', 3, 1) == 3
  with pytest.raises(ValueError, match=r'draws: got 0; accepted: an integer in \[1, inf\)'):
    checks.integer('draws', 0, 1)
  with pytest.raises(TypeError, match='draws: got 2.5'):
    checks.integer('draws', 2.5, 1)
  with pytest.raises(TypeError):
    checks.integer('draws', True, 1)
  checks.all_in_range('levels', np.linspace(0, 1, 5), 0, 1)
  with pytest.raises(ValueError, match=r'levels: got 1.5; accepted: finite values in \[0, 1\]'):
    checks.all_in_range('levels', [0.0, 1.5], 0, 1)
  with pytest.raises(ValueError, match='images: got an array of shape'):
    checks.fail('images', np.zeros((2, 3)), 'an [N, H, W, C] array')


def test_image_batch_names_a_channels_first_layout():
  assert checks.image_batch('x', np.zeros((2, 8, 8, 3))).shape == (2, 8, 8, 3)
  assert checks.image_batch('img', np.zeros((8, 8, 1)), single=True).shape == (8, 8, 1)
  with pytest.raises(ValueError, match=r'^img: got an array of shape \(3, 224, 224\); accepted: channels-last '
                     r'images \[H, W, C\] or \[B, H, W, C\]; this looks like channels-first \[C, H, W\]'):
    checks.image_batch('img', np.zeros((3, 224, 224)), single=True)
  with pytest.raises(ValueError, match=r'x: .*with C = 1; this looks like channels-first \[B, C, H, W\]'):
    checks.image_batch('x', np.zeros((2, 1, 16, 16)), channels=1)
  with pytest.raises(ValueError, match=r'x: got an array of shape \(2, 16, 16, 3\); accepted: .* with C = 1$'):
    checks.image_batch('x', np.zeros((2, 16, 16, 3)), channels=1)
  with pytest.raises(ValueError, match=r'x: got an array of shape \(8, 8, 3\); accepted: channels-last images '
                     r'\[B, H, W, C\]$'):
    checks.image_batch('x', np.zeros((8, 8, 3)))


def test_apply_fn_refuses_a_module():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  model = nn.Dense(3)
  assert checks.apply_fn('apply_fn', model.apply) == model.apply
  with pytest.raises(TypeError, match=r'^apply_fn: got a Flax module Dense; accepted: a function'):
    checks.apply_fn('apply_fn', model)
  with pytest.raises(TypeError, match=r"^f: got 3; accepted: a function"):
    checks.apply_fn('f', 3)


def test_image_batch_without_a_channel_count_flags_only_image_like_shapes():
  for shape in [(4, 4, 4, 2), (2, 3, 5, 7), (8, 8, 3)]:  # small or already channels-last arrays pass
    checks.image_batch('x', np.zeros(shape), single=True)
  with pytest.raises(ValueError, match='channels-first'):
    checks.image_batch('x', np.zeros((2, 3, 8, 8)))
