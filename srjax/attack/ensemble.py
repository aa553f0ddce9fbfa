"""AutoAttack for JAX: the ensemble of APGD-CE, APGD-T / APGD-DLR, FAB-T and Square, run on the points still robust.

References:
  Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
  attacks", ICML 2020, Sec. 4-5: the ensemble (APGD-CE, APGD-T, FAB-T, Square with 5,000 queries), each attack
  run only on the points the previous ones did not fool, and for randomised defences APGD-CE and APGD-DLR with
  EOT (the AutoAttack code's version='rand', 20 draws).
"""
from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from srjax import checks
from srjax.attack import boundary
from srjax.attack import common
from srjax.models.apply_fn import takes_key
from srjax.attack import gradient
from srjax.attack import random_search

ATTACKS = ('apgd-ce', 'apgd-dlr', 'apgd-t', 'fab-t', 'square')
VERSIONS = ('standard', 'rand', 'custom')
STANDARD = ('apgd-ce', 'apgd-t', 'fab-t', 'square')
RAND = ('apgd-ce', 'apgd-dlr')
RAND_EOT = 20


class AttackLog(NamedTuple):
  """One line of AutoAttack's log.

  Attributes:
    attack: 'clean' (the model on x) or an attack name.
    attacked: how many points the attack ran on (the points still robust before it).
    robust_accuracy: the fraction of all points still classified correctly after it, in [0, 1].
    seconds: its wall time (including compilation on a first call).
    eot: noise draws per gradient and per judged prediction (20 for version='rand' on a model that takes a key,
      1 for a deterministic model), so a log says which protocol produced its numbers.
  """
  attack: str
  attacked: int
  robust_accuracy: float
  seconds: float
  eot: int = 1


class AutoAttackResult(NamedTuple):
  """What `autoattack` returns.

  Attributes:
    x_adv: [B, ...] the first adversarial input found per point (x where none), inside the eps-ball and [0, 1].
    robust: [B] bool, still correctly classified after every attack.
    log: tuple of AttackLog, 'clean' first, then one per attack in the order run.
  """
  x_adv: jax.Array
  robust: jax.Array
  log: tuple


def autoattack(apply_fn: Callable[..., jax.Array], params: Any, x: jax.Array, y: jax.Array, *, eps: Any,
               norm: str = 'Linf', key: jax.Array, version: str | None = None,
               attacks: Sequence[str] | None = None, eot: int | None = None,
               steps: int = 100, queries: int = 5000, n_targets: int = 9, verbose: bool = False
               ) -> AutoAttackResult:
  """AutoAttack: attacks in order, each on the points no earlier attack fooled.

  Versions (Croce & Hein 2020):
    * 'standard' (default for a deterministic model): APGD-CE, APGD-T (targeted DLR, `n_targets` targets),
      FAB-T (`n_targets` targets), Square (`queries` queries); one restart each;
    * 'rand' (default for a model that takes a key, i.e. not `deterministic`): APGD-CE and APGD-DLR with EOT over `eot`
      draws (default 20);
    * 'custom': the attacks named in `attacks`, in that order, from 'apgd-ce', 'apgd-dlr', 'apgd-t', 'fab-t',
      'square'.
  First the model classifies x; a clean error is never attacked (robust = False, x_adv = x). Then each attack
  runs on the points still robust only (gathered and padded to a power-of-two size, so few programs compile);
  a point counts as fooled when the model (the EOT-mean softmax for a stochastic model, fresh draws)
  misclassifies the attack's output and that output lies in the eps-ball, and is never attacked again: its
  x_adv stays the first adversarial input found. Each attack draws per example (stream id = the point's
  position in x), so on a deterministic model every point meets each attack exactly as a run of that attack on
  all of x would attack it: the ensemble's robust accuracy is at most that of each of its parts.

  Args:
    apply_fn: `apply_fn(params, x, key) -> logits [B, C]`; a deterministic model wrapped with
      `srjax.models.apply_fn.deterministic(f)`.
    params: the first argument of `apply_fn`.
    x: clean inputs [B, ...] in [0, 1] (images [B, H, W, C] when Square runs).
    y: true labels [B] int.
    eps: the radius, a number >= 0 or [B].
    norm: 'L2' or 'Linf'.
    key: PRNG key; an attack uses `fold_in(key, ATTACKS.index(name))`, whatever the other attacks, so
      `version='custom', attacks=[name]` with the same key replays that part of an ensemble run.
    version: 'standard', 'rand' or 'custom' (default: 'standard' for a `deterministic` model, else 'rand').
    attacks: the attack names for version='custom' (only then).
    eot: draws per gradient for the APGD attacks of a stochastic model (default: 20 for 'rand', else 1).
    steps: APGD and FAB iterations per run (AutoAttack: 100).
    queries: Square's budget (AutoAttack: 5,000).
    n_targets: targets of APGD-T and FAB-T (AutoAttack: 9), capped at C - 1.
    verbose: print each log line as it is made.

  Returns:
    AutoAttackResult(x_adv, robust, log).

  Raises:
    ValueError: eps < 0, an unknown norm, version or attack name, `attacks` without version='custom' (or
      none with it), x outside [0, 1], a model with too few classes for an attack (APGD-DLR: 3, APGD-T: 4).

  References:
    Croce & Hein 2020, Sec. 4-5 (the ensemble and its versions).
  """
  stochastic = takes_key(apply_fn)
  if version is None:
    version = 'rand' if stochastic else 'standard'
  checks.one_of('version', version, VERSIONS)
  if version == 'custom':
    if not attacks:
      checks.fail('attacks', attacks, "a non-empty list of attack names with version='custom'")
    for name in attacks:
      checks.one_of('attacks', name, ATTACKS)
    names = tuple(attacks)
  else:
    if attacks is not None:
      checks.fail('attacks', attacks, "None unless version='custom'")
    names = STANDARD if version == 'standard' else RAND
  if eot is None:
    eot = RAND_EOT if (stochastic and version == 'rand') else 1
  x, y, eps_b = common.validate(x, y, eps, norm, eot, apply_fn=apply_fn, steps=steps)
  checks.integer('queries', queries, 1)
  checks.integer('n_targets', n_targets, 1)
  classes = common.num_classes(apply_fn, params, x)
  if 'apgd-dlr' in names:
    common.check_classes('attacks', classes, 3, 'APGD-DLR')
  if 'apgd-t' in names:
    common.check_classes('attacks', classes, 4, 'APGD-T')
  batch = x.shape[0]
  ids = jnp.arange(batch, dtype=jnp.int32)

  def fooled_by(x_adv, xs, ys, es, k):
    probs = common.predict(apply_fn, params, x_adv, k, eot=eot)
    return (jnp.argmax(probs, -1) != ys) & common.inside(x_adv, xs, es, norm)

  start = time.perf_counter()
  k_clean, k_attacks = jax.random.split(key)
  probs = common.predict(apply_fn, params, x, k_clean, eot=eot)
  robust = np.array(jnp.argmax(probs, -1) == y)
  x_adv = x
  log = [AttackLog('clean', batch, float(robust.mean()), time.perf_counter() - start, eot)]
  if verbose:
    print(_line(log[-1]), flush=True)
  for name in names:
    start = time.perf_counter()
    k_a = jax.random.fold_in(k_attacks, ATTACKS.index(name))
    k_run, k_check = jax.random.split(k_a)
    attacked = int(robust.sum())

    def run(xs, ys, es, ii, name=name, k_run=k_run, k_check=k_check):
      out = _run_one(name, apply_fn, params, xs, ys, es, ii, k_run, norm=norm, steps=steps, queries=queries,
                     n_targets=n_targets, eot=eot)
      return out, fooled_by(out, xs, ys, es, k_check)

    idx, out = common.on_subset(run, robust, x, y, eps_b, ids)
    if out is not None:
      fooled = np.asarray(out[1])
      x_adv = x_adv.at[idx[fooled]].set(out[0][fooled].astype(x.dtype))
      robust[idx[fooled]] = False
    jax.block_until_ready(x_adv)
    log.append(AttackLog(name, attacked, float(robust.mean()), time.perf_counter() - start, eot))
    if verbose:
      print(_line(log[-1]), flush=True)
  return AutoAttackResult(x_adv, jnp.asarray(robust), tuple(log))


def _line(entry):
  return (f'{entry.attack:>9}: robust accuracy {100 * entry.robust_accuracy:.2f}% '
          f'(attacked {entry.attacked}, {entry.seconds:.1f} s)')


def _run_one(name, apply_fn, params, x, y, eps, ids, key, *, norm, steps, queries, n_targets, eot):
  """One attack of the ensemble on a (padded) sub-batch; returns its x_adv."""
  if name in ('apgd-ce', 'apgd-dlr'):
    x_adv, _ = gradient.apgd_run(apply_fn, params, x, y, y, eps, key, ids, jnp.float32(0.75), norm=norm,
                                 steps=steps, eot=eot, loss=name[5:], per_example=True)
    return x_adv
  if name == 'apgd-t':
    return gradient.apgd_targeted(apply_fn, params, x, y, eps=eps, norm=norm, steps=steps, key=key,
                                  n_targets=n_targets, eot=eot, index=ids).x_adv
  if name == 'fab-t':
    return boundary.fab(apply_fn, params, x, y, eps=eps, norm=norm, steps=steps, key=key, n_targets=n_targets,
                        eot=eot).x_adv
  return random_search.square(apply_fn, params, x, y, eps=eps, norm=norm, queries=queries, key=key, eot=eot,
                              index=ids).x_adv
