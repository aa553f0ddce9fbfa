"""The LSTM classifier of the SR-in-classifiers paper, with Keras's LSTM equations and parameter layout.

Each timestep sees the whole flattened image: the image is presented `seq_len` times (rows are not timesteps).
The paper's model is `LSTM(20, activation='relu', unit_forget_bias=True) -> Dense(11, softmax)` (arXiv
2502.14442, Sec. 2; the authors' Keras notebook).

Keras LSTM equations (gate order i, f, c, o in the fused kernels, as Keras stores them):

    z_t = x_t @ kernel + h_{t-1} @ recurrent_kernel + bias          # [B, 4U]
    i = g(z_i),  f = g(z_f),  o = g(z_o)                             # g: the gate ("recurrent") activation
    c_t = f * c_{t-1} + i * a(z_c),   h_t = o * a(c_t)               # a: the cell activation (ReLU here)

with h_0 = c_0 = 0 and the classifier's logits `Dense(h_T)`. Initialisation as Keras: kernel Glorot-uniform,
recurrent_kernel orthogonal, bias zeros with the forget slice set to 1 when `unit_forget_bias`, and the Dense
head Glorot-uniform. Parameter names: `kernel` [D, 4U], `bias` [4U], `cell/recurrent_kernel` [U, 4U] and
`head/kernel`, `head/bias`, so Keras weights (`layer.get_weights()` = kernel, recurrent_kernel, bias) load by name.

Gate activations (`gate_activation`):
  * 'sigmoid': the logistic function. The default of `keras.layers.LSTM(recurrent_activation=...)` since
    TensorFlow 2.0 / Keras 2.3, so what the authors' notebook (which does not set it) ran with.
  * 'hard_sigmoid': Keras 2's (tf.keras up to TF 2.15) `clip(0.2 * x + 0.5, 0, 1)`; it was the LSTM default in
    Keras 1 and TF 1.x.
  * 'hard_sigmoid_keras3': Keras 3's `relu6(x + 3) / 6` (slope 1/6, = `jax.nn.hard_sigmoid`).
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from srjax import checks

CELL_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': jax.nn.relu,
    'tanh': jnp.tanh,
    'sigmoid': jax.nn.sigmoid,
    'linear': lambda x: x,
}


def keras2_hard_sigmoid(x: jax.Array) -> jax.Array:
  """Keras 2's hard sigmoid: clip(0.2 x + 0.5, 0, 1)."""
  return jnp.clip(0.2 * x + 0.5, 0.0, 1.0)


GATE_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'sigmoid': jax.nn.sigmoid,
    'hard_sigmoid': keras2_hard_sigmoid,
    'hard_sigmoid_keras3': jax.nn.hard_sigmoid,
}


class _Cell(nn.Module):
  """One LSTM step on the precomputed input projection z_x = x_t @ kernel + bias."""
  units: int
  activation: str
  gate_activation: str

  @nn.compact
  def __call__(self, carry: tuple[jax.Array, jax.Array], zx: jax.Array):
    h, c = carry
    recurrent = self.param('recurrent_kernel', nn.initializers.orthogonal(), (self.units, 4 * self.units))
    z = zx + h @ recurrent
    zi, zf, zc, zo = jnp.split(z, 4, axis=-1)
    gate, act = GATE_ACTIVATIONS[self.gate_activation], CELL_ACTIVATIONS[self.activation]
    c = gate(zf) * c + gate(zi) * act(zc)
    h = gate(zo) * act(c)
    return (h, c), None


class LSTMClassifier(nn.Module):
  """LSTM over `seq_len` presentations of a flattened image, then a dense head on the last hidden state.

  Input: images [B, H, W, C] (each presented `seq_len` times, identical at every step; the input projection
  is computed once), or sequences [B, T, D] or [B, T, H, W, C] (T steps, each flattened; the sweep's `repeats`
  gives this form, with independent noise per step). Output: logits [B, num_classes] float32 (softmax is in
  the loss, as Keras's Dense(softmax) + categorical cross-entropy).

  Attributes:
    num_classes: 11 in the paper (10 digits and the no-signal class).
    units: hidden size U (20 in the paper).
    seq_len: presentations of an image input (5 in the authors' notebook); ignored for sequence inputs.
    activation: cell activation, a key of CELL_ACTIVATIONS ('relu' in the paper).
    gate_activation: a key of GATE_ACTIVATIONS (see the module docstring for which Keras version uses which).
    unit_forget_bias: initialise the forget-gate bias to 1 (Keras's `unit_forget_bias=True`).

  References:
    arXiv 2502.14442, Sec. 2 (model) and the authors' notebook (seq_len 5, unit_forget_bias=True).
  """
  num_classes: int = 11
  units: int = 20
  seq_len: int = 5
  activation: str = 'relu'
  gate_activation: str = 'sigmoid'
  unit_forget_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    checks.one_of('activation', self.activation, CELL_ACTIVATIONS)
    checks.one_of('gate_activation', self.gate_activation, GATE_ACTIVATIONS)
    if x.ndim not in (3, 4, 5):
      checks.fail('x', x, 'images [B, H, W, C] or sequences [B, T, D] / [B, T, H, W, C]')
    units = self.units
    dim = x.shape[-1] if x.ndim == 3 else x.shape[-1] * x.shape[-2] * x.shape[-3]
    kernel = self.param('kernel', nn.initializers.xavier_uniform(), (dim, 4 * units))

    def bias_init(key, shape, dtype=jnp.float32):
      del key
      bias = jnp.zeros(shape, dtype)
      return bias.at[units:2 * units].set(1.0) if self.unit_forget_bias else bias

    bias = self.param('bias', bias_init, (4 * units,))
    batch = x.shape[0]
    if x.ndim == 4:
      zx = x.reshape(batch, dim) @ kernel + bias
      zx = jnp.broadcast_to(zx[:, None], (batch, checks.integer('seq_len', self.seq_len, 1), 4 * units))
    else:
      zx = x.reshape(batch, x.shape[1], dim) @ kernel + bias
    scan = nn.scan(_Cell, variable_broadcast='params', split_rngs={'params': False}, in_axes=1, out_axes=1)
    zeros = jnp.zeros((batch, units), zx.dtype)
    (h, _), _ = scan(units, self.activation, self.gate_activation, name='cell')((zeros, zeros), zx)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.xavier_uniform(), name='head')(h)
