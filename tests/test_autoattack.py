"""srjax.attack's AutoAttack parts (DLR, APGD-T, FAB-T, Square) and the ensemble, against independent truths.

Truths: the DLR formulas on hand-computed logits; linear models whose minimal perturbations are closed forms
(L2: |m| / ||w||_2 along w; Linf: |m| / ||w||_1 at the corner eps * sign(w)); a model built so that exactly one
class is reachable, at a known rank; a quantised model whose gradient is zero almost everywhere.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srjax import attack
from srjax.models.apply_fn import deterministic

H = 8  # images [B, 8, 8, 1]


@deterministic
def linear(params, x):
  m = x.reshape(x.shape[0], -1) @ params['w'] + params['b']
  return jnp.stack([-m / 2, m / 2], axis=-1)


@deterministic
def dense(params, x):
  return x.reshape(x.shape[0], -1) @ params['w'] + params['b']


@deterministic
def mlp(params, x):
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ params['w1'] + params['b1'])
  return h @ params['w2'] + params['b2']


@deterministic
def quantised(params, x):
  return dense(params, jnp.round(x * 4.0) / 4.0)  # d round / dx = 0 almost everywhere


def _norm(delta, norm):
  flat = np.asarray(delta, np.float64).reshape(delta.shape[0], -1)
  return np.linalg.norm(flat, axis=1) if norm == 'L2' else np.abs(flat).max(axis=1)


def _assert_inside(x_adv, x, eps, norm):
  x_adv = np.asarray(x_adv)
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  assert np.all(_norm(x_adv - np.asarray(x), norm) <= eps * (1 + 1e-5) + 1e-7)


def test_dlr_losses_closed_form():
  z = jnp.array([[1.0, 4.0, 2.0, 3.0], [1.0, 4.0, 2.0, 3.0], [0.0, 0.0, 5.0, -1.0]])
  y = jnp.array([0, 1, 2])
  # sorted: (4, 3, 2, 1) -> pi1 - pi3 = 2;  y=0: -(1 - 4) / 2;  y=1: -(4 - 3) / 2;  row 3: -(5 - 0) / (5 - 0)
  np.testing.assert_allclose(attack.dlr_loss(z, y), [1.5, -0.5, -1.0], rtol=1e-6)
  t = jnp.array([3, 3, 1])
  # denominators pi1 - (pi3 + pi4) / 2: 4 - 1.5 = 2.5 (rows 1-2), 5 - (0 - 1) / 2 = 5.5 (row 3)
  np.testing.assert_allclose(attack.dlr_targeted_loss(z, y, t), [-(1 - 3) / 2.5, -(4 - 3) / 2.5, -(5 - 0) / 5.5],
                             rtol=1e-6)
  np.testing.assert_allclose(attack.dlr_loss(3.0 * z + 7.0, y), attack.dlr_loss(z, y), rtol=1e-5)
  np.testing.assert_allclose(attack.margin(z, y), [-3.0, 1.0, 5.0])


def test_target_classes_brute_force():
  rng = np.random.default_rng(1)
  scores = rng.normal(size=(20, 7))
  y = rng.integers(0, 7, 20)
  got = attack.target_classes(scores, y, 3)
  for s, label, row in zip(scores, y, got):
    ranked = [c for c in sorted(range(7), key=lambda c: -s[c]) if c != label]
    assert list(row) == ranked[:3]


def _one_reachable_class():
  """Class 0 is true (z_0 = 0). z_j = b_j + a_j * (sum of x over a private 3-pixel support), clean z_j = -j.

  Class 5 (the 5th ranked non-true class) gains 10 * 3 * eps = 6 > 5 at eps = 0.2 (Linf), classes 1-4 only 0.06,
  so a point is fooled iff class 5 is among the targets.
  """
  d, c = H * H, 6
  w = np.zeros((d, c), np.float32)
  b = np.zeros(c, np.float32)
  for j in range(1, c):
    a = 10.0 if j == 5 else 0.1
    w[3 * j:3 * j + 3, j] = a
    b[j] = -j - a * 1.5
  rng = np.random.default_rng(2)
  x = rng.uniform(0.3, 0.7, size=(8, H, H, 1)).astype(np.float32)
  x.reshape(8, -1)[:, 3:18] = 0.5
  return {'w': jnp.asarray(w), 'b': jnp.asarray(b)}, x, np.zeros(8, np.int32)


def test_apgd_t_attacks_exactly_the_top_k_classes():
  params, x, y = _one_reachable_class()
  np.testing.assert_allclose(dense(params, x)[0], [0, -1, -2, -3, -4, -5], atol=1e-5)
  key = jax.random.key(0)
  hit = attack.apgd_targeted(dense, params, x, y, eps=0.2, norm='Linf', steps=10, key=key, n_targets=5)
  miss = attack.apgd_targeted(dense, params, x, y, eps=0.2, norm='Linf', steps=10, key=key, n_targets=4)
  assert np.all(np.asarray(hit.success)) and not np.any(np.asarray(miss.success))
  assert np.all(np.argmax(dense(params, hit.x_adv), -1) == 5)
  np.testing.assert_array_equal(miss.x_adv, x)  # an unfooled point comes back unchanged
  _assert_inside(hit.x_adv, x, 0.2, 'Linf')


def _linear_toy(margins_over_eps=None, eps=None, batch=32, seed=0):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=H * H).astype(np.float32)
  x = rng.uniform(0.35, 0.65, size=(batch, H * H))
  b = np.float32(0.1 - 0.5 * w.sum())
  if margins_over_eps is not None:  # from x in [0.45, 0.55], move along sign(w) to the margin r * eps * ||w||_1
    x = 0.5 + (x - 0.5) / 3
    m_target = margins_over_eps * eps * np.abs(w).sum()
    x = x + ((m_target - x @ w - b) / np.abs(w).sum())[:, None] * np.sign(w)[None, :]
  assert 0.25 < x.min() and x.max() < 0.75
  x = x.astype(np.float32).reshape(batch, H, H, 1)
  margin = x.reshape(batch, -1) @ w + b
  y = (margin > 0).astype(np.int32)
  return {'w': jnp.asarray(w), 'b': jnp.asarray(b)}, x, y, margin, w


@pytest.mark.parametrize('norm', ['L2', 'Linf'])
def test_fab_finds_the_minimum_norm_point_of_a_linear_classifier(norm):
  params, x, y, margin, w = _linear_toy(batch=16, seed=3)
  dual = np.linalg.norm(w) if norm == 'L2' else np.abs(w).sum()
  truth = np.abs(margin) / dual
  step = truth[:, None] * (w / np.linalg.norm(w) if norm == 'L2' else np.sign(w))[None, :]
  assert np.all(np.abs(step) < 0.2)  # the box [0, 1] does not bind at the optimum (x in [0.35, 0.65])
  res = attack.fab(linear, params, x, y, eps=0.05, norm=norm, steps=20, key=jax.random.key(0))
  np.testing.assert_allclose(res.distance, truth, rtol=0.01)
  np.testing.assert_allclose(_norm(res.x_min - x, norm), res.distance, rtol=1e-5)
  assert np.all(np.argmax(linear(params, res.x_min), -1) != y)
  np.testing.assert_array_equal(res.success, truth <= 0.05)
  _assert_inside(res.x_adv, x, 0.05, norm)


def test_square_fools_exactly_the_foolable_points_linf():
  eps = 0.05
  ratios = np.tile([0.4, 0.6, 0.8, 1.1, 1.3, 1.6], 4)  # |m| / (eps ||w||_1): < 1 foolable (the corner)
  params, x, y, margin, w = _linear_toy(ratios, eps, batch=ratios.size, seed=4)
  res = attack.square(linear, params, x, y, eps=eps, norm='Linf', queries=1000, key=jax.random.key(1))
  np.testing.assert_array_equal(res.success, ratios < 1)
  _assert_inside(res.x_adv, x, eps, 'Linf')
  assert np.all(np.argmax(linear(params, res.x_adv), -1)[ratios < 1] != y[ratios < 1])
  np.testing.assert_array_equal(np.asarray(res.x_adv)[ratios > 1], x[ratios > 1])


@pytest.fixture(scope='module')
def small_mlp():
  rng = np.random.default_rng(5)
  params = {'w1': rng.normal(size=(H * H, 16)) / 4, 'b1': np.zeros(16), 'w2': rng.normal(size=(16, 5)),
            'b2': np.zeros(5)}
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  x = rng.uniform(size=(8, H, H, 1)).astype(np.float32)
  y = np.asarray(jnp.argmax(mlp(params, x), -1)).astype(np.int32)
  y[:2] = (y[:2] + 1) % 5  # two clean errors
  return params, x, y


@pytest.mark.parametrize('norm,eps', [('L2', 0.3), ('Linf', 0.01)])
def test_every_attack_stays_in_the_ball_and_the_ensemble_beats_its_parts(small_mlp, norm, eps):
  params, x, y = small_mlp
  key = jax.random.key(3)
  opts = dict(eps=eps, norm=norm, key=key, version='custom', steps=10, queries=150, n_targets=2)
  full = attack.autoattack(mlp, params, x, y, attacks=list(attack.ATTACKS), **opts)
  parts = {name: attack.autoattack(mlp, params, x, y, attacks=[name], **opts) for name in attack.ATTACKS}
  _assert_inside(full.x_adv, x, eps, norm)
  robust = np.asarray(full.robust)
  assert robust.mean() <= min(p.log[-1].robust_accuracy for p in parts.values())
  assert 0.0 < robust.mean() < 6 / 8
  assert not np.any(robust[:2])
  # the log: each attack ran on exactly the points left robust by the ones before
  for before, after in zip(full.log[:-1], full.log[1:]):
    assert after.attacked == round(before.robust_accuracy * 8) and after.robust_accuracy <= before.robust_accuracy
  # a point fooled by APGD-CE keeps APGD-CE's input: no later attack touched it
  first = ~np.asarray(parts['apgd-ce'].robust) & (np.arange(8) >= 2)
  assert first.any()
  np.testing.assert_array_equal(np.asarray(full.x_adv)[first], np.asarray(parts['apgd-ce'].x_adv)[first])
  np.testing.assert_array_equal(np.asarray(full.x_adv)[robust], x[robust])
  fooled = ~robust
  assert np.all(np.argmax(mlp(params, full.x_adv), -1)[fooled] != y[fooled])
  # the raw outputs of the attacks (before the ensemble's check) stay in the ball too
  raw = [attack.apgd(mlp, params, x, y, eps=eps, norm=norm, steps=10, key=key, loss='dlr', index=np.arange(8)).x_adv,
         attack.apgd_targeted(mlp, params, x, y, eps=eps, norm=norm, steps=10, key=key, n_targets=2).x_adv,
         attack.fab(mlp, params, x, y, eps=eps, norm=norm, steps=10, key=key, n_targets=2).x_adv,
         attack.square(mlp, params, x, y, eps=eps, norm=norm, queries=150, key=key).x_adv]
  for x_adv in raw:
    _assert_inside(x_adv, x, eps, norm)


@pytest.mark.slow  # compiles the whole standard ensemble for its own model (~30 s on a loaded 2-core CPU)
def test_quantised_model_defeats_gradients_but_not_square():
  rng = np.random.default_rng(6)
  params = {'w': jnp.asarray(rng.normal(size=(H * H, 4)), jnp.float32), 'b': jnp.zeros(4, jnp.float32)}
  x = rng.uniform(size=(400, H, H, 1)).astype(np.float32)
  top2 = np.sort(np.asarray(quantised(params, x)), -1)[:, -2:]
  # points whose margin a random +-0.2 start cannot close (~3.5 sigma) but the aligned corner can (~10)
  x = x[(top2[:, 1] - top2[:, 0] > 4.5) & (top2[:, 1] - top2[:, 0] < 6.0)][:8]
  assert x.shape[0] == 8
  y = np.asarray(jnp.argmax(quantised(params, x), -1)).astype(np.int32)
  g = jax.grad(lambda xx: quantised(params, xx).sum())(jnp.asarray(x))
  assert not np.any(np.asarray(g))
  res = attack.autoattack(quantised, params, x, y, eps=0.2, norm='Linf', key=jax.random.key(0), steps=10,
                          queries=500, n_targets=3)
  acc = {entry.attack: entry.robust_accuracy for entry in res.log}
  assert [entry.attack for entry in res.log] == ['clean', 'apgd-ce', 'apgd-t', 'fab-t', 'square']
  assert all(entry.eot == 1 for entry in res.log)
  assert acc['clean'] == acc['apgd-ce'] == acc['apgd-t'] == acc['fab-t'] == 1.0
  assert acc['square'] <= 0.5
  _assert_inside(res.x_adv, x, 0.2, 'Linf')


def test_errors():
  params, x, y = _one_reachable_class()
  lin, xl, yl, _, _ = _linear_toy(batch=8)
  key = jax.random.key(0)
  bad = [
      lambda: attack.autoattack(dense, params, x, y, eps=-0.1, key=key),
      lambda: attack.autoattack(dense, params, x, y, eps=0.1, norm='L1', key=key),
      lambda: attack.autoattack(dense, params, x, y, eps=0.1, key=key, version='plus'),
      lambda: attack.autoattack(dense, params, x, y, eps=0.1, key=key, version='custom', attacks=['apgd-x']),
      lambda: attack.autoattack(dense, params, x, y, eps=0.1, key=key, attacks=['square']),
      lambda: attack.autoattack(dense, params, x + 1.0, y, eps=0.1, key=key),
      lambda: attack.apgd(linear, lin, xl, yl, eps=0.1, key=key, loss='dlr'),       # 2 classes < 3
      lambda: attack.autoattack(linear, lin, xl, yl, eps=0.1, key=key),              # APGD-T needs 4
      lambda: attack.apgd_targeted(deterministic(lambda p, z: dense(p, z)[:, :3]), params, x, y, eps=0.1, key=key),
      lambda: attack.fab(dense, params, x, y, eps=-1.0, key=key),
      lambda: attack.square(dense, params, x, y, eps=0.1, norm='L3', key=key),
      lambda: attack.square(dense, params, x.reshape(8, -1), y, eps=0.1, key=key),
  ]
  for call in bad:
    with pytest.raises(ValueError):
      call()


def test_attacks_name_layout_and_module_mistakes():
  """A channels-first image batch and a Flax module passed as apply_fn are one-line errors, before any compile."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = jnp.zeros((2, 3, 16, 16))                          # [B, C, H, W]
  y = jnp.zeros((2,), jnp.int32)
  with pytest.raises(ValueError, match='channels-first'):
    attack.apgd(lambda p, v, k: jnp.zeros((len(v), 4)), {}, x, y, eps=0.1, key=jax.random.key(0))
  with pytest.raises(TypeError, match='Flax module'):
    attack.autoattack(nn.Dense(4), {}, jnp.zeros((2, 16, 16, 3)), y, eps=0.1, key=jax.random.key(0))


def noisy_three_class(params, x, rng):
  """A stochastic model: the two-class linear toy plus a never-competitive third class (DLR needs 3), with
  N(0, 0.01^2) logit noise per draw (it moves no gradient, so the attacks' truth is the linear one)."""
  m = x.reshape(x.shape[0], -1) @ params['w'] + params['b']
  logits = jnp.stack([-m / 2, m / 2, jnp.full_like(m, -100.0)], axis=-1)
  return logits + 0.01 * jax.random.normal(rng, logits.shape)


def test_rand_is_the_default_for_a_model_that_takes_a_key_and_fools_exactly_the_foolable_points():
  eps = 0.05
  ratios = np.tile([0.3, 0.5, 0.7, 1.4, 1.7, 2.0], 2)   # |m| / (eps ||w||_1): < 1 foolable in Linf (the corner)
  params, x, y, margin, w = _linear_toy(ratios, eps=eps, batch=ratios.size, seed=4)
  res = attack.autoattack(noisy_three_class, params, x, y, eps=eps, norm='Linf', key=jax.random.key(5), steps=20)
  assert [entry.attack for entry in res.log] == ['clean', 'apgd-ce', 'apgd-dlr']   # version='rand' (EOT 20)
  assert [entry.eot for entry in res.log] == [20, 20, 20]
  assert res.log[0].robust_accuracy == 1.0
  np.testing.assert_array_equal(np.asarray(res.robust), ratios > 1)
  _assert_inside(res.x_adv, x, eps, 'Linf')
  fooled = ~np.asarray(res.robust)
  keys = jax.random.split(jax.random.key(6), 20)
  probs = jax.vmap(lambda k: jax.nn.softmax(noisy_three_class(params, res.x_adv, k)))(keys).mean(0)
  assert np.all(np.argmax(probs, -1)[fooled] != y[fooled])
  with pytest.raises(ValueError, match='version'):
    attack.autoattack(noisy_three_class, params, x, y, eps=eps, norm='Linf', key=jax.random.key(5), version='rnd')
