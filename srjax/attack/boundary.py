"""FAB-T: the targeted fast adaptive boundary attack (Croce & Hein 2020), a minimum-norm attack in L2 and Linf.

FAB linearises the decision boundary between the true class y and a target t at the current iterate, projects
onto that hyperplane inside the box [0, 1] (in the attack's norm), and biases the step towards the clean input,
so it converges to an adversarial point close to x. It needs no eps to run; the eps of the threat model only
decides whether the smallest adversarial point found counts as a success.

References:
  Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack", ICML 2020:
  Sec. 3.1 (projection onto a hyperplane with box constraints), Sec. 3.2 and Algorithm 1 (the step, Eqs. 8-9,
  the extrapolation alpha, the backward step beta), Sec. 3.3 (targeted version).
  Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
  attacks", ICML 2020, Sec. 4 (FAB-T on the top-9 target classes in AutoAttack).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from srjax import checks
from srjax.attack import common
from srjax.models.apply_fn import takes_key


class FabResult(NamedTuple):
  """What `fab` returns.

  Attributes:
    x_adv: [B, ...] the smallest adversarial point found when its norm is <= eps, else x (inside the eps-ball).
    success: [B] bool, fooled within eps (clean errors count as successes).
    x_min: [B, ...] the smallest adversarial point found, whatever its norm (x where none was found).
    distance: [B] its distance ||x_min - x|| (0 for a clean error, inf where none was found).
  """
  x_adv: jax.Array
  success: jax.Array
  x_min: jax.Array
  distance: jax.Array


def fab(apply_fn: Callable[..., jax.Array], params: Any, x: jax.Array, y: jax.Array, *, eps: Any,
        norm: str = 'Linf', steps: int = 100, key: jax.Array, n_targets: int = 9, alpha_max: float = 0.1,
        eta: float = 1.05, beta: float = 0.9, eot: int = 1) -> FabResult:
  """FAB-T, L2 or Linf: one run of `steps` iterations per target among the top-k classes other than y.

  Per example and target t (Algorithm 1, with the targeted boundary of Sec. 3.3), from x^(0) = x:
    * f = z_t - z_y and its gradient g at x^(i) (EOT means for a stochastic model); the boundary is linearised
      as the hyperplane pi = {z : f + g . (z - x^(i)) = 0};
    * delta = proj_p(x^(i), pi, [0, 1]) and delta_orig = proj_p(x, pi, [0, 1]), the minimal L_p steps onto pi
      that stay in the box (Sec. 3.1; `hyperplane_step`);
    * alpha = min(||delta|| / (||delta|| + ||delta_orig||), alpha_max) (Eq. 9);
    * x^(i+1) = clip((1 - alpha)(x^(i) + eta delta) + alpha (x + eta delta_orig), 0, 1) (Eq. 8);
    * if x^(i+1) is misclassified: it is kept when closer to x than the best so far, and the backward step
      x^(i+1) = (1 - beta) x + beta x^(i+1) moves it back towards x.
  The targets are the k = min(n_targets, C - 1) best-ranked classes other than y (`losses.target_classes`); a
  point fooled within eps is not attacked with the next targets. No random restarts (AutoAttack's standard
  FAB-T uses one run from x).

  Args:
    apply_fn: `apply_fn(params, x, key) -> logits [B, C]`; a deterministic model wrapped with
      `srjax.models.apply_fn.deterministic(f)`.
    params: the first argument of `apply_fn`.
    x: clean inputs [B, ...] float in [0, 1].
    y: true labels [B] int.
    eps: the threat model's radius (a number >= 0 or [B]) against which successes are counted.
    norm: 'L2' or 'Linf'.
    steps: iterations per target >= 1 (AutoAttack: 100); each costs one forward/backward and one forward.
    key: PRNG key (the model's draws for a stochastic model).
    n_targets: k >= 1 (AutoAttack: 9), capped at C - 1.
    alpha_max, eta, beta: the paper's 0.1, 1.05, 0.9 (alpha_max in [0, 1], eta >= 1, beta in (0, 1)).
    eot: draws averaged per evaluation (stochastic models only).

  Returns:
    FabResult(x_adv, success, x_min, distance).

  Raises:
    ValueError: eps < 0, an unknown norm, steps < 1, n_targets < 1, x outside [0, 1], parameters out of range.

  References:
    Croce & Hein, ICML 2020 (FAB), Algorithm 1, Eqs. 8-9, Sec. 3.1-3.3.
  """
  x, y, eps_b = common.validate(x, y, eps, norm, eot, apply_fn=apply_fn, steps=steps)
  checks.integer('n_targets', n_targets, 1)
  checks.in_range('alpha_max', alpha_max, 0.0, 1.0)
  checks.in_range('eta', eta, 1.0)
  checks.in_range('beta', beta, 0.0, 1.0, low_open=True, high_open=True)
  classes = common.num_classes(apply_fn, params, x)
  common.check_classes('apply_fn', classes, 2, 'a boundary needs two classes')
  targets, clean_wrong, k_run = common.ranked_targets(apply_fn, params, x, y, key, n_targets=n_targets,
                                                      classes=classes, eot=eot)
  k = targets.shape[1]
  x_min = x
  distance = np.where(clean_wrong, 0.0, np.inf)
  hyper = jnp.asarray([alpha_max, eta, beta], jnp.float32)
  eps_np = np.asarray(eps_b)
  for j in range(k):  # k <= 9 compiled runs, each on the points not yet fooled within eps
    def run(xs, ys, ts, j=j):
      return fab_run(apply_fn, params, xs, ys, ts, jax.random.fold_in(k_run, j), hyper, norm=norm, steps=steps,
                     eot=eot)
    active = ~(distance <= eps_np)
    idx, out = common.on_subset(run, active, x, y, jnp.asarray(targets[:, j]))
    if out is None:
      break
    closer = np.asarray(out[1]) < distance[idx]
    x_min = x_min.at[idx[closer]].set(out[0][closer])
    distance[idx[closer]] = np.asarray(out[1])[closer]
  success = distance <= eps_np * (1.0 + 1e-6)
  x_adv = jnp.where(common.bcast(jnp.asarray(success), x), x_min, x)
  return FabResult(x_adv, jnp.asarray(success), x_min, jnp.asarray(distance, jnp.float32))


def hyperplane_step(w: jax.Array, c: jax.Array, lower: jax.Array, upper: jax.Array, norm: str) -> jax.Array:
  """The minimal-norm step onto a hyperplane inside a box: argmin ||d||_p s.t. w . d = c, lower <= d <= upper.

  Per example, with lower <= 0 <= upper (the box [0, 1] around the current point). The solution is
  d = clip(lambda w, lower, upper) (L2) or d = clip(lambda sign(w), lower, upper) (Linf) for the scalar lambda
  where w . d(lambda) = c (Croce & Hein 2020, FAB, Sec. 3.1). w . d(lambda) = sum_i o_i clip(lambda, a_i, b_i)
  is piecewise linear and nondecreasing in lambda, with o_i = w_i^2 (L2) or |w_i| (Linf), so lambda is found
  exactly: sort the breakpoints, take the first one where the sum reaches c, solve the linear piece before it.
  When no lambda reaches c (the box forbids crossing the hyperplane), d is the box corner that gets closest.

  Args:
    w: [B, ...] normals.
    c: [B] targets of w . d.
    lower, upper: [B, ...] bounds of d.
    norm: 'L2' or 'Linf'.

  Returns:
    d [B, ...].
  """
  shape = w.shape
  w = w.reshape(shape[0], -1)
  lo = lower.reshape(shape[0], -1)
  hi = upper.reshape(shape[0], -1)
  pos, zero = w > 0, w == 0
  if norm == 'L2':
    weight = w * w
    safe = jnp.where(zero, 1.0, w)
    a = jnp.where(pos, lo / safe, hi / safe)
    b = jnp.where(pos, hi / safe, lo / safe)
  else:
    weight = jnp.abs(w)
    a = jnp.where(pos, lo, -hi)
    b = jnp.where(pos, hi, -lo)
  a = jnp.where(zero, 0.0, a)
  b = jnp.where(zero, 0.0, b)
  up = c >= 0
  bound = jnp.where(up[:, None], b, -a)  # >= 0: solve sum_i weight_i min(mu, bound_i) = |c|, lambda = +-mu
  order = jnp.argsort(bound, axis=1)
  bs = jnp.take_along_axis(bound, order, axis=1)
  ws = jnp.take_along_axis(weight, order, axis=1)
  below = jnp.cumsum(ws * bs, axis=1) - ws * bs              # sum_{j<k} w_j b_j
  tail = jnp.flip(jnp.cumsum(jnp.flip(ws, 1), axis=1), 1)     # sum_{j>=k} w_j
  reach = below + bs * tail                                    # the sum at mu = b_k, nondecreasing in k
  target = jnp.abs(c)
  k = jnp.sum(reach < target[:, None], axis=1)
  feasible = k < bs.shape[1]
  kk = jnp.minimum(k, bs.shape[1] - 1)[:, None]
  mu = (target - jnp.take_along_axis(below, kk, 1)[:, 0]) / (jnp.take_along_axis(tail, kk, 1)[:, 0] + 1e-30)
  mu = jnp.where(feasible, mu, bs[:, -1])
  lam = jnp.where(up, mu, -mu)[:, None]
  d = jnp.clip(lam * (w if norm == 'L2' else jnp.sign(w)), lo, hi)
  return d.reshape(shape)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'norm', 'steps', 'eot'))
def fab_run(apply_fn, params, x, y, target, key, hyper, *, norm, steps, eot):
  """FAB-T's compiled core for one target per example (no checks; call `fab`). Returns (x_min, distance [B])."""
  alpha_max, eta, beta = hyper[0], hyper[1], hyper[2]
  bc = common.bcast
  stochastic = takes_key(apply_fn)

  def boundary(z, rng):
    def diff(zz, r):
      logits = apply_fn(params, zz, r if stochastic else None)
      logits = logits.astype(jnp.float32)
      d = (jnp.take_along_axis(logits, target[:, None], -1) - jnp.take_along_axis(logits, y[:, None], -1))[:, 0]
      return jnp.sum(d), d
    if not stochastic:
      (_, f), g = jax.value_and_grad(diff, has_aux=True)(z, None)
      return f, g
    (_, f), g = jax.vmap(jax.value_and_grad(diff, has_aux=True), (None, 0))(z, jax.random.split(rng, eot))
    return f.mean(0), g.mean(0)

  def fooled(z, rng):
    return jnp.argmax(common.mean_probs(apply_fn, params, z, rng, eot), -1) != y

  def body(s, i):
    xk, x_best, best = s
    f, g = boundary(xk, jax.random.fold_in(key, 2 * i))
    gx = jnp.sum((g * (x - xk)).reshape(x.shape[0], -1), axis=1)
    d_cur = hyperplane_step(g, -f, -xk, 1.0 - xk, norm)
    d_orig = hyperplane_step(g, -(f + gx), -x, 1.0 - x, norm)
    n_cur, n_orig = common.lp(d_cur, norm), common.lp(d_orig, norm)
    alpha = jnp.clip(n_cur / (n_cur + n_orig + common.TINY), 0.0, alpha_max)
    a = bc(alpha, x)
    x_new = jnp.clip((1.0 - a) * (xk + eta * d_cur) + a * (x + eta * d_orig), 0.0, 1.0)
    adv = fooled(x_new, jax.random.fold_in(key, 2 * i + 1))
    dist = common.lp(x_new - x, norm)
    better = adv & (dist < best)
    x_best = jnp.where(bc(better, x), x_new, x_best)
    best = jnp.where(better, dist, best)
    x_next = jnp.where(bc(adv, x), x + beta * (x_new - x), x_new)
    return (x_next, x_best, best), None

  init = (x, x, jnp.full((x.shape[0],), jnp.inf, jnp.float32))
  (_, x_best, best), _ = jax.lax.scan(body, init, jnp.arange(steps))
  return x_best.astype(x.dtype), best
