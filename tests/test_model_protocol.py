"""The one model protocol of `srjax.attack` and `srjax.attribution`: `apply_fn(variables, x, key) -> logits`, a
deterministic model wrapped once with `srjax.models.apply_fn.deterministic`."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srjax import attack, attribution
from srjax.models.apply_fn import Deterministic, deterministic, takes_key

X = jax.random.uniform(jax.random.key(0), (4, 2, 2, 1))
Y = jnp.zeros((4,), jnp.int32)
W = jax.random.normal(jax.random.key(1), (4, 3))


def two_args(w, x):
  return x.reshape(len(x), -1) @ w


def test_the_wrapper_ignores_the_key_is_hashable_and_marks_the_model():
  f = deterministic(two_args)
  np.testing.assert_array_equal(f(W, X, jax.random.key(3)), two_args(W, X))
  np.testing.assert_array_equal(f(W, X), two_args(W, X))
  assert f == Deterministic(two_args) and hash(f) == hash(deterministic(two_args))
  assert not takes_key(f) and takes_key(lambda w, x, key: two_args(w, x))


@pytest.mark.parametrize('call', [
    lambda f: attack.apgd(f, W, X, Y, eps=0.1, key=jax.random.key(0)),
    lambda f: attack.autoattack(f, W, X, Y, eps=0.1, key=jax.random.key(0)),
    lambda f: attack.square(f, W, X, Y, eps=0.1, key=jax.random.key(0)),
    lambda f: attribution.integrated_gradients(f, W, X, Y),
    lambda f: attribution.abc(f, W, X, key=jax.random.key(0)),
])
def test_an_unwrapped_two_argument_model_is_a_one_line_error_naming_the_wrapper(call):
  with pytest.raises(TypeError, match=r'^apply_fn: got a function of \(variables, x\); accepted: '
                     r'apply_fn\(variables, x, key\).*deterministic\(f\)'):
    call(two_args)


def test_draws_of_a_deterministic_model_are_refused_and_a_model_that_takes_a_key_needs_one():
  f = deterministic(two_args)
  with pytest.raises(ValueError, match='^eot: got 4; accepted: 1 for a deterministic model'):
    attack.apgd(f, W, X, Y, eps=0.1, key=jax.random.key(0), eot=4)
  with pytest.raises(ValueError, match='^draws: got 2; accepted: 1 for a deterministic model'):
    attribution.integrated_gradients(f, W, X, Y, draws=2)
  with pytest.raises(ValueError, match='^key: got None'):
    attribution.integrated_gradients(lambda w, x, key: two_args(w, x), W, X, Y)
