"""Gradient attacks: PGD, APGD (Croce & Hein 2020) on the cross-entropy or the DLR loss, and APGD-T.

Each attack maximises a per-example loss of `apply_fn(params, x')` over `{x' : ||x' - x|| <= eps} ∩ [0, 1]^D`
and returns adversarial inputs inside that set.

Model protocol: `apply_fn(params, x, key) -> logits [B, C]`, e.g. a neural SDE that draws its noise from `key`;
a deterministic model is wrapped once with `srjax.models.apply_fn.deterministic(f)` (then `eot` must be 1).
  Each gradient is the Expectation over Transformation (EOT, Athalye et al. 2018) of `eot` draws: the
  per-example loss, its gradient and the softmax are averaged over `eot` independent keys, vmapped (one batched
  forward/backward per draw). Draw keys are `fold_in(key, t)` per iteration t, split into `eot`, so the same key
  gives the same attack.
  `apply_fn` is a static argument of the compiled attack: pass a hashable callable (a module-level function,
  `srjax.models.apply_fn.ModuleApply`, a bound `model.apply`), not a fresh lambda per call, or every call
  compiles again. The model must treat batch elements independently (no batch statistics), since the gradient
  of the summed loss is used as the per-example gradient.

Per-example state: `eps` (and PGD's `step_size`) may be a scalar or one value per example `[B]`; APGD's step
sizes, checkpoint decisions, best points and restarts are arrays over the batch updated elementwise. Iterations
run in one `lax.scan`; nothing loops over examples or iterations in Python (APGD-T loops over its k targets,
each one compiled run on the points still robust).

Success: an example counts as fooled when the model's prediction (argmax of the softmax, averaged over the EOT
draws for a stochastic model) differs from `y`. A clean input that is already misclassified is returned
unchanged and counts as a success (as AutoAttack does: only correctly classified points are attacked).

References:
  Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
  attacks", ICML 2020 (APGD: Sec. 3, Algorithm 1; step-size schedule Sec. 3.1; DLR loss Sec. 4, Eqs. 5-6;
  APGD-T Sec. 4; the AutoAttack code, `autopgd_base.py`, for the random start, the momentum and the
  projection order).
  Madry et al., "Towards deep learning models resistant to adversarial attacks", ICLR 2018 (PGD).
  Athalye, Carlini & Wagner, "Obfuscated gradients give a false sense of security", ICML 2018 (EOT).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from srjax import checks
from srjax.attack import common
from srjax.models.apply_fn import takes_key
from srjax.attack import losses

LOSSES = ('ce', 'dlr')


def apgd(apply_fn: Callable[..., jax.Array], params: Any, x: jax.Array, y: jax.Array, *, eps: Any,
         norm: str = 'L2', steps: int = 100, key: jax.Array, eot: int = 1, rho: float = 0.75,
         loss: str = 'ce', index: Any = None) -> common.AttackResult:
  """APGD: Auto-PGD on the cross-entropy (APGD-CE) or the DLR loss (APGD-DLR), L2 or Linf.

  The algorithm (Croce & Hein 2020, Algorithm 1, with AutoAttack's choices), per example:
    * start: a random point on the eps-sphere (L2: a normalised Gaussian direction; Linf: uniform [-1, 1]^D
      scaled to Linf norm eps), clipped to [0, 1];
    * step: z = P(x_k + eta * d(g_k)), x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1})), with
      d(g) = g / ||g||_2 (L2) or sign(g) (Linf), momentum a = 1 at the first step and 0.75 after, and P the
      projection onto the eps-ball followed by clipping to [0, 1];
    * initial step size eta = 2 eps;
    * checkpoints: the first after p_1 = max(int(0.22 N), 1) iterations, then windows shrinking by
      max(int(0.03 N), 1) down to max(int(0.06 N), 1) iterations;
    * at a checkpoint closing a window of k iterations, eta is halved and the iterate (and its gradient)
      restart from the best point so far when either
        (1) fewer than rho * k of the window's steps increased the loss (the paper's strict "<"; AutoAttack's
            code uses "<="), or
        (2) eta was not halved at the previous checkpoint and the best loss has not improved since then
            (never at the first checkpoint);
    * the attack returns, per example, the last iterate that fooled the model if any did, else the point of
      highest loss.
  The loss is the cross-entropy (`loss='ce'`) or the DLR loss (`loss='dlr'`, `losses.dlr_loss`, Eq. 5), which
  is invariant to the scale of the logits and needs C >= 3 classes.

  Args:
    apply_fn: `apply_fn(params, x, key) -> logits [B, C]`; a deterministic model wrapped with
      `srjax.models.apply_fn.deterministic(f)`.
    params: the first argument of `apply_fn` (opaque; e.g. a Flax variables dict).
    x: clean inputs [B, ...] float32 in [0, 1].
    y: true labels [B] int.
    eps: the radius of the threat model, a number >= 0 or an array [B] of them (one per example).
    norm: 'L2' or 'Linf'.
    steps: number of iterations N >= 1 (the paper's default 100). Each costs `eot` forward/backward passes.
    key: PRNG key for the random start and the model's draws.
    eot: gradient draws averaged per iteration (EOT); > 1 is refused for a `deterministic` model.
    rho: the checkpoint's oscillation threshold, in (0, 1) (paper: 0.75).
    loss: 'ce' or 'dlr'.
    index: None (one random start drawn for the whole batch) or int [B] stream ids: example i then draws its
      random start from `fold_in(key, index[i])`, so a sub-batch given the positions of its examples in a larger
      batch starts where a run on that batch would (what `autoattack` does).

  Returns:
    x_adv [B, ...] float32 (same shape and dtype as x), with ||x_adv - x|| <= eps (up to float rounding) and
    0 <= x_adv <= 1, and success [B] bool (an `AttackResult`; before this version `return_success=` chose
    between the array and the pair).

  Raises:
    ValueError: eps < 0, an unknown norm or loss, steps < 1, eot < 1, eot > 1 with a deterministic model, rho
      outside (0, 1), x outside [0, 1], mismatched shapes, or `loss='dlr'` with fewer than 3 classes.
    TypeError: non-integer steps or eot.

  References:
    Croce & Hein 2020, Sec. 3 and Algorithm 1 (conditions 1-2 of the step-size rule, Sec. 3.1); Eq. 5 (DLR).
  """
  x, y, eps_b = common.validate(x, y, eps, norm, eot, apply_fn=apply_fn, steps=steps)
  checks.in_range('rho', rho, 0.0, 1.0, low_open=True, high_open=True)
  checks.one_of('loss', loss, LOSSES)
  if loss == 'dlr':
    common.check_classes('loss', common.num_classes(apply_fn, params, x), 3, "loss='dlr'")
  per_example = index is not None
  ids = common.example_index(index, x.shape[0])
  out = apgd_run(apply_fn, params, x, y, y, eps_b, key, ids, jnp.float32(rho), norm=norm, steps=steps, eot=eot,
                 loss=loss, per_example=per_example)
  return common.AttackResult(*out)


def apgd_targeted(apply_fn: Callable[..., jax.Array], params: Any, x: jax.Array, y: jax.Array, *, eps: Any,
                  norm: str = 'L2', steps: int = 100, key: jax.Array, n_targets: int = 9, eot: int = 1,
                  rho: float = 0.75, index: Any = None) -> common.AttackResult:
  """APGD-T: APGD on the targeted DLR loss, once per target among the top-k classes other than the true one.

  The targets of an example are the k = min(n_targets, C - 1) classes other than y with the highest clean
  (EOT-mean) softmax, best first (`losses.target_classes`). For target j = 1..k, APGD (same schedule and
  checkpoints as `apgd`) maximises `losses.dlr_targeted_loss(z, y, t_j)` on the points not yet fooled; a point
  fooled by target j is not attacked again. Success means misclassified (argmax != y), whichever class wins.

  Args:
    apply_fn, params, x, y, eps, norm, steps, eot, rho: as in `apgd`.
    key: PRNG key; target j uses `fold_in(key, j)`.
    n_targets: k >= 1 (AutoAttack: 9), capped at C - 1.
    index: None or int [B] stream ids for the random starts (see `apgd`); default arange(B).

  Returns:
    AttackResult(x_adv, success): a fooled point's adversarial input; an unfooled point unchanged.

  Raises:
    ValueError: as `apgd`, a model with fewer than 4 classes, n_targets < 1.

  References:
    Croce & Hein 2020, Sec. 4 (APGD-T, targeted DLR loss Eq. 6, top-9 targets).
  """
  x, y, eps_b = common.validate(x, y, eps, norm, eot, apply_fn=apply_fn, steps=steps)
  checks.in_range('rho', rho, 0.0, 1.0, low_open=True, high_open=True)
  checks.integer('n_targets', n_targets, 1)
  classes = common.num_classes(apply_fn, params, x)
  common.check_classes('apply_fn', classes, 4, 'the targeted DLR loss uses the 4 largest logits')
  ids = common.example_index(index, x.shape[0])
  targets, success, k_run = common.ranked_targets(apply_fn, params, x, y, key, n_targets=n_targets,
                                                  classes=classes, eot=eot)
  k = targets.shape[1]
  x_adv = x
  for j in range(k):  # k <= 9 compiled runs, each on the points still robust (padded to a bucket size)
    def run(xs, ys, ts, es, ii, j=j):
      return apgd_run(apply_fn, params, xs, ys, ts, es, jax.random.fold_in(k_run, j), ii, jnp.float32(rho),
                      norm=norm, steps=steps, eot=eot, loss='dlr-targeted', per_example=True)
    idx, out = common.on_subset(run, ~success, x, y, jnp.asarray(targets[:, j]), eps_b, ids)
    if out is None:
      break
    fooled = np.asarray(out[1])
    x_adv = x_adv.at[idx[fooled]].set(out[0][fooled])
    success[idx[fooled]] = True
  return common.AttackResult(x_adv, jnp.asarray(success))


def pgd(apply_fn: Callable[..., jax.Array], params: Any, x: jax.Array, y: jax.Array, *, eps: Any,
        norm: str = 'L2', steps: int, step_size: Any, key: jax.Array, eot: int = 1,
        random_start: bool = True) -> common.AttackResult:
  """PGD on the cross-entropy loss (Madry et al. 2018), L2 or Linf, with a fixed step size.

  x_{k+1} = P(x_k + step_size * d(g_k)), with d(g) = g / ||g||_2 (L2) or sign(g) (Linf) and P the projection
  onto the eps-ball followed by clipping to [0, 1]. With `random_start` the first iterate is drawn uniformly
  from the ball (Linf: uniform in [-eps, eps]^D; L2: a uniform direction at radius eps * u^(1/D)), clipped to
  [0, 1]. The attack returns the last iterate (the classic PGD), and success means that iterate is misclassified
  (clean misclassified inputs are returned unchanged, as in `apgd`).

  Args:
    apply_fn: `apply_fn(params, x, key) -> logits [B, C]`; a deterministic model wrapped with
      `srjax.models.apply_fn.deterministic(f)`.
    params: the first argument of `apply_fn`.
    x: clean inputs [B, ...] float32 in [0, 1].
    y: true labels [B] int.
    eps: radius >= 0, a number or an array [B].
    norm: 'L2' or 'Linf'.
    steps: number of iterations >= 1.
    step_size: step length > 0 (in the norm's units), a number or an array [B].
    key: PRNG key for the random start and the model's draws.
    eot: gradient draws averaged per iteration; > 1 is refused for a `deterministic` model.
    random_start: start from a uniform point of the ball instead of x.

  Returns:
    `AttackResult(x_adv [B, ...] inside the eps-ball and [0, 1], success [B] bool)`.

  Raises:
    ValueError: eps < 0, step_size <= 0, an unknown norm, steps < 1, eot < 1 (or > 1 for a deterministic
      model), x outside [0, 1] or mismatched shapes.

  References:
    Madry et al. 2018, Sec. 2-3 (projected gradient descent on the loss, random start).
  """
  x, y, eps_b = common.validate(x, y, eps, norm, eot, apply_fn=apply_fn, steps=steps)
  step_b = common.per_example('step_size', step_size, x.shape[0], positive=True)
  return _pgd(apply_fn, params, x, y, eps_b, step_b, key, norm=norm, steps=steps, eot=eot,
              random_start=bool(random_start))


def checkpoints(steps: int) -> np.ndarray:
  """APGD's checkpoint iterations (0-based indices of the iterations after which the step-size rule runs).

  The first window has max(int(0.22 N), 1) iterations; each next one is shorter by max(int(0.03 N), 1), down to
  max(int(0.06 N), 1) (Croce & Hein 2020, Sec. 3.1: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} -
  0.03, 0.06), as AutoAttack implements it with integer windows).

  Args:
    steps: N >= 1.

  Returns:
    int array of iteration indices i (the window ends after iteration i), increasing.
  """
  checks.integer('steps', steps, 1)
  flags, _ = _schedule(steps)
  return np.flatnonzero(flags)


def _schedule(steps: int) -> tuple[np.ndarray, np.ndarray]:
  first = max(int(0.22 * steps), 1)
  decrease = max(int(0.03 * steps), 1)
  minimum = max(int(0.06 * steps), 1)
  flags = np.zeros(steps, bool)
  windows = np.zeros(steps, np.int32)
  k, count = first, 0
  for i in range(steps):  # builds a static table of N booleans; the attack itself is one lax.scan
    count += 1
    if count == k:
      flags[i], windows[i] = True, k
      k, count = max(k - decrease, minimum), 0
  return flags, windows


def _loss_fn(name):
  if name == 'ce':
    return lambda logits, y, t: losses.cross_entropy(logits, y)
  if name == 'dlr':
    return lambda logits, y, t: losses.dlr_loss(logits, y)
  return losses.dlr_targeted_loss


def _evaluator(apply_fn, params, y, target, eot, loss):
  """(x, key) -> (per-example loss [B], its gradient [B, ...], softmax [B, C]), averaged over `eot` draws."""
  stochastic = takes_key(apply_fn)
  loss_of = _loss_fn(loss)

  def one(x, rng):
    def total(xx):
      logits = apply_fn(params, xx, rng if stochastic else None)
      logits = logits.astype(jnp.float32)
      values = loss_of(logits, y, target)
      return jnp.sum(values), (values, jax.nn.softmax(logits, axis=-1))
    (_, (values, probs)), g = jax.value_and_grad(total, has_aux=True)(x)
    return values, g, probs

  def evaluate(x, key):
    if not stochastic:
      return one(x, None)
    values, g, probs = jax.vmap(one, in_axes=(None, 0))(x, jax.random.split(key, eot))
    return values.mean(0), g.mean(0), probs.mean(0)

  return evaluate


def _random_sphere(key, x, eps, norm, ids, per_example):
  def draw(k, shape):
    if norm == 'Linf':
      t = jax.random.uniform(k, shape, x.dtype, -1.0, 1.0)
      return t / (jnp.max(jnp.abs(t), axis=tuple(range(1, t.ndim)), keepdims=True) + common.TINY)
    t = jax.random.normal(k, shape, x.dtype)
    return t / (common.l2(t) + common.TINY)
  if per_example:
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, ids)
    t = jax.vmap(lambda k: draw(k, (1,) + x.shape[1:])[0])(keys)
  else:
    t = draw(key, x.shape)
  return jnp.clip(x + eps * t, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'norm', 'steps', 'eot', 'loss',
                                             'per_example'))
def apgd_run(apply_fn, params, x, y, target, eps, key, ids, rho, *, norm, steps, eot, loss,
             per_example):
  """APGD's compiled core (no argument checks; call `apgd` or `apgd_targeted`). Returns (x_adv, success [B]).

  `loss` is 'ce', 'dlr' or 'dlr-targeted' (then `target` [B] holds the target classes), `ids` [B] the stream
  ids of the per-example random starts (used when `per_example`).
  """
  # One lax.scan over steps + 2 iterations, and the model appears once in the compiled program: iteration -2
  # evaluates the clean input (is it already misclassified?), iteration -1 the random start, iterations
  # 0..steps-1 are APGD's steps. (Separate evaluations before the loop would triple the program to compile.)
  evaluate = _evaluator(apply_fn, params, y, target, eot, loss)
  eps_b = common.bcast(eps, x)
  k_start, k_iter = jax.random.split(key)
  x0 = _random_sphere(k_start, x, eps_b, norm, ids, per_example)
  flags, windows = _schedule(steps)
  batch = x.shape[0]
  zeros = jnp.zeros(batch, jnp.float32)
  init = dict(
      x=x0, x_old=x0, g=jnp.zeros_like(x), eta=2.0 * eps,
      x_best=x0, g_best=jnp.zeros_like(x), loss_best=zeros, prev_loss=zeros, n_up=jnp.zeros(batch, jnp.int32),
      best_at_check=zeros, halved_at_check=jnp.ones(batch, bool),
      fooled=jnp.zeros(batch, bool), x_fool=x0, clean_wrong=jnp.zeros(batch, bool))
  bc = common.bcast

  def body(s, inputs):
    i, is_check, window = inputs
    a = jnp.where(i > 0, 0.75, 1.0)
    eta = bc(s['eta'], x)
    z = common.project(s['x'] + eta * common.direction(s['g'], norm), x, eps_b, norm)
    x_new = common.project(s['x'] + a * (z - s['x']) + (1.0 - a) * (s['x'] - s['x_old']), x, eps_b, norm)
    point = jnp.where(i == -2, x, jnp.where(i == -1, x0, x_new))
    value, g, probs = evaluate(point, jax.random.fold_in(k_iter, i + 2))
    wrong = jnp.argmax(probs, -1) != y

    x_fool = jnp.where(bc(wrong, x), x_new, s['x_fool'])
    n_up = s['n_up'] + (value > s['prev_loss']).astype(jnp.int32)
    better = value > s['loss_best']
    x_best = jnp.where(bc(better, x), x_new, s['x_best'])
    g_best = jnp.where(bc(better, x), g, s['g_best'])
    loss_best = jnp.where(better, value, s['loss_best'])

    oscillating = n_up.astype(jnp.float32) < rho * window.astype(jnp.float32)
    stalled = jnp.logical_not(s['halved_at_check']) & (s['best_at_check'] >= loss_best)
    cut = (oscillating | stalled) & is_check
    restart = bc(cut, x)
    stepped = dict(
        x=jnp.where(restart, x_best, x_new), x_old=s['x'], g=jnp.where(restart, g_best, g),
        eta=jnp.where(cut, 0.5 * s['eta'], s['eta']),
        x_best=x_best, g_best=g_best, loss_best=loss_best, prev_loss=value,
        n_up=jnp.where(is_check, 0, n_up),
        best_at_check=jnp.where(is_check, loss_best, s['best_at_check']),
        halved_at_check=jnp.where(is_check, cut, s['halved_at_check']),
        fooled=s['fooled'] | wrong, x_fool=x_fool, clean_wrong=s['clean_wrong'])
    started = dict(s, g=g, g_best=g, loss_best=value, prev_loss=value, best_at_check=value, fooled=wrong)
    clean = dict(s, clean_wrong=wrong)
    new = jax.tree.map(lambda c, st, sp: jnp.where(i == -2, c, jnp.where(i == -1, st, sp)), clean, started,
                       stepped)
    return new, None

  xs = (jnp.arange(-2, steps), jnp.asarray(np.concatenate([[False, False], flags])),
        jnp.asarray(np.concatenate([[0, 0], windows]).astype(np.int32)))
  s, _ = jax.lax.scan(body, init, xs)
  x_adv = jnp.where(bc(s['fooled'], x), s['x_fool'], s['x_best'])
  x_adv = jnp.where(bc(s['clean_wrong'], x), x, x_adv).astype(x.dtype)
  return x_adv, s['fooled'] | s['clean_wrong']


def _uniform_ball(key, x, eps, norm):
  if norm == 'Linf':
    return x + eps * jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
  k_dir, k_rad = jax.random.split(key)
  t = jax.random.normal(k_dir, x.shape, x.dtype)
  t = t / (common.l2(t) + common.TINY)
  dim = int(np.prod(x.shape[1:]))
  radius = jax.random.uniform(k_rad, (x.shape[0],), x.dtype) ** (1.0 / dim)
  return x + eps * common.bcast(radius, x) * t


@functools.partial(jax.jit, static_argnames=('apply_fn', 'norm', 'steps', 'eot', 'random_start'))
def _pgd(apply_fn, params, x, y, eps, step_size, key, *, norm, steps, eot, random_start):
  evaluate = _evaluator(apply_fn, params, y, y, eot, 'ce')
  eps_b = common.bcast(eps, x)
  step_b = common.bcast(step_size, x)
  k_start, k_clean, k_iter, k_final = jax.random.split(key, 4)
  clean_wrong = jnp.argmax(common.mean_probs(apply_fn, params, x, k_clean, eot), -1) != y
  x0 = jnp.clip(_uniform_ball(k_start, x, eps_b, norm), 0.0, 1.0) if random_start else x

  def body(xk, i):
    _, g, _ = evaluate(xk, jax.random.fold_in(k_iter, i))
    return common.project(xk + step_b * common.direction(g, norm), x, eps_b, norm), None

  x_last, _ = jax.lax.scan(body, x0, jnp.arange(steps))
  probs = common.mean_probs(apply_fn, params, x_last, k_final, eot)
  success = (jnp.argmax(probs, -1) != y) | clean_wrong
  x_adv = jnp.where(common.bcast(clean_wrong, x), x, x_last).astype(x.dtype)
  return common.AttackResult(x_adv, success)
