"""The Square attack (Andriushchenko et al. 2020): score-based random search in L2 and Linf, no gradients.

Each iteration proposes one change of the current best perturbation inside a random square window and keeps it
when it lowers the margin loss z_y - max_{i != y} z_i; the window's side follows the paper's schedule of p, the
fraction of pixels changed. All examples run in one compiled `lax.while_loop` that stops when every example is
fooled or the queries are spent; a fooled example stops changing (masked updates). Random draws are per example
(`fold_in(key, index[i])`), so a sub-batch given the examples' positions reproduces a run on the whole batch.

References:
  Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial attack via
  random search", ECCV 2020: Algorithm 1 (random search), Algorithm 2 (Linf proposals, vertical-stripe init),
  Algorithm 3 and Sec. 3.2 (L2 proposals: the meta-pattern of nested squares, mass moved between two windows),
  Sec. 4 / Appendix (the p schedule, halved at fixed fractions of the budget, p_init = 0.8 in AutoAttack).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from srjax import checks
from srjax.attack import common
from srjax.attack import losses

# p is halved after each of these iterations of a 10,000-query budget (rescaled to the actual budget), the
# schedule of the AutoAttack implementation of the paper's Sec. 4.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square(apply_fn: Callable[..., jax.Array], params: Any, x: jax.Array, y: jax.Array, *, eps: Any,
           norm: str = 'Linf', queries: int = 5000, key: jax.Array, p_init: float = 0.8, eot: int = 1,
           index: Any = None) -> common.AttackResult:
  """Square attack on the margin loss, L2 or Linf, for images [B, H, W, C].

  Per example (Andriushchenko et al. 2020, Algorithm 1):
    * init (1 query). Linf: x + eps * s with a random sign s per column and channel (vertical stripes). L2: the
      image tiled with 5 x 5 squares, each holding the meta-pattern (below) with a random sign per channel,
      scaled to L2 norm eps. Both clipped to [0, 1].
    * iteration i = 1 .. queries - 1 (1 query each): p_i = p_init / 2^(number of halving points passed, at
      10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 per 10,000 queries); a window of side
      s = round(sqrt(p_i H W)) (Linf: at least 1; L2: at least 3 and odd) at a uniform position.
        Linf (Algorithm 2): the window of each channel is set to +eps or -eps (random sign) around x; if that
          changes nothing the signs are flipped (the compiled form of "resample until it changes").
        L2 (Algorithm 3): a second window of the same side is drawn; the perturbation's mass in both windows
          is moved into the first, as the meta-pattern eta (two halves of nested squares of weights
          sum_{k >= d} 1/(k+1)^2 at Chebyshev distance d from their centre, opposite signs, transposed with
          probability 1/2) with a random sign per channel plus the normalised old content of the window;
          the whole perturbation is then rescaled to L2 norm eps.
      The proposal is clipped to the eps-ball and [0, 1] and replaces the current point when its margin is
      lower. An example stops when its margin is <= 0 (fooled).

  Args:
    apply_fn: `apply_fn(params, x, key) -> logits [B, C]`; a deterministic model wrapped with
      `srjax.models.apply_fn.deterministic(f)`.
    params: the first argument of `apply_fn`.
    x: clean images [B, H, W, C] float in [0, 1], H, W >= 3 for L2.
    y: true labels [B] int.
    eps: radius >= 0, a number or an array [B].
    norm: 'L2' or 'Linf'.
    queries: the query budget per example >= 1 (AutoAttack: 5,000); one model evaluation each.
    key: PRNG key; example i draws from `fold_in(key, index[i])`.
    p_init: the initial fraction of pixels changed, in (0, 1] (AutoAttack: 0.8).
    eot: for a stochastic model, the margin of the logits averaged over `eot` draws.
    index: None or int [B] per-example stream ids (default arange(B)).

  Returns:
    AttackResult(x_adv, success): the fooled point, or x for an example not fooled.

  Raises:
    ValueError: eps < 0, an unknown norm, queries < 1, p_init outside (0, 1], x outside [0, 1], x not
      [B, H, W, C], an L2 attack on images smaller than 3 x 3.

  References:
    Andriushchenko et al. 2020, Algorithms 1-3, Sec. 3.1-3.2 and 4.
  """
  x, y, eps_b = common.validate(x, y, eps, norm, eot, apply_fn=apply_fn, steps=queries, steps_name='queries')
  checks.in_range('p_init', p_init, 0.0, 1.0, low_open=True)
  if x.ndim != 4:
    checks.fail('x', x, 'images [B, H, W, C]')
  if norm == 'L2' and min(x.shape[1:3]) < 3:
    checks.fail('x', x, "images of at least 3 x 3 pixels for norm='L2'")
  ids = common.example_index(index, x.shape[0])
  return square_run(apply_fn, params, x, y, eps_b, key, ids, jnp.float32(p_init), norm=norm, queries=queries,
                    eot=eot)


def p_schedule(i, queries, p_init):
  """p at iteration i (traced int) of a `queries` budget: p_init halved at each rescaled halving point."""
  it = (i * 10000) // queries
  passed = sum((it > h).astype(jnp.int32) for h in _HALVINGS)
  return p_init / (2.0 ** passed.astype(jnp.float32))


def _window(key, s, height, width, rows, cols):
  """A uniform square window of side s [traced int]: mask [H, W] bool."""
  k_h, k_w = jax.random.split(key)
  vh = jax.random.randint(k_h, (), 0, height - s + 1)
  vw = jax.random.randint(k_w, (), 0, width - s + 1)
  return (rows >= vh) & (rows < vh + s) & (cols >= vw) & (cols < vw + s), vh, vw


def _nested(r, q, n, m, harmonic):
  """Nested-squares weights of an n x m block at (r, q): sum_{k=d}^{M-1} 1/(k+1)^2, d the Chebyshev distance."""
  d = jnp.maximum(jnp.abs(r - n // 2), jnp.abs(q - m // 2))
  big_m = jnp.maximum(n // 2 + 1, m // 2 + 1)
  return harmonic[big_m] - harmonic[jnp.clip(d, 0, harmonic.shape[0] - 1)]


def _meta_pattern(r, q, s, transpose, harmonic):
  """The paper's L2 meta-pattern eta of side s at window coordinates (r, q) (any shape; outside: garbage)."""
  r, q = jnp.where(transpose, q, r), jnp.where(transpose, r, q)
  top = s // 2
  upper = _nested(r, q, top, s, harmonic)
  lower = -_nested(r - top, q, s - top, s, harmonic)
  return jnp.where(r < top, upper, lower)


def _harmonic(size):
  return jnp.asarray(np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, size + 1) ** 2)]), jnp.float32)


def _l2_init(keys, x, eps):
  """The L2 init: 5 x 5 squares of the meta-pattern, a random sign per square and channel, scaled to eps."""
  batch, height, width, channels = x.shape
  side = max(height // 5, 1)
  start = (height - 5 * side) // 2
  harmonic = _harmonic(max(height, width) + 2)
  rows = np.arange(height)[:, None]
  cols = np.arange(width)[None, :]
  br, bc = (rows - start) // side, (cols - start) // side
  valid = (rows >= start) & (cols >= start) & (br < height // side) & (bc < width // side)
  tile = _meta_pattern(jnp.asarray((rows - start) % side), jnp.asarray((cols - start) % side), side, False,
                       harmonic)
  nb = max(height // side, width // side) + 1
  signs = jax.vmap(lambda k: jnp.sign(jax.random.uniform(k, (nb, nb, channels), minval=-1.0, maxval=1.0)))(keys)
  sign_map = signs[:, np.clip(br, 0, nb - 1), np.clip(bc, 0, nb - 1), :]  # [B, H, W, C]
  delta = jnp.where(jnp.asarray(valid)[None, :, :, None], tile[None, :, :, None] * sign_map, 0.0)
  delta = delta / (common.l2(delta) + common.TINY)
  return jnp.clip(x + common.bcast(eps, x) * delta, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'norm', 'queries', 'eot'))
def square_run(apply_fn, params, x, y, eps, key, ids, p_init, *, norm, queries, eot):
  """Square's compiled core (no argument checks; call `square`). Returns AttackResult."""
  batch, height, width, channels = x.shape
  eps_b = common.bcast(eps, x)
  k_model, k_draw = jax.random.split(key)
  keys = jax.vmap(jax.random.fold_in, (None, 0))(k_draw, ids)  # [B] per-example streams
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  harmonic = _harmonic(max(height, width) + 2)

  def margin_of(z, i):
    return losses.margin(common.mean_logits(apply_fn, params, z, jax.random.fold_in(k_model, i), eot), y)

  if norm == 'Linf':
    stripes = jax.vmap(lambda k: jnp.sign(jax.random.uniform(jax.random.fold_in(k, 0), (1, width, channels),
                                                             minval=-1.0, maxval=1.0)))(keys)
    x_init = jnp.clip(x + eps_b * stripes, 0.0, 1.0)
  else:
    x_init = _l2_init(jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys), x, eps)

  def propose_linf(k, xb, xc, e, s):
    k_win, k_sign = jax.random.split(k)
    mask, _, _ = _window(k_win, s, height, width, rows, cols)
    sign = jnp.sign(jax.random.uniform(k_sign, (channels,), minval=-1.0, maxval=1.0))
    m = mask[:, :, None]

    def with_sign(sg):
      cand = jnp.where(m, xc + e * sg, xb)
      return jnp.clip(cand, 0.0, 1.0)
    cand = with_sign(sign)
    unchanged = jnp.all(jnp.abs(cand - xb) < 1e-7)
    return jnp.where(unchanged, with_sign(-sign), cand)

  def propose_l2(k, xb, xc, e, s):
    k_w1, k_w2, k_sign, k_t = jax.random.split(k, 4)
    m1, vh, vw = _window(k_w1, s, height, width, rows, cols)
    m2, _, _ = _window(k_w2, s, height, width, rows, cols)
    m1c, m2c = m1[:, :, None], m2[:, :, None]
    delta = xb - xc
    norm_w1 = jnp.sqrt(jnp.sum(jnp.where(m1c, delta, 0.0) ** 2, axis=(0, 1), keepdims=True))  # [1, 1, C]
    norm_img = jnp.sqrt(jnp.sum(delta ** 2))
    norm_wins = jnp.sqrt(jnp.sum(jnp.where(m1c | m2c, delta, 0.0) ** 2))
    transpose = jax.random.bernoulli(k_t)
    eta = _meta_pattern(rows - vh, cols - vw, s, transpose, harmonic)
    eta = jnp.where(m1, eta, 0.0)
    eta = eta / (jnp.sqrt(jnp.sum(eta ** 2)) + common.TINY)
    sign = jnp.sign(jax.random.uniform(k_sign, (channels,), minval=-1.0, maxval=1.0))
    new = eta[:, :, None] * sign + jnp.where(m1c, delta, 0.0) / (norm_w1 + common.TINY)
    new_norm = jnp.sqrt(jnp.sum(jnp.where(m1c, new, 0.0) ** 2, axis=(0, 1), keepdims=True))
    budget = jnp.sqrt(jnp.maximum(e ** 2 - norm_img ** 2, 0.0) / channels + norm_wins ** 2)
    new = new / (new_norm + common.TINY) * budget
    delta = jnp.where(m1c, new, jnp.where(m2c, 0.0, delta))
    delta = delta / (jnp.sqrt(jnp.sum(delta ** 2)) + common.TINY) * e
    return jnp.clip(xc + delta, 0.0, 1.0)

  def side(i):
    p = p_schedule(i, queries, p_init)
    s = jnp.round(jnp.sqrt(p * height * width)).astype(jnp.int32)
    if norm == 'Linf':
      return jnp.clip(s, 1, min(height, width))
    s = jnp.maximum(s, 3)
    s = s + (s % 2 == 0)
    return jnp.minimum(s, min(height, width))

  propose = propose_linf if norm == 'Linf' else propose_l2

  def cond(state):
    i, _, m = state
    return (i < queries) & jnp.any(m > 0)

  def body(state):
    i, xb, m = state
    s = side(i - 1)
    step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, i)
    cand = jax.vmap(propose, in_axes=(0, 0, 0, 0, None))(step_keys, xb, x, eps, s)
    m_new = margin_of(cand, i)
    better = (m > 0) & (m_new < m)
    return i + 1, jnp.where(common.bcast(better, x), cand, xb), jnp.where(better, m_new, m)

  m0 = margin_of(x_init, 0)
  clean = margin_of(x, queries) <= 0  # key index queries: unused by the iterations
  state = (jnp.int32(1), x_init, jnp.where(clean, -1.0, m0))
  _, x_best, m_best = jax.lax.while_loop(cond, body, state)
  fooled = (m_best <= 0) & ~clean
  x_adv = jnp.where(common.bcast(fooled, x), x_best, x).astype(x.dtype)
  return common.AttackResult(x_adv, fooled | clean)
