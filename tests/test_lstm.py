"""srjax.models.lstm against a NumPy transcription of the Keras LSTM equations on random weights."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srjax.models import lstm
from srjax.models.apply_fn import ModuleApply

B, H, W, UNITS, T, K = 3, 4, 5, 6, 4, 7


def _np_gate(name):
  return {'sigmoid': lambda z: 1 / (1 + np.exp(-z)),
          'hard_sigmoid': lambda z: np.clip(0.2 * z + 0.5, 0, 1),          # Keras 2 / tf.keras
          'hard_sigmoid_keras3': lambda z: np.clip(z / 6 + 0.5, 0, 1)}[name]  # Keras 3: relu6(x + 3) / 6


def _keras_lstm_numpy(seq, kernel, recurrent, bias, head_w, head_b, gate):
  """Keras LSTMCell.call, implementation 2, i/f/c/o gate order, activation relu, written in NumPy."""
  h = np.zeros((seq.shape[0], recurrent.shape[0]))
  c = np.zeros_like(h)
  for t in range(seq.shape[1]):
    z = seq[:, t] @ kernel + h @ recurrent + bias
    zi, zf, zc, zo = np.split(z, 4, axis=-1)
    c = gate(zf) * c + gate(zi) * np.maximum(zc, 0)
    h = gate(zo) * np.maximum(c, 0)
  return h @ head_w + head_b


def _random_params(rng):
  d = H * W
  return {'kernel': rng.normal(0, 0.5, (d, 4 * UNITS)), 'bias': rng.normal(0, 0.5, (4 * UNITS,)),
          'cell': {'recurrent_kernel': rng.normal(0, 0.5, (UNITS, 4 * UNITS))},
          'head': {'kernel': rng.normal(0, 0.5, (UNITS, K)), 'bias': rng.normal(0, 0.5, (K,))}}


@pytest.mark.parametrize('gate', ['hard_sigmoid', 'sigmoid', 'hard_sigmoid_keras3'])
def test_matches_numpy_keras_equations(gate):
  rng = np.random.default_rng(0)
  params = _random_params(rng)
  model = lstm.LSTMClassifier(num_classes=K, units=UNITS, seq_len=T, gate_activation=gate)
  variables = {'params': jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)}
  seq = rng.uniform(0, 1, (B, T, H, W, 1))
  want = _keras_lstm_numpy(seq.reshape(B, T, -1), params['kernel'], params['cell']['recurrent_kernel'],
                           params['bias'], params['head']['kernel'], params['head']['bias'], _np_gate(gate))
  got = np.asarray(model.apply(variables, jnp.asarray(seq, jnp.float32)))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  # An image input is the same image at every one of the seq_len steps.
  image = seq[:, 0]
  want_image = _keras_lstm_numpy(np.repeat(image.reshape(B, 1, -1), T, axis=1), params['kernel'],
                                 params['cell']['recurrent_kernel'], params['bias'], params['head']['kernel'],
                                 params['head']['bias'], _np_gate(gate))
  np.testing.assert_allclose(np.asarray(model.apply(variables, jnp.asarray(image, jnp.float32))), want_image,
                             rtol=1e-4, atol=1e-4)


def test_hard_sigmoid_is_the_keras2_one_not_keras3():
  z = jnp.asarray([-3.0, -1.0, 0.0, 1.0, 3.0])
  np.testing.assert_allclose(lstm.GATE_ACTIVATIONS['hard_sigmoid'](z), [0.0, 0.3, 0.5, 0.7, 1.0], atol=1e-7)
  np.testing.assert_allclose(lstm.GATE_ACTIVATIONS['hard_sigmoid_keras3'](z), [0.0, 1 / 3, 0.5, 2 / 3, 1.0],
                             atol=1e-6)


def test_keras_initialisation_and_layout():
  model = lstm.LSTMClassifier(num_classes=K, units=UNITS, seq_len=T)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, H, W, 1)))['params']
  assert params['kernel'].shape == (H * W, 4 * UNITS)
  assert params['cell']['recurrent_kernel'].shape == (UNITS, 4 * UNITS)
  expected_bias = np.zeros(4 * UNITS)
  expected_bias[UNITS:2 * UNITS] = 1.0                      # unit_forget_bias: forget gate slice
  np.testing.assert_array_equal(params['bias'], expected_bias)
  r = np.asarray(params['cell']['recurrent_kernel'])
  np.testing.assert_allclose(r @ r.T, np.eye(UNITS), atol=1e-5)   # orthogonal rows (U < 4U)
  no_forget = lstm.LSTMClassifier(num_classes=K, units=UNITS, unit_forget_bias=False)
  assert not np.any(jax.jit(no_forget.init)(jax.random.key(0), jnp.zeros((1, H, W, 1)))['params']['bias'])


def test_time_loop_is_one_scan():
  model = lstm.LSTMClassifier(num_classes=K, units=UNITS, seq_len=T)
  variables = model.init(jax.random.key(0), jnp.zeros((1, H, W, 1)))
  jaxpr = str(jax.make_jaxpr(ModuleApply(model))(variables, jnp.zeros((2, T, H, W, 1))))
  assert jaxpr.count('scan[') == 1 and f'length={T}' in jaxpr


def test_bad_options():
  x = jnp.zeros((1, H, W, 1))
  with pytest.raises(ValueError, match='gate_activation'):
    lstm.LSTMClassifier(gate_activation='hard').init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='activation'):
    lstm.LSTMClassifier(activation='gelu').init(jax.random.key(0), x)
