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
from srjax.models.apply_fn import deterministic

D = 16
B = 96


@deterministic
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
                               key=jax.random.key(0))
  new_margin = _check_attack(toy, norm, x_adv, success, eps, dist)
  # Points it cannot fool: the best point of the ball lowers |m| by exactly eps * ||w||_dual.
  far = dist > eps
  reduction = np.abs(toy['margin'][far]) - np.sign(toy['margin'][far]) * new_margin[far]
  np.testing.assert_allclose(reduction, eps[far] * toy['dual'][norm], rtol=2e-3)


@pytest.mark.parametrize('norm', ['L2', 'Linf'])
def test_pgd_fools_exactly_the_points_closer_than_eps(toy, norm):
  eps, dist = _eps_for(toy, norm)
  x_adv, success = attack.pgd(linear, toy['params'], toy['x'], toy['y'], eps=eps, norm=norm, steps=20,
                              step_size=eps / 4, key=jax.random.key(1))
  _check_attack(toy, norm, x_adv, success, eps, dist)


def test_attacks_stay_in_ball_and_box_when_the_box_binds(toy):
  # Inputs at the edges of [0, 1] and a large eps: clipping binds, the ball must still hold.
  rng = np.random.default_rng(3)
  x = rng.choice([0.0, 0.02, 0.98, 1.0], size=toy['x'].shape).astype(np.float32)
  y = rng.integers(0, 2, size=B).astype(np.int32)
  for norm, eps in (('L2', 2.0), ('Linf', 0.5)):
    for x_adv, _ in (attack.apgd(linear, toy['params'], x, y, eps=eps, norm=norm, key=jax.random.key(2)),
                     attack.pgd(linear, toy['params'], x, y, eps=eps, norm=norm, steps=20, step_size=eps,
                                key=jax.random.key(2))):
      x_adv = np.asarray(x_adv)
      assert np.all(_norm(x_adv - x, norm) <= eps * (1 + 1e-5))
      assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@deterministic
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
                               norm=norm, key=jax.random.key(0))
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
  x_adv, success = attack.apgd(linear, toy['params'], toy['x'], y_wrong, eps=0.1, key=jax.random.key(0))
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

  kwargs = dict(eps=eps, norm=norm, steps=1, step_size=eps, key=jax.random.key(4), random_start=False)
  many = attack.pgd(sign_flip_linear, params, toy['x'], toy['y'], eot=256, **kwargs).x_adv
  one = attack.pgd(sign_flip_linear, params, toy['x'], toy['y'], eot=1, **kwargs).x_adv
  assert inner.sum() > 10
  assert mean_model_fooled(many)[inner].all()
  assert not mean_model_fooled(one)[inner].any()  # cosine 1/sqrt(10) < 0.5 <= dist / eps on these points
  # Identical draws: the stochastic path with EOT equals the deterministic attack.
  det, _ = attack.apgd(linear, toy['params'], toy['x'], toy['y'], eps=eps, norm=norm, key=jax.random.key(5))
  sto = attack.apgd(same_linear, toy['params'], toy['x'], toy['y'], eps=eps, norm=norm, key=jax.random.key(5),
                    eot=3).x_adv
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


# --- APGD's schedule, iterate by iterate (Croce & Hein 2020, Algorithm 1) ----------------------------------------

_TRACE = []


@deterministic
def traced_bump(params, x):
  """`bump`, recording every point the attack evaluates (one call per APGD iteration, in order)."""
  jax.debug.callback(lambda v: _TRACE.append(np.asarray(v)), x, ordered=True)
  return bump(params, x)


def _apgd_by_hand(x, c, eps, x0, steps, rho=0.75):
  """Algorithm 1 in NumPy for the bump model, whose CE gradient points from p to c (L2 direction (c-p)/|c-p|).

  Returns the iterates x_1..x_N [N, B, D], the step size used by each iteration [N, B], the per-example
  flags of each checkpoint: (cut by condition 1, cut by condition 2) as lists of [B] arrays, and the margin
  [N, B] of each iteration's loss comparisons (how far from a tie).
  """
  def loss(p):  # CE of class 0 with logits [0, -10 q - 1]
    return np.logaddexp(0.0, -10.0 * np.sum((p - c) ** 2, 1) - 1.0)

  def direction(p):
    v = c - p
    return v / np.linalg.norm(v, axis=1, keepdims=True)

  def project(z):
    delta = z - x
    n = np.linalg.norm(delta, axis=1, keepdims=True)
    return np.clip(x + delta / n * np.minimum(eps[:, None], n), 0.0, 1.0)

  # Checkpoint windows (Sec. 3.1): p_1 = 0.22, then shrinking by 0.03 down to 0.06, in whole iterations.
  ends, k, i = [], max(int(0.22 * steps), 1), 0
  while i + k <= steps:
    ends.append((i + k - 1, k))
    i += k
    k = max(k - max(int(0.03 * steps), 1), max(int(0.06 * steps), 1))
  ends = dict(ends)

  eta = 2.0 * eps                                       # eta^(0) = 2 eps
  xk, x_prev, g = x0, x0, direction(x0)
  prev = best_loss = best_at_check = loss(x0)
  best, g_best = x0, g
  n_up = np.zeros(len(x), int)
  halved = np.ones(len(x), bool)                        # condition 2 cannot fire at the first checkpoint
  iterates, etas, cond1s, cond2s, margins = [], [], [], [], []
  for i in range(steps):
    a = 1.0 if i == 0 else 0.75                         # plain projected first step, then momentum 0.75
    z = project(xk + eta[:, None] * g)
    x_new = project(xk + a * (z - xk) + (1 - a) * (xk - x_prev))
    value = loss(x_new)
    margins.append(np.minimum(np.abs(value - prev), np.abs(value - best_loss)))
    n_up += value > prev
    prev = value
    better = value > best_loss
    best = np.where(better[:, None], x_new, best)
    best_loss = np.where(better, value, best_loss)
    g_best = np.where(better[:, None], direction(x_new), g_best)
    iterates.append(x_new)
    etas.append(eta.copy())
    x_prev, xk, g = xk, x_new, direction(x_new)
    if i in ends:
      cond1 = n_up < rho * ends[i]
      cond2 = ~halved & (best_at_check >= best_loss)
      cut = cond1 | cond2
      eta = np.where(cut, eta / 2, eta)
      xk = np.where(cut[:, None], best, xk)
      g = np.where(cut[:, None], g_best, g)
      halved, best_at_check, n_up = cut, best_loss, np.zeros_like(n_up)
      cond1s.append(cond1)
      cond2s.append(cond2)
  return np.stack(iterates), np.stack(etas), cond1s, cond2s, np.stack(margins)


def test_apgd_iterates_follow_algorithm_1_by_hand(toy):
  """x_1, x_2, ... and the per-example step sizes (2 eps, halved at checkpoints) against a NumPy Algorithm 1.

  The bump's maximum lies inside each ball, so steps of 2 eps overshoot it and the loss oscillates: some
  examples are cut at the first checkpoint (condition 1) and some are not, and later condition 2 fires.
  """
  rng = np.random.default_rng(11)
  b, steps = 64, 20
  x = toy['x'][:b].reshape(b, -1).astype(np.float64)
  eps = rng.uniform(0.1, 0.25, size=b)                   # one radius (hence one step size) per example
  d = rng.normal(size=(b, D))
  c = x + rng.uniform(0.3, 0.9, size=(b, 1)) * eps[:, None] * d / np.linalg.norm(d, axis=1, keepdims=True)
  _TRACE.clear()
  attack.apgd(traced_bump, {'c': jnp.asarray(c, jnp.float32)}, toy['x'][:b], np.zeros(b, np.int32),
              eps=eps.astype(np.float32), norm='L2', steps=steps, key=jax.random.key(3))
  trace = np.stack(_TRACE).reshape(steps + 2, b, D).astype(np.float64)
  np.testing.assert_array_equal(trace[0], toy['x'][:b].reshape(b, -1))        # the clean check
  x0 = trace[1]                                                               # the random start: on the sphere
  np.testing.assert_allclose(np.linalg.norm(x0 - x, axis=1), eps, rtol=1e-5)

  iterates, etas, cond1s, cond2s, margins = _apgd_by_hand(x, c, eps, x0, steps)
  # x_1 = P(x_0 + 2 eps d(g_0)) and x_2 = P(x_1 + 0.75 (z_2 - x_1) + 0.25 (x_1 - x_0)), spelled out.
  unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
  proj = lambda z: x + unit(z - x) * np.minimum(eps[:, None], np.linalg.norm(z - x, axis=1, keepdims=True))
  x1 = proj(x0 + 2 * eps[:, None] * unit(c - x0))
  z2 = proj(x1 + 2 * eps[:, None] * unit(c - x1))
  x2 = proj(x1 + 0.75 * (z2 - x1) + 0.25 * (x1 - x0))
  np.testing.assert_allclose(trace[2], x1, atol=2e-6)
  np.testing.assert_allclose(trace[3], x2, atol=2e-6)
  np.testing.assert_allclose(iterates[:2], [x1, x2], atol=1e-12)
  # The later iterates x_3..x_14, hence the step size of each iteration and example (2 eps, halved where cut),
  # through the checkpoints after iterations 3, 6, 8, ..., 12.
  # Examples whose loss comparisons come within 1e-5 of a tie (float32 rounding decides them) are left out.
  clear = margins[:14].min(0) > 1e-5
  assert clear.sum() >= b // 2
  np.testing.assert_allclose(trace[2:16, clear], iterates[:14, clear], atol=2e-5)
  # The case is not degenerate: the first checkpoint (after 4 iterations) halves some steps and not others,
  # and condition 2 fires at a later checkpoint.
  first = cond1s[0]
  assert 0 < first.sum() < b
  np.testing.assert_allclose(etas[4], np.where(first, eps, 2 * eps))
  # Condition 2 (the best loss did not improve since the last checkpoint) fires for some clear example.
  assert any((c2 & clear).any() for c2 in cond2s[1:6])


# --- EOT with draws that matter ---------------------------------------------------------------------------------

_DRAWS = []


def noisy_slope(params, x, rng):
  """m = w.x + b + s u.(x - x_ref), s ~ N(0, 1) per example and draw, u orthogonal to w; logits [-m/2, m/2].

  At x = x_ref every draw gives the same m, so the EOT gradient of the CE there is -(1 - p)(w + mean(s) u) and
  the tangent of its angle to w is r mean(s), r = ||u|| / ||w||: mean(s) ~ N(0, 1 / draws) if the draws are
  independent. Every call records (x, s).
  """
  s = jax.random.normal(rng, (x.shape[0],))
  jax.debug.callback(lambda xv, sv: _DRAWS.append((np.asarray(xv), np.asarray(sv))), x, s)
  flat = x.reshape(x.shape[0], -1)
  m = flat @ params['w'] + params['b'] + s * jnp.sum((flat - params['x_ref']) * params['u'], axis=1)
  return jnp.stack([-m / 2, m / 2], axis=-1)


def _eot_setup(n):
  rng = np.random.default_rng(12)
  w = rng.normal(size=D)
  u = rng.normal(size=D)
  u -= (u @ w) / (w @ w) * w
  u *= 0.5 * np.linalg.norm(w) / np.linalg.norm(u)          # r = 0.5
  x = rng.uniform(0.4, 0.6, size=(n, D)).astype(np.float32)
  b = float(2.0 - (x @ w).min())                            # m > 0: class 1 is right, nothing is fooled
  params = dict(w=jnp.asarray(w, jnp.float32), b=jnp.float32(b), u=jnp.asarray(u, jnp.float32), x_ref=jnp.asarray(x))
  return w, u, x, params


def _mean_draw(direction, w, u):
  """mean(s) of each example, read off the EOT gradient's direction -d: (d.u / |u|) / (d.w / |w|) / r."""
  r = np.linalg.norm(u) / np.linalg.norm(w)
  return (-direction @ u / np.linalg.norm(u)) / (-direction @ w / np.linalg.norm(w)) / r


def _assert_fresh_draws(calls, n):
  """No two model calls of the attack (iterations, EOT draws, clean and final checks) share a draw."""
  values = np.stack([s for _, s in _DRAWS])          # [calls, n]: one draw of every example per call
  assert values.shape == (calls, n)
  assert np.unique(values, axis=0).shape[0] == calls


def test_pgd_eot_gradient_error_falls_like_one_over_sqrt_draws():
  """draws * mean over examples of mean(s)^2 is 1 for independent draws (4 standard errors: 4 sqrt(2 / n)).

  A key reused across the EOT draws gives `draws` instead of 1; averaging fewer draws gives more than 1. One
  step from x (no random start, inside the ball): x_1 = x + step d(g).
  """
  n, steps = 256, 2
  w, u, x, params = _eot_setup(n)
  for draws in (4, 32):
    _DRAWS.clear()
    x2 = attack.pgd(noisy_slope, params, x, np.ones(n, np.int32), eps=1.0, norm='L2', steps=steps,
                    step_size=0.01, key=jax.random.key(draws), eot=draws, random_start=False).x_adv
    _assert_fresh_draws((steps + 2) * draws, n)       # clean prediction, 2 gradients, final prediction
    points = [p for p, _ in _DRAWS]
    x1 = next(p for p in points if not np.array_equal(p, x) and not np.array_equal(p, np.asarray(x2)))
    s_mean = _mean_draw((np.asarray(x1, np.float64) - x) / 0.01, w, u)
    assert abs(draws * np.mean(s_mean ** 2) - 1.0) < 4 * np.sqrt(2 / n), (draws, draws * np.mean(s_mean ** 2))


def test_apgd_eot_gradient_averages_fresh_independent_draws():
  """As for PGD, on APGD's first step, from the random start x_0 (the same for the same key): x_ref = x_0 makes
  the draws agree there, and x_1 = x + eps (t + 2 d) / |t + 2 d| with t = (x_0 - x) / eps is solved for d."""
  n, draws, eps = 256, 16, 0.05
  w, u, x, params = _eot_setup(n)
  y = np.ones(n, np.int32)
  key = jax.random.key(5)
  _DRAWS.clear()
  attack.apgd(noisy_slope, dict(params, u=jnp.zeros(D)), x, y, eps=eps, norm='L2', steps=1, key=key, eot=draws)
  x0 = np.asarray(_DRAWS[draws][0], np.float64)           # calls: draws at x, draws at x_0, draws at x_1
  _DRAWS.clear()
  attack.apgd(noisy_slope, dict(params, x_ref=jnp.asarray(x0, jnp.float32)), x, y, eps=eps, norm='L2', steps=1,
              key=key, eot=draws)
  _assert_fresh_draws(3 * draws, n)
  np.testing.assert_array_equal(_DRAWS[draws][0], x0)
  t = (x0 - x) / eps
  n1 = np.asarray(_DRAWS[2 * draws][0], np.float64) - x
  n1 /= np.linalg.norm(n1, axis=1, keepdims=True)
  nt = np.sum(n1 * t, axis=1, keepdims=True)
  lam = nt + np.sqrt(nt ** 2 + 4 - np.sum(t * t, axis=1, keepdims=True))
  direction = (lam * n1 - t) / 2
  np.testing.assert_allclose(np.linalg.norm(direction, axis=1), 1.0, atol=1e-3)
  s_mean = _mean_draw(direction, w, u)
  assert abs(draws * np.mean(s_mean ** 2) - 1.0) < 4 * np.sqrt(2 / n), draws * np.mean(s_mean ** 2)
