"""The measurements, each a value (`Measurement`: its name, group, threat model and the function computing its
per-example numbers), the `Evaluator` that computes them for one model, and the resumable loop over models."""
from __future__ import annotations

import dataclasses
import functools
import time
import zlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from eval import scaffold
from eval.robustness.settings import Model, Settings
from srjax import attack
from srjax import attribution
from srjax.data.batches import map_batches


def draw_key(settings: Settings, *names: Any) -> jax.Array:
  key = jax.random.key(settings.seed)
  for name in names:
    key = jax.random.fold_in(key, zlib.crc32(str(name).encode()) & 0x7FFFFFFF)
  return key


def spans(n: int, batch: int):
  for start in range(0, n, batch):
    yield start, min(start + batch, n)


def map_rows(fn: Callable[[np.ndarray, np.ndarray, jax.Array], Any], x: np.ndarray, y: np.ndarray,
                 batch: int, key: jax.Array) -> list[np.ndarray]:
  """fn(x_batch, y_batch, key_batch) -> array or tuple of arrays [batch, ...] over equal-size (padded) batches."""
  # The last batch repeats its last real example (no zero image reaches an attack's [0, 1] check).
  out = map_batches(lambda xb, yb, i: fn(xb, yb, jax.random.fold_in(key, i)), (x, y), batch, fill=None)
  return list(out) if isinstance(out, tuple) else [out]


def attack_grid(settings: Settings, norm: str) -> tuple[float, ...]:
  """The eps values attacked for `norm`: the regular grid, then the large eps (none when the grid is empty)."""
  eps, large = (settings.l2_eps, settings.l2_large) if norm == 'L2' else (settings.linf_eps, settings.linf_large)
  return tuple(eps) + ((large,) if eps else ())


def check_eps(settings: Settings, norm: str) -> float | None:
  """The eps of the black-box checks: the largest eps of the regular grid (None when it is empty)."""
  eps = settings.l2_eps if norm == 'L2' else settings.linf_eps
  return max(eps) if eps else None


def merge_logs(logs: Sequence[Sequence[attack.AttackLog]], sizes: Sequence[int]) -> list[list[Any]]:
  """AutoAttack logs of consecutive chunks of one subset as one log: [[attack, attacked, robust acc, seconds]].

  The attacked counts and seconds add; robust accuracy is the size-weighted mean over the chunks.
  """
  total = float(sum(sizes))
  merged = []
  for entries in zip(*logs):
    merged.append([entries[0].attack, int(sum(e.attacked for e in entries)),
                   float(sum(e.robust_accuracy * n for e, n in zip(entries, sizes)) / total),
                   float(sum(e.seconds for e in entries))])
  return merged


class Evaluator:
  """The measurements of one model on the shared test examples, each a function returning a JSON-able row."""

  def __init__(self, model: Model, x: np.ndarray, y: np.ndarray, settings: Settings):
    self.m, self.x, self.y, self.s = model, x, y, settings
    t = model.trained
    self.apply_fn, self.variables = t.apply_fn, t.variables
    self._predict = jax.jit(t.predict)
    self.eot = settings.eot if model.stochastic else 1
    self.draws = (settings.draws or model.draws) if model.stochastic else 1
    self.xa, self.ya = x[:settings.n_attack], y[:settings.n_attack]

  def labels(self, x: np.ndarray, key: jax.Array) -> np.ndarray:
    """[n] the deployed prediction (the NSDE: softmax averaged over its test-time draws)."""
    def fn(xb, yb, kb):
      del yb
      return jnp.argmax(self._predict(self.variables, jnp.asarray(xb), kb), axis=-1)
    return map_rows(fn, x, np.zeros(x.shape[0], np.int32), self.s.batch, key)[0]

  def judge(self, x_adv: np.ndarray, key: jax.Array) -> np.ndarray:
    """[n] 0/1 still correct on x_adv by AutoAttack's criterion: the argmax of the softmax averaged over the
    attack's EOT draws (one for a deterministic model)."""
    probs = attack.common.predict(self.apply_fn, self.variables, jnp.asarray(x_adv), key, eot=self.eot)
    return (np.asarray(jnp.argmax(probs, -1)) == self.ya).astype(int)

  def clean(self, key):
    pred = self.labels(self.x, key)
    return {'correct': (pred == self.y).astype(int).tolist(), 'pred': pred.astype(int).tolist()}

  def noise(self, level, key):
    k_noise, k_pred = jax.random.split(key)
    noisy = np.clip(self.x + level * np.asarray(jax.random.normal(k_noise, self.x.shape)), 0.0, 1.0)
    return {'correct': (self.labels(noisy.astype(np.float32), k_pred) == self.y).astype(int).tolist()}

  def autoattack(self, norm, eps, key):
    """AutoAttack ('rand' for a stochastic model, 'standard' otherwise) in chunks of attack_batch."""
    version = 'rand' if self.m.stochastic else 'standard'
    robust, logs, sizes = [], [], []
    for i, (lo, hi) in enumerate(spans(self.xa.shape[0], self.s.attack_batch)):
      res = attack.autoattack(self.apply_fn, self.variables, jnp.asarray(self.xa[lo:hi]),
                              jnp.asarray(self.ya[lo:hi]), eps=eps, norm=norm, key=jax.random.fold_in(key, i),
                              version=version, eot=self.eot, steps=self.s.steps,
                              queries=self.s.queries, n_targets=self.s.n_targets)
      robust.append(np.asarray(res.robust))
      logs.append(res.log)
      sizes.append(hi - lo)
    return {'correct': np.concatenate(robust).astype(int).tolist(), 'version': version,
            'log': merge_logs(logs, sizes)}

  def square(self, norm, eps, key):
    """The gradient-free check: Square with one draw per query, its output judged as AutoAttack judges."""
    k_attack, k_judge = jax.random.split(key)

    def fn(xb, yb, kb):
      return attack.square(self.apply_fn, self.variables, jnp.asarray(xb), jnp.asarray(yb), eps=eps, norm=norm,
                           queries=self.s.queries, key=kb, eot=1).x_adv

    x_adv = map_rows(fn, self.xa, self.ya, self.s.attack_batch, k_attack)[0]
    return {'correct': self.judge(x_adv, k_judge).tolist()}

  def transfer(self, source: 'Evaluator', norm, eps, key):
    """The transfer check: APGD-CE crafted on `source` (deterministic), judged on this model."""
    k_attack, k_judge = jax.random.split(key)

    def fn(xb, yb, kb):
      return attack.apgd(source.apply_fn, source.variables, jnp.asarray(xb), jnp.asarray(yb), eps=eps, norm=norm,
                         steps=self.s.steps, key=kb, eot=1).x_adv

    x_adv = map_rows(fn, self.xa, self.ya, self.s.attack_batch, k_attack)[0]
    return {'correct': self.judge(x_adv, k_judge).tolist(), 'source': source.m.name}

  def stability(self, key, pred, tunnel: bool):
    n = self.s.n_attr
    k_pert, k_model = jax.random.split(key)

    def fn(xb, tb, kb):
      st = attribution.stability(self.apply_fn, self.variables, jnp.asarray(xb), jnp.asarray(tb), key=kb,
                                 radius=self.s.stability_radius, n_samples=self.s.stability_samples,
                                 steps=self.s.ig_steps, method=self.s.ig_method, chunk=self.s.ig_chunk,
                                 model_key=k_model, draws=self.draws,
                                 tunnel_samples=self.s.tunnel_samples if tunnel else 0,
                                 tunnel_stdev=self.s.tunnel_stdev)
      return st.relative_l2, st.max_sensitivity, st.log_abs_change

    rel, mx, log_abs = map_rows(fn, self.x[:n], np.asarray(pred[:n], np.int32), self.s.attr_batch, k_pert)
    return {'relative_l2': rel.tolist(), 'max_sensitivity': mx.tolist(), 'log_abs_change': log_abs.tolist()}

  def abc(self, key):
    n = self.s.n_attr

    def fn(xb, yb, kb):
      res = attribution.abc(self.apply_fn, self.variables, jnp.asarray(xb), key=kb, n_samples=self.s.abc_samples,
                            fraction=self.s.abc_fraction, steps=self.s.ig_steps, method=self.s.ig_method,
                            chunk=self.s.ig_chunk, draws=self.draws)
      return res.score, res.label

    score, label = map_rows(fn, self.x[:n], self.y[:n], self.s.attr_batch, key)
    return {'score': score.tolist(), 'correct': (label == self.y[:n]).astype(int).tolist(), 'draws': self.draws}


@dataclasses.dataclass(frozen=True)
class Measurement:
  """One measurement of a model, as a value.

  Attributes:
    name: the row's name (its key in rows.jsonl, its column in results.md; formatted once, here, and never
      parsed back).
    group: what it measures: 'clean', 'noise', 'autoattack', 'square', 'transfer', 'stability',
      'stability_tunnel' or 'abc'.
    compute: (evaluator, key, context) -> the JSON-able row of per-example numbers; context holds
      'clean_pred' (the model's clean predictions) and 'source' (the transfer source's `Evaluator` or None).
    norm: 'L2' or 'Linf' for the attacks, else None.
    level: the noise std or the attack's eps, else None.
  """
  name: str
  group: str
  compute: Callable[..., dict[str, Any]] = dataclasses.field(compare=False, repr=False)
  norm: str | None = None
  level: float | None = None


@functools.lru_cache(maxsize=None)
def plan(settings: Settings) -> tuple[Measurement, ...]:
  """Every measurement these settings define, in the order they run (stability needs the clean predictions).
  Built once per settings (`row_name` looks names up in it)."""
  out = [Measurement('clean', 'clean', lambda ev, key, ctx: ev.clean(key))]
  out += [Measurement(f'noise={v:g}', 'noise', lambda ev, key, ctx, v=v: ev.noise(v, key), level=v)
          for v in settings.noise]
  for norm in ('L2', 'Linf'):
    out += [Measurement(f'aa-{norm}={e:g}', 'autoattack', lambda ev, key, ctx, n=norm, e=e: ev.autoattack(n, e, key),
                        norm=norm, level=e) for e in attack_grid(settings, norm)]
  for norm in ('L2', 'Linf'):
    e = check_eps(settings, norm)
    if e is not None:
      out.append(Measurement(f'square-{norm}={e:g}', 'square',
                             lambda ev, key, ctx, n=norm, e=e: ev.square(n, e, key), norm=norm, level=e))
      out.append(Measurement(f'transfer-{norm}={e:g}', 'transfer',
                             lambda ev, key, ctx, n=norm, e=e: ev.transfer(ctx['source'], n, e, key),
                             norm=norm, level=e))
  out += [Measurement('stability', 'stability', lambda ev, key, ctx: ev.stability(key, ctx['clean_pred'], False)),
          Measurement('stability-tunnel', 'stability_tunnel',
                      lambda ev, key, ctx: ev.stability(key, ctx['clean_pred'], True)),
          Measurement('abc', 'abc', lambda ev, key, ctx: ev.abc(key))]
  return tuple(out)


def row_name(settings: Settings, group: str, norm: str | None = None, level: float | None = None) -> str:
  """The name of the one measurement of `plan(settings)` with this group, norm and level."""
  found = [m.name for m in plan(settings) if (m.group, m.norm, m.level) == (group, norm, level)]
  if len(found) != 1:
    raise KeyError(f'no single measurement ({group}, {norm}, {level}) in these settings: {found}')
  return found[0]


def measurements(settings: Settings, model: Model, source: Model | None = None) -> list[Measurement]:
  """The measurements of `model`: the black-box checks (Square, transfer) only for a stochastic model, and the
  transfer only when `source` (the deterministic model whose APGD examples it meets) exists."""
  return [m for m in plan(settings)
          if (m.group not in ('square', 'transfer') or model.stochastic)
          and (m.group != 'transfer' or source is not None)]


def transfer_sources(models_a: Sequence[Model], models_b: Sequence[Model]) -> dict[str, Model | None]:
  """{stochastic model's key: the deterministic model of the other arm it is attacked from} (seed i from the
  other arm's i-th deterministic model, cycling); None when the other arm has no deterministic model."""
  out: dict[str, Model | None] = {}
  for mine, other in ((models_a, models_b), (models_b, models_a)):
    dets = [m for m in other if not m.stochastic]
    for i, m in enumerate(mine):
      if m.stochastic:
        out[m.key] = dets[i % len(dets)] if dets else None
  return out


def evaluate_models(models_a: Sequence[Model], models_b: Sequence[Model], x: np.ndarray, y: np.ndarray,
                    settings: Settings, store: scaffold.RowStore, data_tag: str
                    ) -> dict[str, dict[str, dict[str, Any]]]:
  """Runs (or reloads from `store`) every measurement of every model; returns {model key: {row name: row}}."""
  models = [*models_a, *models_b]
  sources = transfer_sources(models_a, models_b)
  evaluators = {m.key: Evaluator(m, x, y, settings) for m in models}
  todo = [(m, what) for m in models for what in measurements(settings, m, sources.get(m.key))]
  results: dict[str, dict[str, dict[str, Any]]] = {m.key: {} for m in models}
  for m, what in scaffold.progress(todo, desc='robustness'):
    source = sources.get(m.key)
    extra = f'|from={source.key}@{source.step}' if what.group == 'transfer' else ''
    store_key = f'{m.key}|step={m.step}|{data_tag}|{settings.tag()}|{what.name}{extra}'
    row = store.get(store_key)
    if row is None:
      started = time.time()
      key = draw_key(settings, m.kind, what.name)   # the same draws for every model of a kind: common random numbers
      context = {'clean_pred': results[m.key]['clean']['pred'] if 'clean' in results[m.key] else None,
                 'source': evaluators[source.key] if source is not None else None}
      row = what.compute(evaluators[m.key], key, context)
      row['seconds'] = time.time() - started   # compile included: the first row of each kind compiles
      store.add(store_key, row)
    results[m.key][what.name] = row
  return results
