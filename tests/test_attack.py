"""srjax.attack: PGD and APGD-CE against the closed-form minimal perturbation of a linear two-class classifier.

For logits [-m/2, m/2] with m(x) = w.x + b, the smallest perturbation that flips the label has L2 norm
|m(x)| / ||w||_2 and Linf norm |m(x)| / ||w||_1 (Holder duality), as long as the box [0, 1] does not bind (the
points sit in [0.3, 0.7] and every eps is below 0.25). So an attack inside the eps-ball fools exactly the points
whose distance is below eps, and the best it can do for the others is to lower |m| by eps * ||w||_dual.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srjax import attack

D = 16
B = 96


def linear(params, x):
  m = x.reshape(x.shape[0], -1) @ params['w'] + params['b']
  return jnp.stack([-m / 2, m / 2], axis=-1)


def sign_flip_linear(params, x, rng):
  """m = w.x + b + s u.(x - x0), s = +-1 per draw, u orthogonal to w with ||u|| = 3 ||w||.

  At the clean point x0 every draw gives the same logits, so the CE weights agree and the EOT gradient there is
  (1 - p) (w + mean(s) u): it points along w as the number of draws grows, while one draw's gradient has cosine
  1 / sqrt(10) with w.
  """
  s = jnp.where(jax.random.bernoulli(rng), 1.0, -1.0)
  flat = x.reshape(x.shape[0], -1)
  m = flat @ params['w'] + params['b'] + s * ((flat - params['x0']) @ params['u'])
  return jnp.stack([-m / 2, m / 2], axis=-1)


def same_linear(params, x, rng):
  del rng
  return linear(params, x)


@pytest.fixture(scope='module')
def toy():
  rng = np.random.default_rng(0)
  w = rng.normal(size=D).astype(np.float32)
  x = rng.uniform(0.3, 0.7, size=(B, 4, 4, 1)).astype(np.float32)
  m0 = x.reshape(B, -1) @ w
  b = np.float32(-np.median(m0))
  margin = m0 + b
  y = (margin > 0).astype(np.int32)
  params = {'w': jnp.asarray(w), 'b': jnp.asarray(b)}
  dual = {'L2': float(np.linalg.norm(w)), 'Linf': float(np.abs(w).sum())}
  return dict(params=params, x=x, y=y, margin=margin, w=w, b=b, dual=dual)


def _norm(delta, norm):
  flat = delta.reshape(delta.shape[0], -1).astype(np.float64)
  return np.linalg.norm(flat, axis=1) if norm == 'L2' else np.abs(flat).max(axis=1)


def _eps_for(toy, norm):
  """One eps per example: distances spread on both sides of eps, none within 3% of it."""
  dist = np.abs(toy['margin']) / toy['dual'][norm]
  scale = np.linspace(0.5, 1.6, B)
  np.random.default_rng(1).shuffle(scale)
  scale = np.where(np.abs(scale - 1.0) < 0.03, scale + 0.06, scale)
  eps = dist / scale
  cap = 0.25 if norm == 'L2' else 0.06   # keeps x +- perturbation inside [0, 1] (x in [0.3, 0.7])
  return np.minimum(eps, cap).astype(np.float32), dist


def _check_attack(toy, norm, x_adv, success, eps, dist):
  x_adv = np.asarray(x_adv)
  success = np.asarray(success)
  assert x_adv.shape == toy['x'].shape and x_adv.dtype == np.float32
  assert np.all(_norm(x_adv - toy['x'], norm) <= eps * (1 + 1e-5) + 1e-7)
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  closer = dist < eps
  assert 10 < closer.sum() < B - 10
  np.testing.assert_array_equal(success, closer)
  # The flags are the truth: the returned points are misclassified exactly where success is claimed.
  new_margin = x_adv.reshape(B, -1) @ toy['w'] + toy['b']
  np.testing.assert_array_equal(np.sign(new_margin) != np.sign(toy['margin']), closer)
  return new_margin


@pytest.mark.parametrize('norm', ['L2', 'Linf'])
def test_apgd_fools_exactly_the_points_closer_than_eps(toy, norm):
  eps, dist = _eps_for(toy, norm)
  x_adv, success = attack.apgd(linear, toy['params'], toy['x'], toy['y'], eps=eps, norm=norm,
                               key=jax.random.key(0), return_success=True)
  new_margin = _check_attack(toy, norm, x_adv, success, eps, dist)
  # Points it cannot fool: the best point of the ball lowers |m| by exactly eps * ||w||_dual.
  far = dist > eps
  reduction = np.abs(toy['margin'][far]) - np.sign(toy['margin'][far]) * new_margin[far]
  np.testing.assert_allclose(reduction, eps[far] * toy['dual'][norm], rtol=2e-3)


@pytest.mark.parametrize('norm', ['L2', 'Linf'])
def test_pgd_fools_exactly_the_points_closer_than_eps(toy, norm):
  eps, dist = _eps_for(toy, norm)
  x_adv, success = attack.pgd(linear, toy['params'], toy['x'], toy['y'], eps=eps, norm=norm, steps=20,
                              step_size=eps / 4, key=jax.random.key(1), return_success=True)
  _check_attack(toy, norm, x_adv, success, eps, dist)


def test_attacks_stay_in_ball_and_box_when_the_box_binds(toy):
  # Inputs at the edges of [0, 1] and a large eps: clipping binds, the ball must still hold.
  rng = np.random.default_rng(3)
  x = rng.choice([0.0, 0.02, 0.98, 1.0], size=toy['x'].shape).astype(np.float32)
  y = rng.integers(0, 2, size=B).astype(np.int32)
  for norm, eps in (('L2', 2.0), ('Linf', 0.5)):
    for x_adv, _ in (attack.apgd(linear, toy['params'], x, y, eps=eps, norm=norm, key=jax.random.key(2),
                                 return_success=True),
                     attack.pgd(linear, toy['params'], x, y, eps=eps, norm=norm, steps=20, step_size=eps,
                                key=jax.random.key(2), return_success=True)):
      x_adv = np.asarray(x_adv)
      assert np.all(_norm(x_adv - x, norm) <= eps * (1 + 1e-5))
      assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def bump(params, x):
  """Two classes; the CE of class 0 peaks at x = c (an interior point of the ball) and class 0 always wins."""
  q = jnp.sum((x.reshape(x.shape[0], -1) - params['c']) ** 2, axis=-1)
  return jnp.stack([jnp.zeros_like(q), -10.0 * q - 1.0], axis=-1)


@pytest.mark.parametrize('norm', ['L2', 'Linf'])
def test_apgd_step_size_rule_converges_to_an_interior_maximum(toy, norm):
  """With the initial step 2 eps the iterates overshoot c; only the checkpoint halvings let them settle there.

  Without the halving (a fixed eta = 2 eps) the best point stays about 0.2 eps (L2) or 1 eps (Linf) from c.
  """
  rng = np.random.default_rng(6)
  eps = 0.2 if norm == 'L2' else 0.05
  d = rng.normal(size=(B, D))
  offset = 0.5 * eps * (d / np.linalg.norm(d, axis=1, keepdims=True) if norm == 'L2'
                        else np.sign(d) * rng.uniform(0.2, 1.0, size=(B, D)))
  c = toy['x'].reshape(B, -1) + offset
  x_adv, success = attack.apgd(bump, {'c': jnp.asarray(c, jnp.float32)}, toy['x'], np.zeros(B, np.int32), eps=eps,
                               norm=norm, key=jax.random.key(0), return_success=True)
  assert not np.asarray(success).any()
  dist = _norm(np.asarray(x_adv).reshape(B, -1) - c, norm)
  assert dist.max() < 0.05 * eps


def test_apgd_checkpoint_schedule():
  # N = 100: windows 22, 19, 16, ..., then 6 (0.22 N, minus 0.03 N each time, at least 0.06 N).
  windows = [22, 19, 16, 13, 10, 7, 6, 6]
  assert attack.checkpoints(100).tolist() == list(np.cumsum(windows) - 1)
  assert attack.checkpoints(1).tolist() == [0]


def test_misclassified_clean_points_are_returned_unchanged(toy):
  y_wrong = 1 - toy['y']
  x_adv, success = attack.apgd(linear, toy['params'], toy['x'], y_wrong, eps=0.1, key=jax.random.key(0),
                               return_success=True)
  np.testing.assert_array_equal(np.asarray(x_adv), toy['x'])
  assert np.asarray(success).all()


def test_eot_averages_draws(toy):
  """EOT over many draws follows the mean gradient; one draw does not; identical draws change nothing."""
  norm = 'L2'
  eps, dist = _eps_for(toy, norm)
  inner = dist < 0.8 * eps  # fooled by a step of eps whose cosine with w exceeds 0.8
  rng = np.random.default_rng(5)
  u = rng.normal(size=D)
  u -= u @ toy['w'] / (toy['w'] @ toy['w']) * toy['w']
  u *= 3.0 * np.linalg.norm(toy['w']) / np.linalg.norm(u)
  params = dict(toy['params'], u=jnp.asarray(u, jnp.float32), x0=jnp.asarray(toy['x'].reshape(B, -1)))

  def mean_model_fooled(x_adv):
    new_margin = np.asarray(x_adv).reshape(B, -1) @ toy['w'] + toy['b']
    return np.sign(new_margin) != np.sign(toy['margin'])

  kwargs = dict(eps=eps, norm=norm, steps=1, step_size=eps, key=jax.random.key(4), random_start=False,
                stochastic=True)
  many = attack.pgd(sign_flip_linear, params, toy['x'], toy['y'], eot=256, **kwargs)
  one = attack.pgd(sign_flip_linear, params, toy['x'], toy['y'], eot=1, **kwargs)
  assert inner.sum() > 10
  assert mean_model_fooled(many)[inner].all()
  assert not mean_model_fooled(one)[inner].any()  # cosine 1/sqrt(10) < 0.5 <= dist / eps on these points
  # Identical draws: the stochastic path with EOT equals the deterministic attack.
  det, _ = attack.apgd(linear, toy['params'], toy['x'], toy['y'], eps=eps, norm=norm, key=jax.random.key(5),
                       return_success=True)
  sto = attack.apgd(same_linear, toy['params'], toy['x'], toy['y'], eps=eps, norm=norm, key=jax.random.key(5),
                    eot=3, stochastic=True)
  np.testing.assert_allclose(np.asarray(sto), np.asarray(det), atol=1e-6)


def test_argument_errors(toy):
  p, x, y = toy['params'], toy['x'], toy['y']
  key = jax.random.key(0)
  with pytest.raises(ValueError, match='eps'):
    attack.apgd(linear, p, x, y, eps=-0.1, key=key)
  with pytest.raises(ValueError, match='eps'):
    attack.pgd(linear, p, x, y, eps=np.full(B, -1.0), steps=1, step_size=0.1, key=key)
  with pytest.raises(ValueError, match='norm'):
    attack.apgd(linear, p, x, y, eps=0.1, norm='L1', key=key)
  with pytest.raises(ValueError, match='steps'):
    attack.apgd(linear, p, x, y, eps=0.1, steps=0, key=key)
  with pytest.raises(ValueError, match='eot'):
    attack.apgd(linear, p, x, y, eps=0.1, eot=0, key=key)
  with pytest.raises(ValueError, match='eot'):
    attack.apgd(linear, p, x, y, eps=0.1, eot=4, key=key)  # eot > 1 needs stochastic=True
  for rho in (0.0, 1.0, 1.5):
    with pytest.raises(ValueError, match='rho'):
      attack.apgd(linear, p, x, y, eps=0.1, rho=rho, key=key)
  with pytest.raises(ValueError, match='step_size'):
    attack.pgd(linear, p, x, y, eps=0.1, steps=1, step_size=0.0, key=key)
  with pytest.raises(ValueError, match='x'):
    attack.apgd(linear, p, x + 1.0, y, eps=0.1, key=key)
  with pytest.raises(ValueError, match='y'):
    attack.apgd(linear, p, x, y[:3], eps=0.1, key=key)
