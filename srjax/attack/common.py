"""Shared pieces of the attacks: argument checks, per-example radii, norms, projections, the predictor.

Layout: inputs are batches `x [B, ...]` in [0, 1]; a radius `eps` is a number or one value per example `[B]`
and is broadcast to `[B, 1, ...]` against x. Norms are 'L2' and 'Linf' over all non-batch axes.

Model protocol (one for the whole package and `srjax.attribution`): `apply_fn(params, x, key) -> logits [B, C]`,
whose randomness (a neural SDE's noise) comes from `key`. A deterministic model is wrapped once,
`srjax.models.apply_fn.deterministic(f)`; the attacks read from that wrapper that its draws are all equal (EOT
must be 1, AutoAttack defaults to 'standard'). (Before this version a `stochastic=` flag said which protocol a
function followed.)
The model must treat batch elements independently (no batch statistics).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from srjax import checks
from srjax.models.apply_fn import check_call, takes_key
from srjax.attack import losses

NORMS = ('L2', 'Linf')
TINY = 1e-12  # normalisation guard: v / (||v|| + 1e-12)


class AttackResult(NamedTuple):
  """What an attack returns.

  Attributes:
    x_adv: [B, ...] adversarial inputs, inside the eps-ball around x and [0, 1]; a point the attack did not
      fool is returned as the attack's best point (APGD) or unchanged (APGD-T, FAB, Square).
    success: [B] bool, the point is misclassified at x_adv (clean errors count as successes).
  """
  x_adv: jax.Array
  success: jax.Array


def validate(x, y, eps, norm, eot, *, apply_fn, steps=None, steps_name='steps'):
  """Checks the arguments every attack shares; returns (x, y int32, eps [B] float32).

  The model and batch checks are `srjax.models.apply_fn.check_call` (shared with `srjax.attribution`).
  """
  x = check_call(apply_fn, x)
  checks.one_of('norm', norm, NORMS)
  if steps is not None:
    checks.integer(steps_name, steps, 1)
  checks.integer('eot', eot, 1)
  if eot > 1 and not takes_key(apply_fn):
    checks.fail('eot', eot, '1 for a deterministic model (srjax.models.apply_fn.deterministic): its draws are '
                'all equal')
  y = jnp.asarray(y)
  if y.shape != (x.shape[0],) or not jnp.issubdtype(y.dtype, jnp.integer):
    checks.fail('y', y, f'integer labels of shape ({x.shape[0]},)')
  if not isinstance(x, jax.core.Tracer):
    checks.all_in_range('x', x, 0.0, 1.0)
  return x, y.astype(jnp.int32), per_example('eps', eps, x.shape[0])


def per_example(name, value, batch, positive=False):
  """A number or an array [batch] of numbers >= 0 (> 0 with `positive`) as float32 [batch]."""
  if isinstance(value, jax.core.Tracer):
    arr = jnp.asarray(value, jnp.float32)
  else:
    arr = np.asarray(value, np.float64)
    checks.all_in_range(name, arr, 0.0)
    if positive and (arr <= 0).any():
      checks.fail(name, float(arr[arr <= 0].flat[0]), 'values > 0')
  if arr.shape not in ((), (batch,)):
    checks.fail(name, arr, f'a number or an array of shape ({batch},)')
  return jnp.broadcast_to(jnp.asarray(arr, jnp.float32), (batch,))


def example_index(index, batch):
  """The per-example stream ids: `index` (ints [batch]) or arange(batch)."""
  if index is None:
    return jnp.arange(batch, dtype=jnp.int32)
  index = jnp.asarray(index)
  if index.shape != (batch,) or not jnp.issubdtype(index.dtype, jnp.integer):
    checks.fail('index', index, f'integer stream ids of shape ({batch},)')
  return index.astype(jnp.int32)


def num_classes(apply_fn, params, x):
  """C of the model's logits [B, C], from its abstract evaluation (no compute)."""
  spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
  return int(jax.eval_shape(apply_fn, params, spec, jax.random.key(0)).shape[-1])


def check_classes(name, classes, minimum, why):
  if classes < minimum:
    checks.fail(name, classes, f'a model with at least {minimum} classes ({why})')


def bcast(v, x):
  """[B] -> [B, 1, ..., 1] against x."""
  return v.reshape((-1,) + (1,) * (x.ndim - 1))


def l2(v):
  """Per-example L2 norm, keepdims [B, 1, ...]."""
  return jnp.sqrt(jnp.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))


def lp(v, norm):
  """Per-example L2 or Linf norm [B]."""
  flat = v.reshape(v.shape[0], -1)
  if norm == 'Linf':
    return jnp.max(jnp.abs(flat), axis=1)
  return jnp.sqrt(jnp.sum(flat * flat, axis=1))


def direction(g, norm):
  """The steepest-ascent direction of unit norm: sign(g) (Linf) or g / ||g||_2 (L2)."""
  if norm == 'Linf':
    return jnp.sign(g)
  return g / (l2(g) + TINY)


def project(z, x, eps, norm):
  """Onto the eps-ball around x (Linf: clip; L2: rescale), then into [0, 1]. eps is broadcast [B, 1, ...]."""
  if norm == 'Linf':
    z = jnp.clip(z, x - eps, x + eps)
  else:
    delta = z - x
    n = l2(delta)
    z = x + delta / (n + TINY) * jnp.minimum(eps, n)
  return jnp.clip(z, 0.0, 1.0)


def inside(x_adv, x, eps, norm, rtol=1e-5):
  """[B] bool: x_adv within the eps-ball (relative float tolerance rtol) and in [0, 1]."""
  dist = lp((x_adv - x).astype(jnp.float32), norm)
  flat = x_adv.reshape(x_adv.shape[0], -1)
  in_box = jnp.all((flat >= 0.0) & (flat <= 1.0), axis=1)
  return (dist <= eps * (1.0 + rtol) + 1e-7) & in_box


def mean_logits(apply_fn, params, x, key, eot):
  """Logits [B, C] of a deterministic model, or their mean over `eot` draws `split(key, eot)`."""
  if not takes_key(apply_fn):
    return apply_fn(params, x, None).astype(jnp.float32)
  draws = jax.vmap(lambda r: apply_fn(params, x, r).astype(jnp.float32))(jax.random.split(key, eot))
  return draws.mean(0)


def mean_probs(apply_fn, params, x, key, eot):
  """Softmax [B, C] of a deterministic model, or the mean softmax over `eot` draws."""
  if not takes_key(apply_fn):
    return jax.nn.softmax(apply_fn(params, x, None).astype(jnp.float32), axis=-1)
  draws = jax.vmap(lambda r: jax.nn.softmax(apply_fn(params, x, r).astype(jnp.float32), -1))(
      jax.random.split(key, eot))
  return draws.mean(0)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'eot'))
def predict(apply_fn: Callable[..., jax.Array], params: Any, x: jax.Array, key: jax.Array, *, eot: int) -> jax.Array:
  """The attacks' prediction: softmax [B, C] (averaged over `eot` draws for a model that takes a key), compiled."""
  return mean_probs(apply_fn, params, x, key, eot)


def bucket(n: int, batch: int) -> int:
  """The padded size of a subset of n examples of a batch: the next power of two >= 8, at most `batch`.

  Attacks on subsets (the points still robust) run at these sizes, so at most log2(B) - 2 programs compile.
  """
  return min(batch, max(8, 1 << max(n - 1, 0).bit_length()))


def on_subset(fn: Callable[..., Any], active: np.ndarray, *arrays: Any) -> tuple[np.ndarray, Any]:
  """Runs `fn(*subset_arrays)` on the examples where `active` holds, padded to `bucket` size.

  Args:
    fn: called with each of `arrays` indexed by the (padded) active positions; returns a pytree of [n, ...].
    active: bool [B] (host array).
    *arrays: arrays [B, ...] (jax or numpy).

  Returns:
    (idx, out): the active positions (int [n]) and `fn`'s outputs cut to them; (idx, None) when none is active.
  """
  idx = np.flatnonzero(active)
  if idx.size == 0:
    return idx, None
  size = bucket(idx.size, active.shape[0])
  padded = np.concatenate([idx, np.full(size - idx.size, idx[0], idx.dtype)])
  out = fn(*(a[padded] for a in arrays))
  return idx, jax.tree.map(lambda o: o[:idx.size], out)


def ranked_targets(apply_fn, params, x, y, key, *, n_targets, classes, eot):
  """The targeted attacks' common start: one prediction (EOT-averaged), then the top-k other classes.

  Returns:
    (targets int [B, k] with k = min(n_targets, classes - 1), best first; clean_wrong bool [B] host array, the
    points already misclassified; the key left for the attack's runs).
  """
  k_pred, k_run = jax.random.split(key)
  probs = predict(apply_fn, params, x, k_pred, eot=eot)
  targets = losses.target_classes(probs, y, min(n_targets, classes - 1))
  return targets, np.array(jnp.argmax(probs, -1) != y), k_run
