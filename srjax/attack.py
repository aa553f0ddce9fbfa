"""Adversarial attacks on classifiers: PGD and APGD-CE (Croce & Hein 2020), in L2 and Linf, with EOT.

Both attacks maximise the per-example cross-entropy `CE(apply_fn(params, x'), y)` over the set
`{x' : ||x' - x|| <= eps} ∩ [0, 1]^D` and return adversarial inputs inside that set.

Model protocol (the arity is explicit):
  * deterministic (`stochastic=False`, the default): `apply_fn(params, x) -> logits [B, C]`; `eot` must be 1.
  * stochastic (`stochastic=True`): `apply_fn(params, x, rng) -> logits [B, C]`, e.g. a neural SDE that draws
    its noise from `rng`. Each gradient is the Expectation over Transformation (EOT, Athalye et al. 2018) of
    `eot` draws: the per-example loss, its gradient and the softmax are averaged over `eot` independent keys,
    vmapped (one batched forward/backward per draw). Draw keys are `fold_in(key, t)` per iteration t, split
    into `eot`, so the same key gives the same attack.
  `apply_fn` is a static argument of the compiled attack: pass a hashable callable (a module-level function,
  `srjax.models.apply_fn.ModuleApply`, a bound `model.apply`), not a fresh lambda per call, or every call
  compiles again. The model must treat batch elements independently (no batch statistics), since the gradient
  of the summed loss is used as the per-example gradient.

Per-example state: `eps` (and PGD's `step_size`) may be a scalar or one value per example `[B]`; APGD's step
sizes, checkpoint decisions, best points and restarts are arrays over the batch updated elementwise. Iterations
run in one `lax.scan`; nothing loops over examples or iterations in Python.

Success: an example counts as fooled when the model's prediction (argmax of the softmax, averaged over the EOT
draws for a stochastic model) differs from `y`. A clean input that is already misclassified is returned
unchanged and counts as a success (as AutoAttack does: only correctly classified points are attacked).

References:
  Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
  attacks", ICML 2020 (APGD: Sec. 3, Algorithm 1; step-size schedule Sec. 3.1; the AutoAttack code,
  `autopgd_base.py`, for the random start, the momentum and the projection order).
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

NORMS = ('L2', 'Linf')
_TINY = 1e-12  # AutoAttack's normalisation guard: v / (||v|| + 1e-12)


def apgd(apply_fn: Callable[..., jax.Array], params: Any, x: jax.Array, y: jax.Array, *, eps: Any,
         norm: str = 'L2', steps: int = 100, key: jax.Array, eot: int = 1, rho: float = 0.75,
         stochastic: bool = False, return_success: bool = False):
  """APGD-CE: Auto-PGD on the cross-entropy loss, L2 or Linf.

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

  Args:
    apply_fn: `apply_fn(params, x) -> logits [B, C]`, or `apply_fn(params, x, rng)` with `stochastic=True`.
    params: the first argument of `apply_fn` (opaque; e.g. a Flax variables dict).
    x: clean inputs [B, ...] float32 in [0, 1].
    y: true labels [B] int.
    eps: the radius of the threat model, a number >= 0 or an array [B] of them (one per example).
    norm: 'L2' or 'Linf'.
    steps: number of iterations N >= 1 (the paper's default 100). Each costs `eot` forward/backward passes.
    key: PRNG key for the random start and the model's draws.
    eot: gradient draws averaged per iteration (EOT); > 1 requires `stochastic=True`.
    rho: the checkpoint's oscillation threshold, in (0, 1) (paper: 0.75).
    stochastic: whether `apply_fn` takes a third argument `rng`.
    return_success: also return the per-example success flags.

  Returns:
    x_adv [B, ...] float32 (same shape and dtype as x), with ||x_adv - x|| <= eps (up to float rounding) and
    0 <= x_adv <= 1; with `return_success`, the pair (x_adv, success [B] bool).

  Raises:
    ValueError: eps < 0, an unknown norm, steps < 1, eot < 1, eot > 1 with a deterministic model, rho outside
      (0, 1), x outside [0, 1] or mismatched shapes.
    TypeError: non-integer steps or eot.

  References:
    Croce & Hein 2020, Sec. 3 and Algorithm 1 (conditions 1-2 of the step-size rule, Sec. 3.1).
  """
  x, y, eps_b = _validate(x, y, eps, norm, steps, eot, stochastic, 'eps')
  checks.in_range('rho', rho, 0.0, 1.0, low_open=True, high_open=True)
  return _apgd(apply_fn, params, x, y, eps_b, key, jnp.float32(rho), norm=norm, steps=steps, eot=eot,
               stochastic=bool(stochastic), return_success=bool(return_success))


def pgd(apply_fn: Callable[..., jax.Array], params: Any, x: jax.Array, y: jax.Array, *, eps: Any,
        norm: str = 'L2', steps: int, step_size: Any, key: jax.Array, eot: int = 1, random_start: bool = True,
        stochastic: bool = False, return_success: bool = False):
  """PGD on the cross-entropy loss (Madry et al. 2018), L2 or Linf, with a fixed step size.

  x_{k+1} = P(x_k + step_size * d(g_k)), with d(g) = g / ||g||_2 (L2) or sign(g) (Linf) and P the projection
  onto the eps-ball followed by clipping to [0, 1]. With `random_start` the first iterate is drawn uniformly
  from the ball (Linf: uniform in [-eps, eps]^D; L2: a uniform direction at radius eps * u^(1/D)), clipped to
  [0, 1]. The attack returns the last iterate (the classic PGD), and success means that iterate is misclassified
  (clean misclassified inputs are returned unchanged, as in `apgd`).

  Args:
    apply_fn: `apply_fn(params, x) -> logits [B, C]`, or `apply_fn(params, x, rng)` with `stochastic=True`.
    params: the first argument of `apply_fn`.
    x: clean inputs [B, ...] float32 in [0, 1].
    y: true labels [B] int.
    eps: radius >= 0, a number or an array [B].
    norm: 'L2' or 'Linf'.
    steps: number of iterations >= 1.
    step_size: step length > 0 (in the norm's units), a number or an array [B].
    key: PRNG key for the random start and the model's draws.
    eot: gradient draws averaged per iteration; > 1 requires `stochastic=True`.
    random_start: start from a uniform point of the ball instead of x.
    stochastic: whether `apply_fn` takes a third argument `rng`.
    return_success: also return the per-example success flags.

  Returns:
    x_adv [B, ...] inside the eps-ball and [0, 1]; with `return_success`, (x_adv, success [B] bool).

  Raises:
    ValueError: eps < 0, step_size <= 0, an unknown norm, steps < 1, eot < 1 (or > 1 for a deterministic
      model), x outside [0, 1] or mismatched shapes.

  References:
    Madry et al. 2018, Sec. 2-3 (projected gradient descent on the loss, random start).
  """
  x, y, eps_b = _validate(x, y, eps, norm, steps, eot, stochastic, 'eps')
  step_b = _per_example('step_size', step_size, x.shape[0], positive=True)
  return _pgd(apply_fn, params, x, y, eps_b, step_b, key, norm=norm, steps=steps, eot=eot,
              random_start=bool(random_start), stochastic=bool(stochastic), return_success=bool(return_success))


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


def _validate(x, y, eps, norm, steps, eot, stochastic, eps_name):
  checks.one_of('norm', norm, NORMS)
  checks.integer('steps', steps, 1)
  checks.integer('eot', eot, 1)
  if eot > 1 and not stochastic:
    checks.fail('eot', eot, '1 for a deterministic apply_fn(params, x); pass stochastic=True with '
                'apply_fn(params, x, rng) to average draws')
  x = jnp.asarray(x)
  y = jnp.asarray(y)
  if x.ndim < 2:
    checks.fail('x', x, 'a batch [B, ...] with at least 2 dimensions')
  if not jnp.issubdtype(x.dtype, jnp.floating):
    checks.fail('x', x.dtype, 'a floating-point array', error=TypeError)
  if y.shape != (x.shape[0],) or not jnp.issubdtype(y.dtype, jnp.integer):
    checks.fail('y', y, f'integer labels of shape ({x.shape[0]},)')
  if not isinstance(x, jax.core.Tracer):
    checks.all_in_range('x', x, 0.0, 1.0)
  return x, y.astype(jnp.int32), _per_example(eps_name, eps, x.shape[0])


def _per_example(name, value, batch, positive=False):
  if isinstance(value, jax.core.Tracer):
    arr = jnp.asarray(value, jnp.float32)
  else:
    arr = np.asarray(value, np.float64)
    if positive:
      checks.all_in_range(name, arr, 0.0)
      if (arr <= 0).any():
        checks.fail(name, float(arr[arr <= 0].flat[0]), 'values > 0')
    else:
      checks.all_in_range(name, arr, 0.0)
  if arr.shape not in ((), (batch,)):
    checks.fail(name, arr, f'a number or an array of shape ({batch},)')
  return jnp.broadcast_to(jnp.asarray(arr, jnp.float32), (batch,))


def _bcast(v, x):
  return v.reshape((-1,) + (1,) * (x.ndim - 1))


def _l2(v):
  return jnp.sqrt(jnp.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))


def _direction(g, norm):
  if norm == 'Linf':
    return jnp.sign(g)
  return g / (_l2(g) + _TINY)


def _project(z, x, eps, norm):
  """Onto the eps-ball around x (Linf: clip; L2: rescale), then into [0, 1]. eps is broadcast [B, 1, ...]."""
  if norm == 'Linf':
    z = jnp.clip(z, x - eps, x + eps)
  else:
    delta = z - x
    n = _l2(delta)
    z = x + delta / (n + _TINY) * jnp.minimum(eps, n)
  return jnp.clip(z, 0.0, 1.0)


def _evaluator(apply_fn, params, y, eot, stochastic):
  """(x, key) -> (per-example CE [B], its gradient [B, ...], softmax [B, C]), averaged over `eot` draws."""

  def one(x, rng):
    def total(xx):
      logits = apply_fn(params, xx, rng) if stochastic else apply_fn(params, xx)
      logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
      ce = -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]
      return jnp.sum(ce), (ce, jnp.exp(logp))
    (_, (ce, probs)), g = jax.value_and_grad(total, has_aux=True)(x)
    return ce, g, probs

  def evaluate(x, key):
    if not stochastic:
      return one(x, None)
    ce, g, probs = jax.vmap(one, in_axes=(None, 0))(x, jax.random.split(key, eot))
    return ce.mean(0), g.mean(0), probs.mean(0)

  def predict(x, key):
    def probs_of(rng):
      logits = apply_fn(params, x, rng) if stochastic else apply_fn(params, x)
      return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    if not stochastic:
      return probs_of(None)
    return jax.vmap(probs_of)(jax.random.split(key, eot)).mean(0)

  return evaluate, predict


def _random_sphere(key, x, eps, norm):
  if norm == 'Linf':
    t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
    t = t / (jnp.max(jnp.abs(t), axis=tuple(range(1, x.ndim)), keepdims=True) + _TINY)
  else:
    t = jax.random.normal(key, x.shape, x.dtype)
    t = t / (_l2(t) + _TINY)
  return jnp.clip(x + eps * t, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'norm', 'steps', 'eot', 'stochastic', 'return_success'))
def _apgd(apply_fn, params, x, y, eps, key, rho, *, norm, steps, eot, stochastic, return_success):
  # One lax.scan over steps + 2 iterations, and the model appears once in the compiled program: iteration -2
  # evaluates the clean input (is it already misclassified?), iteration -1 the random start, iterations
  # 0..steps-1 are APGD's steps. (Separate evaluations before the loop would triple the program to compile.)
  evaluate, _ = _evaluator(apply_fn, params, y, eot, stochastic)
  eps_b = _bcast(eps, x)
  k_start, k_iter = jax.random.split(key)
  x0 = _random_sphere(k_start, x, eps_b, norm)
  flags, windows = _schedule(steps)
  batch = x.shape[0]
  zeros = jnp.zeros(batch, jnp.float32)
  init = dict(
      x=x0, x_old=x0, g=jnp.zeros_like(x), eta=2.0 * eps,
      x_best=x0, g_best=jnp.zeros_like(x), loss_best=zeros, prev_loss=zeros, n_up=jnp.zeros(batch, jnp.int32),
      best_at_check=zeros, halved_at_check=jnp.ones(batch, bool),
      fooled=jnp.zeros(batch, bool), x_fool=x0, clean_wrong=jnp.zeros(batch, bool))

  def body(s, inputs):
    i, is_check, window = inputs
    a = jnp.where(i > 0, 0.75, 1.0)
    eta = _bcast(s['eta'], x)
    z = _project(s['x'] + eta * _direction(s['g'], norm), x, eps_b, norm)
    x_new = _project(s['x'] + a * (z - s['x']) + (1.0 - a) * (s['x'] - s['x_old']), x, eps_b, norm)
    point = jnp.where(i == -2, x, jnp.where(i == -1, x0, x_new))
    loss, g, probs = evaluate(point, jax.random.fold_in(k_iter, i + 2))
    wrong = jnp.argmax(probs, -1) != y

    x_fool = jnp.where(_bcast(wrong, x), x_new, s['x_fool'])
    n_up = s['n_up'] + (loss > s['prev_loss']).astype(jnp.int32)
    better = loss > s['loss_best']
    x_best = jnp.where(_bcast(better, x), x_new, s['x_best'])
    g_best = jnp.where(_bcast(better, x), g, s['g_best'])
    loss_best = jnp.where(better, loss, s['loss_best'])

    oscillating = n_up.astype(jnp.float32) < rho * window.astype(jnp.float32)
    stalled = jnp.logical_not(s['halved_at_check']) & (s['best_at_check'] >= loss_best)
    cut = (oscillating | stalled) & is_check
    restart = _bcast(cut, x)
    stepped = dict(
        x=jnp.where(restart, x_best, x_new), x_old=s['x'], g=jnp.where(restart, g_best, g),
        eta=jnp.where(cut, 0.5 * s['eta'], s['eta']),
        x_best=x_best, g_best=g_best, loss_best=loss_best, prev_loss=loss,
        n_up=jnp.where(is_check, 0, n_up),
        best_at_check=jnp.where(is_check, loss_best, s['best_at_check']),
        halved_at_check=jnp.where(is_check, cut, s['halved_at_check']),
        fooled=s['fooled'] | wrong, x_fool=x_fool, clean_wrong=s['clean_wrong'])
    started = dict(s, g=g, g_best=g, loss_best=loss, prev_loss=loss, best_at_check=loss, fooled=wrong)
    clean = dict(s, clean_wrong=wrong)
    new = jax.tree.map(lambda c, st, sp: jnp.where(i == -2, c, jnp.where(i == -1, st, sp)), clean, started,
                       stepped)
    return new, None

  xs = (jnp.arange(-2, steps), jnp.asarray(np.concatenate([[False, False], flags])),
        jnp.asarray(np.concatenate([[0, 0], windows]).astype(np.int32)))
  s, _ = jax.lax.scan(body, init, xs)
  x_adv = jnp.where(_bcast(s['fooled'], x), s['x_fool'], s['x_best'])
  x_adv = jnp.where(_bcast(s['clean_wrong'], x), x, x_adv).astype(x.dtype)
  success = s['fooled'] | s['clean_wrong']
  return (x_adv, success) if return_success else x_adv


def _uniform_ball(key, x, eps, norm):
  if norm == 'Linf':
    return x + eps * jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
  k_dir, k_rad = jax.random.split(key)
  t = jax.random.normal(k_dir, x.shape, x.dtype)
  t = t / (_l2(t) + _TINY)
  dim = int(np.prod(x.shape[1:]))
  radius = jax.random.uniform(k_rad, (x.shape[0],), x.dtype) ** (1.0 / dim)
  return x + eps * _bcast(radius, x) * t


@functools.partial(jax.jit, static_argnames=('apply_fn', 'norm', 'steps', 'eot', 'random_start', 'stochastic',
                                             'return_success'))
def _pgd(apply_fn, params, x, y, eps, step_size, key, *, norm, steps, eot, random_start, stochastic,
         return_success):
  evaluate, predict = _evaluator(apply_fn, params, y, eot, stochastic)
  eps_b = _bcast(eps, x)
  step_b = _bcast(step_size, x)
  k_start, k_clean, k_iter, k_final = jax.random.split(key, 4)
  clean_wrong = jnp.argmax(predict(x, k_clean), -1) != y
  x0 = jnp.clip(_uniform_ball(k_start, x, eps_b, norm), 0.0, 1.0) if random_start else x

  def body(xk, i):
    _, g, _ = evaluate(xk, jax.random.fold_in(k_iter, i))
    return _project(xk + step_b * _direction(g, norm), x, eps_b, norm), None

  x_last, _ = jax.lax.scan(body, x0, jnp.arange(steps))
  success = (jnp.argmax(predict(x_last, k_final), -1) != y) | clean_wrong
  x_adv = jnp.where(_bcast(clean_wrong, x), x, x_last).astype(x.dtype)
  return (x_adv, success) if return_success else x_adv
