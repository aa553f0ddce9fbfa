"""The attacks' and attributions' outputs on two tiny models, recorded from the code as it is, to pin their
behaviour across a change of the model protocol (issue "the main job's path as values": `stochastic=` is to go,
and a deterministic model is to be wrapped to take a key). `tests/test_pinned_protocol.py` recomputes them and
compares with `tests/data/pinned_protocol.npz`; rerun this file (`python -m tests.pinned_protocol`) only to
re-record, and say why in the commit.

Each case calls today's public API; a refactor that changes a signature changes the call in `CASES` only, and the
recorded numbers must still match.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from srjax import attack, attribution
from srjax.models.apply_fn import deterministic

PATH = os.path.join(os.path.dirname(__file__), 'data', 'pinned_protocol.npz')


def _params():
  k = jax.random.split(jax.random.key(0), 4)
  return {'w1': 0.8 * jax.random.normal(k[0], (16, 8)), 'b1': 0.1 * jax.random.normal(k[1], (8,)),
          'w2': 0.8 * jax.random.normal(k[2], (8, 4)), 'b2': 0.1 * jax.random.normal(k[3], (4,))}


@deterministic
def mlp(params, x):
  """Deterministic: [B, 4, 4, 1] -> [B, 4] logits."""
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ params['w1'] + params['b1'])
  return h @ params['w2'] + params['b2']


def noisy_mlp(params, x, key):
  """Stochastic: the MLP with N(0, 0.3^2) on its hidden units."""
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ params['w1'] + params['b1'])
  return (h + 0.3 * jax.random.normal(key, h.shape)) @ params['w2'] + params['b2']


def data():
  x = jax.random.uniform(jax.random.key(1), (6, 4, 4, 1))
  y = jnp.argmax(mlp(_params(), x), -1)   # every clean point correct: the attacks have work to do
  return x, y


def cases():
  """{name: array} of every pinned output."""
  p, (x, y), key = _params(), data(), jax.random.key(2)
  out = {}
  out['apgd_ce_l2'] = attack.apgd(mlp, p, x, y, eps=0.5, norm='L2', steps=10, key=key).x_adv
  out['apgd_dlr_linf'] = attack.apgd(mlp, p, x, y, eps=8 / 255, norm='Linf', steps=10, key=key, loss='dlr').x_adv
  out['apgd_ce_l2_eot'] = attack.apgd(noisy_mlp, p, x, y, eps=0.5, norm='L2', steps=10, key=key, eot=4).x_adv
  out['square_linf'] = attack.square(mlp, p, x, y, eps=0.1, norm='Linf', queries=40, key=key).x_adv
  out['fab_l2'] = attack.fab(mlp, p, x, y, eps=1.0, norm='L2', steps=10, key=key, n_targets=2).x_adv
  aa = attack.autoattack(mlp, p, x, y, eps=0.5, norm='L2', key=key, version='standard', steps=5, queries=20,
                         n_targets=2)
  out['autoattack_standard_x'], out['autoattack_standard_robust'] = aa.x_adv, aa.robust
  ar = attack.autoattack(noisy_mlp, p, x, y, eps=0.5, norm='L2', key=key, version='rand', eot=3,
                         steps=5)
  out['autoattack_rand_x'], out['autoattack_rand_robust'] = ar.x_adv, ar.robust
  out['ig'] = attribution.integrated_gradients(mlp, p, x, y, steps=8)
  out['ig_stochastic'] = attribution.integrated_gradients(noisy_mlp, p, x, y, steps=8, key=key,
                                                          draws=3)
  out['noise_tunnel'] = attribution.noise_tunnel(mlp, p, x, y, key=key, n_samples=3, stdev=0.1, steps=8)
  st = attribution.stability(noisy_mlp, p, x, y, key=key, n_samples=3, steps=8,
                             model_key=jax.random.key(3), draws=2, tunnel_samples=2)
  out['stability_rel'], out['stability_max'] = st.relative_l2, st.max_sensitivity
  ab = attribution.abc(mlp, p, x, key=key, n_samples=8, steps=8)
  out['abc_score'], out['abc_label'] = ab.score, ab.label
  return {k: np.asarray(v) for k, v in out.items()}


if __name__ == '__main__':
  os.makedirs(os.path.dirname(PATH), exist_ok=True)
  np.savez(PATH, **cases())
  print(f'recorded {PATH}')
