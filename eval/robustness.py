"""Robustness and explanation quality of the NSDE ConvNeXt against its ConvNeXt (arXiv 2409.01532, Sec. 4).

    python -m eval.robustness [--workdir DIR ...] [--out results/robustness] [--quick] [--n-test 100]
                              [--n-attr 32] [--apgd-steps 100] [--eot 2] [--draws 2] [--ig-steps 16]
                              [--set field=value ...]

With no --workdir it trains both models with the main job's default config (`configs/spectro.py`: the NSDE,
and the ConvNeXt with `model.kind=convnext`) in `<out>/runs/{nsde,convnext}` through the shared loop, then
evaluates them; a rerun reuses those runs and every finished row. Each --workdir must hold a finished run of
`python -m train.nsde` (either kind); a workdir without a checkpoint is a one-line error.

Cost: dominated by APGD, n_test x apgd_steps x eot forward/backward passes per eps (default 100 x 100 x 2 for
each of the 7 eps values for the NSDE, x 1 for the ConvNeXt), and by the integrated gradients of the attribution
metrics, n_attr x ig_steps x draws passes for each of 1 + stability_samples inputs and once more for ABC (plus
abc_samples x draws forward passes). Each row of results.md's cost table gives its measured seconds (compile
included); the total wall time is printed at the end. Measured on the 2-core CPU, load average ~1.7, with the
default settings on two models trained with the default `configs/spectro.py`: 6 min (the NSDE's seven APGD rows
about 20 s each, its ABC 50 s; the ConvNeXt's rows about 8 s each), plus the two trainings (~25 min each) when no
--workdir is given. `--quick` uses the
`:smoke` preset (with `model.depthwise=conv`, which compiles faster; same math), 24 test spectrograms and tiny
settings (the test runs it); it is compile-bound.

What it measures, per model, on the first --n-test spectrograms of the test split (the same examples for both
models when their data configs agree, so differences are paired):
  * clean accuracy: argmax of the model's prediction (the NSDE's softmax averaged over its test-time draws);
  * Gaussian noise: accuracy on clip(x + s N(0, 1), 0, 1) for intensities s in 0.01..0.2;
  * APGD-CE (`srjax.attack.apgd`, Croce & Hein 2020) in L2 and Linf: accuracy on the adversarial inputs (robust
    accuracy). The NSDE is attacked with EOT over --eot draws per gradient (its noise is on at test time, so a
    single-draw gradient would understate the attack), the deterministic ConvNeXt with one;
  * attribution stability (`srjax.attribution.stability`): the relative L2 change of integrated-gradients
    attributions of the predicted class under uniform input perturbations of Linf radius 0.02 (lower is more
    stable), with the model's own draws held fixed so only the input change counts;
  * ABC (`srjax.attribution.abc`, Jha et al. 2019) on correctly and on incorrectly classified examples;
  * each of these by SNR band of the spectrogram (`Dataset.extras['snr_db']`: < 0 dB, 0-10 dB, >= 10 dB).
The verdict section compares the NSDE with the ConvNeXt on the paper's claims, from the measured numbers: the
difference and a 95% bootstrap interval (paired over examples where possible) for each claim.

Outputs in --out: results.md, rows.jsonl (one finished measurement per line: a killed run resumes), figures
noise.png, apgd.png, attribution.png (each with one panel per SNR band).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time
import zlib
from typing import Any, Callable, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from eval import scaffold  # pylint: disable=wrong-import-position
from srjax import stats
from srjax import attack  # pylint: disable=wrong-import-position
from srjax import attribution  # pylint: disable=wrong-import-position

MODULE = 'eval.robustness'
DEFAULT_OUT = 'results/robustness'
BAND_EDGES = (0.0, 10.0)      # dB: bands < 0, [0, 10), >= 10 (the generator's default range is -10..20 dB)
BAND_NAMES = ('SNR < 0 dB', '0-10 dB', '>= 10 dB')
# The paper's numbers (Sec. 4), for reference next to ours.
PAPER = {'clean accuracy': {'convnext': 0.8720, 'nsde': 0.8288},
         'ABC on correct predictions': {'convnext': 0.497, 'nsde': 0.599}}


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that changes a measured number (it keys the stored rows)."""
  n_test: int = 100
  n_attr: int = 32
  batch: int = 50
  noise: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2)
  l2_eps: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
  linf_eps: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255)
  apgd_steps: int = 100
  eot: int = 2
  draws: int = 2
  ig_steps: int = 16
  ig_method: str = 'gausslegendre'
  ig_chunk: int = 8
  stability_radius: float = 0.02
  stability_samples: int = 4
  abc_samples: int = 32
  abc_fraction: float = 0.05
  seed: int = 0

  def tag(self) -> str:
    return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:10]


# --quick: every kind of measurement once, at the smallest sizes (compile-bound: Linf, the same code path as L2
# with another compile per model, is left out).
QUICK = dict(n_test=24, n_attr=8, batch=24, noise=(0.05, 0.2), l2_eps=(0.5, 2.0), linf_eps=(),
             apgd_steps=4, eot=2, draws=2, ig_steps=4, ig_chunk=4, stability_samples=2, abc_samples=8)


@dataclasses.dataclass
class Model:
  """One trained model to evaluate: what `train.nsde.load_trained` returns, plus its name and kind."""
  name: str
  kind: str                 # 'nsde' or 'convnext'
  stochastic: bool
  trained: Any
  step: int


def _add_arguments(parser: argparse.ArgumentParser) -> None:
  d = Settings()
  parser.add_argument('--n-test', type=int, default=None, help=f'test spectrograms evaluated ({d.n_test})')
  parser.add_argument('--n-attr', type=int, default=None,
                      help=f'of which used for the attribution metrics ({d.n_attr})')
  parser.add_argument('--apgd-steps', type=int, default=None, help=f'APGD iterations ({d.apgd_steps})')
  parser.add_argument('--eot', type=int, default=None, help=f'EOT draws per NSDE gradient ({d.eot})')
  parser.add_argument('--draws', type=int, default=None,
                      help=f'NSDE realisations averaged in its attributions and ABC predictions ({d.draws})')
  parser.add_argument('--ig-steps', type=int, default=None, help=f'integrated-gradients path points ({d.ig_steps})')
  parser.add_argument('--seed', type=int, default=None, help='seed of every draw of the evaluation (0)')


def settings_from(args: argparse.Namespace) -> Settings:
  """The run's Settings: the defaults (or QUICK), then the explicit flags."""
  fields = dict(QUICK) if args.quick else {}
  for flag, field in (('n_test', 'n_test'), ('n_attr', 'n_attr'), ('apgd_steps', 'apgd_steps'), ('eot', 'eot'),
                      ('draws', 'draws'), ('ig_steps', 'ig_steps'), ('seed', 'seed')):
    value = getattr(args, flag)
    if value is not None:
      fields[field] = value
  s = Settings(**fields)
  return dataclasses.replace(s, n_attr=min(s.n_attr, s.n_test), batch=min(s.batch, s.n_test))


# --- models ---------------------------------------------------------------------------------------------------

def _has_checkpoint(workdir: str) -> bool:
  directory = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def _kind(config: Any) -> str:
  model = config.get('model') if hasattr(config, 'get') else None
  kind = model.get('kind') if hasattr(model, 'get') else None
  return str(kind) if kind else 'nsde'


def load_model(workdir: str) -> Model:
  """Loads a finished `train.nsde` run.

  Raises:
    SystemExit: a one-line message when the workdir holds no checkpoint.
  """
  if not _has_checkpoint(workdir):
    raise SystemExit(f'{MODULE}: {workdir} holds no checkpoint; train it first with '
                     f'`python -m train.nsde --config configs/spectro.py --workdir {workdir}`')
  from train import nsde  # pylint: disable=g-import-not-at-top  (the training stack loads only when needed)
  trained = nsde.load_trained(workdir)
  kind = _kind(trained.config)
  step = int(trained.step)
  name = f'{kind} ({os.path.basename(os.path.normpath(workdir))})'
  return Model(name=name, kind=kind, stochastic=kind != 'convnext', trained=trained, step=step)


def train_default_models(out: str, quick: bool, overrides: Sequence[str]) -> list[str]:
  """Trains (or resumes, or reuses) the NSDE and the ConvNeXt with the main job's config; returns the workdirs."""
  from configs import common  # pylint: disable=g-import-not-at-top
  from configs import spectro  # pylint: disable=g-import-not-at-top
  from train import nsde  # pylint: disable=g-import-not-at-top
  workdirs = []
  for kind in ('nsde', 'convnext'):
    config = spectro.get_config('smoke' if quick else None)
    if quick:  # a smoke run is compile-bound: the grouped conv compiles in half the time of 49 shifted adds
      common.override(config, {'model.depthwise': 'conv'})
    common.override(config, list(overrides))
    common.override(config, {'model.kind': kind})
    workdir = os.path.join(out, 'runs', kind)
    nsde.train(config, workdir)   # the shared loop; resumes a partial run, reuses a finished one
    workdirs.append(workdir)
  return workdirs


# --- measurements ---------------------------------------------------------------------------------------------

def _key(settings: Settings, *names: Any) -> jax.Array:
  key = jax.random.key(settings.seed)
  for name in names:
    key = jax.random.fold_in(key, zlib.crc32(str(name).encode()) & 0x7FFFFFFF)
  return key


def _batches(n: int, batch: int):
  for start in range(0, n, batch):
    yield start, min(start + batch, n)


def _pad(a: np.ndarray, size: int) -> np.ndarray:
  if a.shape[0] == size:
    return a
  return np.concatenate([a, np.repeat(a[-1:], size - a.shape[0], axis=0)], axis=0)


def _map_batches(fn: Callable[[np.ndarray, np.ndarray, jax.Array], Any], x: np.ndarray, y: np.ndarray,
                 batch: int, key: jax.Array) -> list[np.ndarray]:
  """fn(x_batch, y_batch, key_batch) -> array or tuple of arrays [batch, ...] over equal-size (padded) batches."""
  outs = []
  for i, (lo, hi) in enumerate(_batches(x.shape[0], batch)):
    res = fn(_pad(x[lo:hi], batch), _pad(y[lo:hi], batch), jax.random.fold_in(key, i))
    res = res if isinstance(res, tuple) else (res,)
    outs.append([np.asarray(r)[:hi - lo] for r in res])
  return [np.concatenate(parts) for parts in zip(*outs)]


class Evaluator:
  """The measurements of one model on one test subset, each a function returning a JSON-able row."""

  def __init__(self, model: Model, x: np.ndarray, y: np.ndarray, settings: Settings):
    self.m, self.x, self.y, self.s = model, x, y, settings
    t = model.trained
    self.apply_fn, self.variables = t.apply_fn, t.variables
    self._predict = jax.jit(t.predict)
    self.eot = settings.eot if model.stochastic else 1
    self.draws = settings.draws if model.stochastic else 1

  def labels(self, x: np.ndarray, key: jax.Array) -> np.ndarray:
    def fn(xb, yb, kb):
      del yb
      return jnp.argmax(self._predict(self.variables, jnp.asarray(xb), kb), axis=-1)
    return _map_batches(fn, x, self.y[:x.shape[0]], self.s.batch, key)[0]

  def clean(self, key):
    pred = self.labels(self.x, key)
    return {'correct': (pred == self.y).astype(int).tolist(), 'pred': pred.astype(int).tolist()}

  def noise(self, level, key):
    k_noise, k_pred = jax.random.split(key)
    noisy = np.clip(self.x + level * np.asarray(jax.random.normal(k_noise, self.x.shape)), 0.0, 1.0)
    return {'correct': (self.labels(noisy.astype(np.float32), k_pred) == self.y).astype(int).tolist()}

  def apgd(self, norm, eps, key):
    k_attack, k_pred = jax.random.split(key)

    def fn(xb, yb, kb):
      return attack.apgd(self.apply_fn, self.variables, jnp.asarray(xb), jnp.asarray(yb), eps=eps, norm=norm,
                         steps=self.s.apgd_steps, key=kb, eot=self.eot, stochastic=True)

    x_adv = _map_batches(fn, self.x, self.y, self.s.batch, k_attack)[0]
    return {'correct': (self.labels(x_adv, k_pred) == self.y).astype(int).tolist()}

  def stability(self, key, pred):
    n = self.s.n_attr
    k_pert, k_model = jax.random.split(key)

    def fn(xb, tb, kb):
      st = attribution.stability(self.apply_fn, self.variables, jnp.asarray(xb), jnp.asarray(tb), key=kb,
                                 radius=self.s.stability_radius, n_samples=self.s.stability_samples,
                                 steps=self.s.ig_steps, method=self.s.ig_method, chunk=self.s.ig_chunk,
                                 stochastic=True, model_key=k_model, draws=self.draws)
      return st.relative_l2, st.max_sensitivity, st.log_abs_change

    rel, mx, log_abs = _map_batches(fn, self.x[:n], np.asarray(pred[:n], np.int32), self.s.batch, k_pert)
    return {'relative_l2': rel.tolist(), 'max_sensitivity': mx.tolist(), 'log_abs_change': log_abs.tolist()}

  def abc(self, key):
    n = self.s.n_attr

    def fn(xb, yb, kb):
      res = attribution.abc(self.apply_fn, self.variables, jnp.asarray(xb), key=kb, n_samples=self.s.abc_samples,
                            fraction=self.s.abc_fraction, steps=self.s.ig_steps, method=self.s.ig_method,
                            chunk=self.s.ig_chunk, stochastic=True, draws=self.draws)
      return res.score, res.label

    score, label = _map_batches(fn, self.x[:n], self.y[:n], self.s.batch, key)
    return {'score': score.tolist(), 'correct': (label == self.y[:n]).astype(int).tolist()}


def measurements(settings: Settings) -> list[tuple[str, tuple]]:
  """(row name, arguments) of every measurement, in order (stability needs the clean predictions)."""
  rows = [('clean', ())]
  rows += [(f'noise={v:g}', ('noise', v)) for v in settings.noise]
  rows += [(f'apgd-L2={e:g}', ('apgd', 'L2', e)) for e in settings.l2_eps]
  rows += [(f'apgd-Linf={e:g}', ('apgd', 'Linf', e)) for e in settings.linf_eps]
  rows += [('stability', ()), ('abc', ())]
  return rows


def evaluate_models(models: Sequence[Model], x: np.ndarray, y: np.ndarray, settings: Settings,
                    store: scaffold.RowStore, data_tag: str) -> dict[str, dict[str, dict[str, Any]]]:
  """Runs (or reloads from `store`) every measurement of every model; returns {model name: {row: row}}."""
  todo = [(m, name, spec) for m in models for name, spec in measurements(settings)]
  results: dict[str, dict[str, dict[str, Any]]] = {m.name: {} for m in models}
  evaluators = {m.name: Evaluator(m, x, y, settings) for m in models}
  for m, name, spec in scaffold.progress(todo, desc='robustness'):
    store_key = f'{m.name}|step={m.step}|{data_tag}|{settings.tag()}|{name}'
    row = store.get(store_key)
    if row is None:
      started = time.time()
      ev = evaluators[m.name]
      key = _key(settings, m.kind, name)
      if name == 'clean':
        row = ev.clean(key)
      elif spec and spec[0] == 'noise':
        row = ev.noise(spec[1], key)
      elif spec and spec[0] == 'apgd':
        row = ev.apgd(spec[1], spec[2], key)
      elif name == 'stability':
        row = ev.stability(key, results[m.name]['clean']['pred'])
      else:
        row = ev.abc(key)
      row['seconds'] = time.time() - started   # compile included: the first row of each kind compiles
      store.add(store_key, row)
    results[m.name][name] = row
  return results


# --- summaries ------------------------------------------------------------------------------------------------

def bands(snr_db: np.ndarray) -> np.ndarray:
  """Band index per example: 0 (< 0 dB), 1 ([0, 10) dB), 2 (>= 10 dB)."""
  return np.searchsorted(np.asarray(BAND_EDGES), np.asarray(snr_db, np.float64), side='right')


def _mean(values: Sequence[float], mask: np.ndarray | None = None) -> float:
  v = np.asarray(values, np.float64)
  if mask is not None:
    v = v[np.asarray(mask, bool)[:v.shape[0]]]
  return float(v.mean()) if v.size else float('nan')


def bootstrap_diff(a: np.ndarray, b: np.ndarray, paired: bool, *, n: int = 2000, seed: int = 0
                   ) -> tuple[float, float, float]:
  """mean(a) - mean(b) and its 95% percentile bootstrap interval (resampling examples jointly when paired)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.size == 0 or b.size == 0:
    return float('nan'), float('nan'), float('nan')
  rng = np.random.default_rng(seed)
  if paired:
    idx = rng.integers(0, a.size, size=(n, a.size))
    diffs = a[idx].mean(1) - b[idx].mean(1)
  else:
    diffs = (a[rng.integers(0, a.size, size=(n, a.size))].mean(1)
             - b[rng.integers(0, b.size, size=(n, b.size))].mean(1))
  lo, hi = np.percentile(diffs, [2.5, 97.5])
  return float(a.mean() - b.mean()), float(lo), float(hi)


def per_example(rows: dict[str, dict[str, Any]], settings: Settings) -> dict[str, np.ndarray]:
  """The per-example quantities the claims compare (over the test subset or the attribution subset)."""
  def mean_over(prefix, values):  # an empty setting list measures nothing: an empty array
    return np.mean([rows[f'{prefix}={v:g}']['correct'] for v in values], axis=0) if values else np.zeros(0)

  noise = mean_over('noise', settings.noise)
  l2 = mean_over('apgd-L2', settings.l2_eps)
  linf = mean_over('apgd-Linf', settings.linf_eps)
  abc_rows = rows['abc']
  score, correct = np.asarray(abc_rows['score']), np.asarray(abc_rows['correct'], bool)
  return {'clean': np.asarray(rows['clean']['correct'], np.float64), 'noise': noise, 'apgd_l2': l2,
          'apgd_linf': linf, 'stability': np.asarray(rows['stability']['relative_l2']),
          'abc_correct': score[correct], 'abc_incorrect': score[~correct]}


CLAIMS = (
    # (quantity, what the paper claims, sign of NSDE - ConvNeXt that supports it, whether it can be paired)
    ('clean', 'slightly lower clean accuracy (paper: 82.88% vs 87.20%)', -1, True),
    ('noise', 'more robust to Gaussian noise (mean accuracy over the intensities)', +1, True),
    ('apgd_l2', 'more robust to APGD-CE L2 (mean robust accuracy over eps)', +1, True),
    ('apgd_linf', 'more robust to APGD-CE Linf (mean robust accuracy over eps; not in the paper)', +1, True),
    ('stability', 'more stable attributions (lower relative L2 change)', -1, True),
    ('abc_correct', 'higher ABC on correct predictions (paper: 0.599 vs 0.497)', +1, False),
)


def verdicts(nsde: dict[str, np.ndarray], convnext: dict[str, np.ndarray], paired: bool) -> list[dict[str, Any]]:
  """One row per claim: both means, the difference NSDE - ConvNeXt with its 95% interval, and the verdict."""
  rows = []
  for quantity, claim, sign, can_pair in CLAIMS:
    diff, lo, hi = bootstrap_diff(nsde[quantity], convnext[quantity], paired and can_pair)
    if not np.isfinite(diff):
      verdict = 'not measured (no examples or no settings)'
    elif sign * diff > 0:
      held = sign * lo > 0 if sign > 0 else sign * hi > 0
      verdict = 'held' if held else 'held in the mean, within noise (the interval includes 0)'
      if quantity == 'clean' and diff < -0.10:
        verdict = 'lower, but not slightly (more than 10 points)'
    else:
      verdict = 'did not hold'
    rows.append({'claim': claim, 'NSDE': float(np.mean(nsde[quantity])) if len(nsde[quantity]) else float('nan'),
                 'ConvNeXt': float(np.mean(convnext[quantity])) if len(convnext[quantity]) else float('nan'),
                 'NSDE - ConvNeXt': diff, '95% interval': f'[{lo:.4f}, {hi:.4f}]', 'verdict': verdict})
  return rows


def band_table(results, models, settings, band_of: np.ndarray) -> tuple[str, list[str]]:
  """A Markdown table: one row per (model, band) with every summary quantity."""
  columns = ['model', 'band', 'n', 'clean acc', 'noise acc (mean)', 'APGD L2 acc (mean)', 'APGD Linf acc (mean)',
             'attr. change (rel. L2)', 'ABC correct', 'ABC incorrect']
  rows = []
  n_attr = settings.n_attr
  for m in models:
    r = results[m.name]
    pe = per_example(r, settings)
    correct_attr = np.asarray(r['abc']['correct'], bool)
    score = np.asarray(r['abc']['score'])
    for b, band_name in [(None, 'all')] + list(enumerate(BAND_NAMES)):
      mask = np.ones(settings.n_test, bool) if b is None else band_of == b
      amask = mask[:n_attr]
      rows.append({'model': m.name, 'band': band_name, 'n': int(mask.sum()),
                   'clean acc': _mean(pe['clean'], mask), 'noise acc (mean)': _mean(pe['noise'], mask),
                   'APGD L2 acc (mean)': _mean(pe['apgd_l2'], mask),
                   'APGD Linf acc (mean)': _mean(pe['apgd_linf'], mask),
                   'attr. change (rel. L2)': _mean(pe['stability'], amask),
                   'ABC correct': _mean(score[amask & correct_attr]),
                   'ABC incorrect': _mean(score[amask & ~correct_attr])})
  return scaffold.markdown_table(rows, columns), columns


def _curve(results, m, prefix, values, mask):
  return [_mean(results[m.name][f'{prefix}={v:g}']['correct'], mask) for v in values]


def figures(out: str, results, models, settings, band_of) -> list[str]:
  """noise.png, apgd.png, attribution.png; each with a panel for all examples and one per SNR band."""
  panels = [(None, 'all')] + list(enumerate(BAND_NAMES))
  names = []

  def masks(b):
    return np.ones(settings.n_test, bool) if b is None else band_of == b

  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), sharey=True)
  for ax, (b, title) in zip(axes, panels):
    for m in models:
      clean = _mean(results[m.name]['clean']['correct'], masks(b))
      ax.plot([0.0] + list(settings.noise), [clean] + _curve(results, m, 'noise', settings.noise, masks(b)), 'o-',
              label=m.name)
    ax.set_title(f'{title} (n={int(masks(b).sum())})')
    ax.set_xlabel('Gaussian noise intensity (std)')
  axes[0].set_ylabel('accuracy')
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  names.append(scaffold.save_figure(fig, out, 'noise'))

  fig, axes = plt.subplots(2, len(panels), figsize=(4 * len(panels), 6.4), sharey=True)
  for row, (norm, eps, scale, unit) in enumerate((('L2', settings.l2_eps, 1.0, 'L2 eps'),
                                                   ('Linf', settings.linf_eps, 255.0, 'Linf eps (x 1/255)'))):
    for ax, (b, title) in zip(axes[row], panels):
      for m in models:
        clean = _mean(results[m.name]['clean']['correct'], masks(b))
        ax.plot([0.0] + [e * scale for e in eps], [clean] + _curve(results, m, f'apgd-{norm}', eps, masks(b)),
                'o-', label=m.name)
      ax.set_title(f'APGD-CE {norm}, {title}')
      ax.set_xlabel(unit)
    axes[row][0].set_ylabel('robust accuracy')
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  names.append(scaffold.save_figure(fig, out, 'apgd'))

  fig, axes = plt.subplots(2, len(panels), figsize=(4 * len(panels), 6.4))
  width = 0.8 / max(len(models), 1)
  for col, (b, title) in enumerate(panels):
    amask = masks(b)[:settings.n_attr]
    for i, m in enumerate(models):
      r = results[m.name]
      axes[0][col].bar(i, _mean(r['stability']['relative_l2'], amask), color=f'C{i}', label=m.name)
      score = np.asarray(r['abc']['score'])
      correct = np.asarray(r['abc']['correct'], bool)
      for j, sel in enumerate((correct, ~correct)):
        value = _mean(score[amask & sel])
        if not np.isnan(value):  # no example of that kind in this band: no bar
          axes[1][col].bar(j + (i - (len(models) - 1) / 2) * width, value, width, color=f'C{i}',
                           label=m.name if j == 0 else None)
    axes[0][col].set_title(f'attribution change, {title}')
    axes[0][col].set_xticks([])
    axes[1][col].set_xticks([0, 1], ['correct', 'incorrect'])
    axes[1][col].set_title(f'ABC, {title}')
    axes[1][col].set_ylim(0, 1)
  axes[0][0].set_ylabel('relative L2 change of IG')
  axes[1][0].set_ylabel('ABC')
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  names.append(scaffold.save_figure(fig, out, 'attribution'))
  return names


# --- main -----------------------------------------------------------------------------------------------------

def _test_subset(models: Sequence[Model], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, str]:
  """The first n test examples (of the first model's test split); whether every model has that same split."""
  first = models[0].trained.test_set
  n = min(n, first.images.shape[0])
  x = np.asarray(first.images[:n], np.float32)
  y = np.asarray(first.labels[:n], np.int32)
  snr = np.asarray(first.extras['snr_db'][:n], np.float64)
  same = all(np.array_equal(np.asarray(m.trained.test_set.labels[:n]), y)
             and np.array_equal(np.asarray(m.trained.test_set.images[:n]), x) for m in models[1:])
  tag = hashlib.sha1(x.tobytes() + y.tobytes()).hexdigest()[:10]
  return x, y, snr, same, tag


def main(argv: Sequence[str] | None = None) -> str:
  """Runs the experiment; returns the path of results.md."""
  args = scaffold.parse_args(__doc__.split('\n\n')[0], argv, default_out=DEFAULT_OUT, add_arguments=_add_arguments,
                             prog=f'python -m {MODULE}')
  out = scaffold.prepare_out(args.out)
  settings = settings_from(args)
  start = time.time()
  workdirs = args.workdir or train_default_models(out, args.quick, args.set)
  models = [load_model(w) for w in workdirs]
  x, y, snr, same, data_tag = _test_subset(models, settings.n_test)
  if x.shape[0] < settings.n_test:
    settings = dataclasses.replace(settings, n_test=x.shape[0], n_attr=min(settings.n_attr, x.shape[0]),
                                   batch=min(settings.batch, x.shape[0]))
  for m in models[1:]:
    if not same:
      print(f'{MODULE}: warning: {m.name} has a different test split; each model is evaluated on the first '
            f'model\'s {settings.n_test} test spectrograms')
  store = scaffold.RowStore(os.path.join(out, 'rows.jsonl'))
  results = evaluate_models(models, x, y, settings, store, data_tag)
  band_of = bands(snr)
  wall = time.time() - start

  sections = [_settings_section(models, settings, band_of)]
  table, _ = band_table(results, models, settings, band_of)
  sections.append('## Summary (per model and SNR band)\n\n' + table)
  sections.append(_curves_section(results, models, settings))
  sections.append(_verdict_section(results, models, settings, quick=args.quick))
  names = figures(out, results, models, settings, band_of)
  sections.append('## Figures\n\n' + '\n'.join(f'![{n}]({n})' for n in names))
  sections.append(_cost_section(results, models, settings))
  sections.append(f'Wall time of this run: {wall:.0f} s (rows already in rows.jsonl are not recomputed); '
                  f'load average {os.getloadavg()[0]:.1f}.')
  path = scaffold.write_results(out, 'Robustness of the NSDE ConvNeXt (arXiv 2409.01532)', sections,
                                module=MODULE, argv=argv, quick=args.quick)
  scaffold.finish(path, f'{len(models)} models, {len(measurements(settings))} measurements each, {wall:.0f} s; '
                  'verdicts in "Which of the paper\'s claims held"')
  return path


def _settings_section(models, settings, band_of) -> str:
  lines = ['## Settings', '',
           '| model | kind | checkpoint step | stochastic (EOT draws, attribution draws) |', '|---|---|---|---|']
  for m in models:
    draws = f'yes ({settings.eot}, {settings.draws})' if m.stochastic else 'no (1, 1)'
    lines.append(f'| {m.name} | {m.kind} | {m.step} | {draws} |')
  counts = ', '.join(f'{n}: {int((band_of == i).sum())}' for i, n in enumerate(BAND_NAMES))
  lines += ['', f'Test spectrograms: {settings.n_test} ({counts}); attribution metrics on the first '
            f'{settings.n_attr}. APGD-CE: {settings.apgd_steps} steps, rho 0.75, L2 eps {list(settings.l2_eps)}, '
            f'Linf eps {[round(e * 255, 3) for e in settings.linf_eps]}/255. Gaussian noise std '
            f'{list(settings.noise)} (clipped to [0, 1]). Integrated gradients: {settings.ig_steps} '
            f'{settings.ig_method} points, zero baseline, predicted class. Stability: {settings.stability_samples} '
            f'uniform perturbations of Linf radius {settings.stability_radius}. ABC: {settings.abc_samples} '
            f'mutated inputs per example, {settings.abc_fraction:.0%} of the features each. Seed {settings.seed}.']
  return '\n'.join(lines)


def _curves_section(results, models, settings) -> str:
  cols = ['model', 'clean'] + [f'noise {v:g}' for v in settings.noise]
  rows = [{'model': m.name, 'clean': _mean(results[m.name]['clean']['correct']),
           **{f'noise {v:g}': _mean(results[m.name][f'noise={v:g}']['correct']) for v in settings.noise}}
          for m in models]
  text = '## Accuracy under Gaussian noise\n\n' + scaffold.markdown_table(rows, cols)
  cols = ['model'] + [f'L2 {e:g}' for e in settings.l2_eps] + [f'Linf {e * 255:g}/255' for e in settings.linf_eps]
  rows = [{'model': m.name,
           **{f'L2 {e:g}': _mean(results[m.name][f'apgd-L2={e:g}']['correct']) for e in settings.l2_eps},
           **{f'Linf {e * 255:g}/255': _mean(results[m.name][f'apgd-Linf={e:g}']['correct'])
              for e in settings.linf_eps}} for m in models]
  return text + '\n\n## Robust accuracy under APGD-CE\n\n' + scaffold.markdown_table(rows, cols)


def _cost_section(results, models, settings) -> str:
  """Seconds per measurement as stored with each row (the first row of each kind includes its compile)."""
  cols = ['measurement'] + [m.name for m in models]
  rows = [{'measurement': name, **{m.name: float(results[m.name][name].get('seconds', float('nan')))
                                  for m in models}} for name, _ in measurements(settings)]
  return (f'## Cost\n\nSeconds per row, compile included, load average {os.getloadavg()[0]:.1f} at the end of '
          'the run (rows reused from rows.jsonl keep the time of the run that computed them).\n\n'
          + scaffold.markdown_table(rows, cols))


def _verdict_section(results, models, settings, quick: bool = False) -> str:
  nsde = [m for m in models if m.kind != 'convnext']
  conv = [m for m in models if m.kind == 'convnext']
  head = '## Which of the paper\'s claims held\n\n'
  if not nsde or not conv:
    return head + 'Not assessed: the claims compare an NSDE with a ConvNeXt, and this run has only ' + \
        ', '.join(sorted({m.kind for m in models})) + '.'
  a, b = nsde[0], conv[0]
  rows = verdicts(per_example(results[a.name], settings), per_example(results[b.name], settings), paired=True)
  if quick:   # smoke-size models near chance: the numbers check the pipeline, they decide no claim
    rows = [{**r, 'verdict': stats.SMOKE} for r in rows]
  text = (head + f'{a.name} against {b.name}, on the same {settings.n_test} test spectrograms (ABC and '
          f'attribution change on the first {settings.n_attr}). "held" means the difference has the claimed '
          'sign and its 95% bootstrap interval excludes 0.\n\n')
  text += scaffold.markdown_table(rows, ['claim', 'NSDE', 'ConvNeXt', 'NSDE - ConvNeXt', '95% interval', 'verdict'])
  paper = ', '.join(f'{k}: NSDE {v["nsde"]}, ConvNeXt {v["convnext"]}' for k, v in PAPER.items())
  return text + f'\n\nThe paper\'s numbers (its own data and models, not comparable in level): {paper}.'


if __name__ == '__main__':
  main()
