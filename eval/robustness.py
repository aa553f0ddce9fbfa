"""Robustness and explanation quality of the NSDE ConvNeXt against its ConvNeXt (arXiv 2409.01532, Sec. 4).

    python -m eval.robustness [--arm-a DIR [DIR ...]] [--arm-b DIR [DIR ...]] [--out results/robustness]
                              [--quick | --paper] [--seeds 3] [--n-attack 48] [--n-attr 32] [--steps 25]
                              [--queries 1000] [--eot 20] [--draws N] [--ig-steps 16] [--set field=value ...]

Each arm is a list of `python -m train.nsde` workdirs, one per training seed (a workdir without a checkpoint is a
one-line error). The claims read "arm B against arm A": every effect is mean(arm B) - mean(arm A), whatever the
kinds of the arms, so a null comparison (the same config in both arms, different seeds) runs the same way. With no
workdirs it trains --seeds seeds (0, 1, 2 by default) of each arm with the main job's config
(`configs/spectro.py`): arm A the ConvNeXt (`model.kind=convnext`) in `<out>/runs/convnext-s<seed>`, arm B the
NSDE in `<out>/runs/nsde-s<seed>`, through the shared loop; a rerun reuses those runs and every finished row.
`--workdir DIR` (repeatable) still works: ConvNeXt workdirs form arm A, the others arm B.

What it measures, per model, on the test split of arm A's first model (every model is scored on the same examples,
so the comparisons are paired; every model's data config must match it apart from the seed, which only changes
which spectrograms were generated, so a model trained with seed s meets fresh spectrograms of the same kind):
  * clean accuracy on the whole test split (1,500 spectrograms with the default config): argmax of the deployed
    prediction (the NSDE's softmax averaged over its `model.test_draws` draws, 8 by default);
  * Gaussian noise: accuracy on clip(x + s N(0, 1), 0, 1) for s in 0.01..0.2, whole test split;
  * robust accuracy under AutoAttack (`srjax.attack.autoattack`, Croce & Hein 2020) on the first --n-attack test
    spectrograms, L2 and Linf: version 'rand' (APGD-CE and APGD-DLR with EOT over --eot = 20 draws) for a
    stochastic model (the NSDE), 'standard' (APGD-CE, APGD-T, FAB-T, Square) for a deterministic one. Each
    attack's log (robust accuracy after it, seconds) is in results.md. **Stated deviation for CPU cost**: 25 APGD
    and FAB iterations instead of 100, and Square with 1,000 queries instead of 5,000 (`--paper`: 100 and 5,000);
  * gradient-masking checks (Carlini et al. 2019, "On evaluating adversarial robustness", Sec. 5): per arm and
    norm, (a) robust accuracy never rises with eps (a rise counts when it exceeds 2 SE of the paired per-example
    difference), and it reaches about 0 (at most 5% + 2 SE) at one large eps added to the grid (L2 8, Linf
    32/255); (b) at the largest eps of the regular grid, neither the gradient-free Square attack (1 draw per
    query, its output judged with --eot draws) nor APGD-CE examples crafted on a deterministic model of the other
    arm (the ConvNeXt) and transferred beat the white-box AutoAttack by more than 2 SE. When a check of the arm a
    robustness claim favours fails, that claim reads "possibly masked" instead of `supported`;
  * attribution stability (`srjax.attribution.stability`): the relative L2 change of integrated-gradients
    attributions of the predicted class under uniform perturbations of Linf radius 0.02, without and with the
    noise tunnel (SmoothGrad over 4 noisy copies, std 0.1), with the model's draws held fixed;
  * ABC (`srjax.attribution.abc`, Jha et al. 2019) with the deployed number of draws (`model.test_draws`);
  * a summary by SNR band of the spectrogram (`Dataset.extras['snr_db']`: < 0 dB, 0-10 dB, >= 10 dB).
The attribution metrics use the first --n-attr test spectrograms.

Verdicts: each claim stacks the per-example scores of each arm into [seeds, examples] and goes through
`srjax.stats.compare` (hierarchical bootstrap over seeds then examples, paired), then `srjax.stats.assess` (Holm
across this report's claims). Vocabulary: `supported`, `not separated`, `contradicted`, plus "possibly masked"
(see above); a --quick run reads `not assessed (smoke run)`. ABC is compared on the attribution examples that
every model of both arms classifies correctly (the paper's "ABC on correct predictions", paired). What the
default design can detect (`srjax.stats`' simulations): with 3 seeds per arm and 1,500 paired examples, about 6
accuracy points for clean and noise accuracy; the attack and attribution subsets (48 and 32 examples) detect only
large effects (tens of points).

Cost, measured (the committed results/robustness run, 2026-12-05, 2-core AMD EPYC, load average 1.9 to 6
because the test suite ran beside it for part of the time): 6 trainings of 1,500 steps ~43 min; the
measurements 70 min (NSDE 13 to 20 min each, mostly AutoAttack 'rand' with EOT 20 and the noise tunnel;
ConvNeXt 5 to 12 min each, mostly FAB-T and Square on the points APGD leaves); about 1 h 50 min of wall time in
all (not measured on a quiet machine; there one NSDE trains in ~3 min 50 s, see configs/spectro.py). Each row's seconds are in results.md's cost table.
`--paper` (5 seeds, the `:paper` training preset, 100 steps, 5,000 queries, 500 attacked and 100 attributed
examples) is for an accelerator. `--quick` uses the `:smoke` preset (with `model.depthwise=conv` and
`model.solver=scan`, which compile faster; same math), 2 seeds per arm and tiny settings; it is compile-bound.

Outputs in --out: results.md, verdicts.json (for `python -m eval.report`), rows.jsonl (one finished measurement
per line: a killed run resumes), figures noise.png, robust.png, attribution.png.
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
from srjax import attack  # pylint: disable=wrong-import-position
from srjax import attribution  # pylint: disable=wrong-import-position
from srjax import stats  # pylint: disable=wrong-import-position
from srjax.data.batches import map_batches  # pylint: disable=wrong-import-position

MODULE = 'eval.robustness'
DEFAULT_OUT = 'results/robustness'
BAND_EDGES = (0.0, 10.0)      # dB: bands < 0, [0, 10), >= 10 (the generator's default range is -10..20 dB)
BAND_NAMES = ('SNR < 0 dB', '0-10 dB', '>= 10 dB')
MASKED = 'possibly masked'
NEAR_ZERO = 0.05              # "robust accuracy reaches about 0 at the large eps": at most this + 2 SE
# The paper's numbers (Sec. 4), for reference next to ours.
PAPER = {'clean accuracy': {'convnext': 0.8720, 'nsde': 0.8288},
         'ABC on correct predictions': {'convnext': 0.497, 'nsde': 0.599}}


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that changes a measured number (it keys the stored rows)."""
  n_attack: int = 48
  n_attr: int = 32
  batch: int = 250              # forward batches of clean and noise accuracy
  attack_batch: int = 48        # examples per AutoAttack call
  attr_batch: int = 16          # examples per attribution call
  noise: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2)
  l2_eps: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
  linf_eps: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255)
  l2_large: float = 8.0
  linf_large: float = 32 / 255
  eot: int = 20
  steps: int = 25
  queries: int = 1000
  n_targets: int = 9
  draws: int = 0                # NSDE draws in attributions and ABC; 0: each model's deployed model.test_draws
  ig_steps: int = 16
  ig_method: str = 'gausslegendre'
  ig_chunk: int = 8
  stability_radius: float = 0.02
  stability_samples: int = 4
  tunnel_samples: int = 4
  tunnel_stdev: float = 0.1
  abc_samples: int = 32
  abc_fraction: float = 0.05
  seed: int = 0

  def tag(self) -> str:
    return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:10]


# --quick: every kind of measurement once, at the smallest sizes (compile-bound; Linf, the same code path as L2
# with other compiles, is left out).
QUICK = dict(n_attack=8, n_attr=4, batch=60, attack_batch=8, attr_batch=4, noise=(0.2,), l2_eps=(0.5,),
             linf_eps=(), l2_large=4.0, eot=2, steps=2, queries=8, n_targets=2, ig_steps=4, ig_chunk=4,
             stability_samples=2, tunnel_samples=2, abc_samples=8)
PAPER_SETTINGS = dict(n_attack=500, n_attr=100, attack_batch=100, steps=100, queries=5000)
SEEDS = 3
PAPER_SEEDS = 5
QUICK_SEEDS = 2


@dataclasses.dataclass
class Model:
  """One trained model to evaluate: what `train.nsde.load_trained` returns, plus its name, kind and store key."""
  name: str
  kind: str                 # 'nsde' or 'convnext'
  stochastic: bool
  trained: Any
  step: int
  key: str = ''             # identifies the run in rows.jsonl (its absolute workdir)
  draws: int = 1            # deployed test-time draws (1 for a deterministic model)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
  d = Settings()
  parser.add_argument('--arm-a', nargs='+', default=None, metavar='DIR',
                      help='workdirs of arm A, one per training seed (default: train the ConvNeXt)')
  parser.add_argument('--arm-b', nargs='+', default=None, metavar='DIR',
                      help='workdirs of arm B, one per training seed (default: train the NSDE)')
  parser.add_argument('--paper', action='store_true',
                      help='5 seeds, the :paper training preset and full attack budgets (for an accelerator)')
  parser.add_argument('--seeds', type=int, default=None, help=f'training seeds per arm when training ({SEEDS})')
  parser.add_argument('--n-attack', type=int, default=None, help=f'attacked test spectrograms ({d.n_attack})')
  parser.add_argument('--n-attr', type=int, default=None, help=f'attributed test spectrograms ({d.n_attr})')
  parser.add_argument('--steps', type=int, default=None, help=f'APGD/FAB iterations ({d.steps}; AutoAttack: 100)')
  parser.add_argument('--queries', type=int, default=None, help=f'Square queries ({d.queries}; AutoAttack: 5000)')
  parser.add_argument('--eot', type=int, default=None, help=f'EOT draws for a stochastic model ({d.eot})')
  parser.add_argument('--draws', type=int, default=None,
                      help='NSDE draws in attributions and ABC (default: the deployed model.test_draws)')
  parser.add_argument('--ig-steps', type=int, default=None, help=f'integrated-gradients path points ({d.ig_steps})')
  parser.add_argument('--seed', type=int, default=None, help='seed of every draw of the evaluation (0)')


_FLAGS = ('n_attack', 'n_attr', 'steps', 'queries', 'eot', 'draws', 'ig_steps', 'seed')


def settings_from(args: argparse.Namespace) -> Settings:
  """The run's Settings: the defaults (or QUICK, or PAPER_SETTINGS), then the explicit flags."""
  if args.quick and args.paper:
    raise SystemExit(f'{MODULE}: --quick and --paper exclude each other')
  fields = dict(QUICK) if args.quick else dict(PAPER_SETTINGS) if args.paper else {}
  for flag in _FLAGS:
    value = getattr(args, flag)
    if value is not None:
      fields[flag] = value
  s = Settings(**fields)
  for name in ('n_attack', 'n_attr', 'steps', 'queries', 'eot', 'ig_steps'):
    if getattr(s, name) < 1:
      raise SystemExit(f'{MODULE}: --{name.replace("_", "-")} must be >= 1, got {getattr(s, name)}')
  return s


# --- models ---------------------------------------------------------------------------------------------------

def _has_checkpoint(workdir: str) -> bool:
  directory = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def _kind(config: Any) -> str:
  model = config.get('model') if hasattr(config, 'get') else None
  kind = model.get('kind') if hasattr(model, 'get') else None
  return str(kind) if kind else 'nsde'


def load_model(workdir: str, flag: str = '--arm-a') -> Model:
  """Loads a finished `train.nsde` run.

  Raises:
    SystemExit: a one-line message naming `flag` when the workdir holds no checkpoint.
  """
  if not _has_checkpoint(workdir):
    raise SystemExit(f'{MODULE}: {flag} {workdir} holds no checkpoint; train it first with '
                     f'`python -m train.nsde --config configs/spectro.py --workdir {workdir}`')
  from train import nsde  # pylint: disable=g-import-not-at-top  (the training stack loads only when needed)
  trained = nsde.load_trained(workdir)
  kind = _kind(trained.config)
  stochastic = trained.apply_fn.sde is not None   # an NSDE: its noise stays on at test time
  name = f'{kind} ({os.path.basename(os.path.normpath(workdir))})'
  draws = int(trained.config.model.get('test_draws', 1)) if stochastic else 1
  return Model(name=name, kind=kind, stochastic=stochastic, trained=trained, step=int(trained.step),
               key=os.path.abspath(workdir), draws=draws)


def _data_config(config: Any) -> dict[str, Any]:
  """The data config that decides what a test example is, apart from the seed (which picks the spectrograms)."""
  data = config.data.to_dict() if hasattr(config.data, 'to_dict') else dict(config.data)
  return {k: v for k, v in sorted(data.items()) if k != 'seed'}


def check_same_data(configs_a: Sequence[Any], configs_b: Sequence[Any]) -> None:
  """Every model must read the same kind of data as arm A's first model (paired comparisons need it).

  Raises:
    SystemExit: one line naming the arm flag whose workdir differs, and the differing fields.
  """
  ref = _data_config(configs_a[0])
  for flag, configs in (('--arm-a', configs_a), ('--arm-b', configs_b)):
    for k, config in enumerate(configs):
      other = _data_config(config)
      if other != ref:
        fields = sorted(f for f in set(ref) | set(other) if ref.get(f) != other.get(f))
        raise SystemExit(f'{MODULE}: {flag} workdir {k} has data config fields {fields} = '
                         f'{[other.get(f) for f in fields]}, arm A\'s first has {[ref.get(f) for f in fields]}; '
                         'paired comparisons need the same data config')


_SHARED: dict[str, Any] = {}   # architecture -> the first Trained loaded with it (its apply_fn keys the jit caches)


def load_arms(arm_a: Sequence[str], arm_b: Sequence[str]) -> tuple[list[Model], list[Model]]:
  """Loads both arms' models; models of one architecture share one apply_fn, so their programs compile once.

  Raises:
    SystemExit: an empty arm, a workdir without a checkpoint, the same workdir twice, or mismatched data configs.
  """
  for flag, dirs in (('--arm-a', arm_a), ('--arm-b', arm_b)):
    if not dirs:
      raise SystemExit(f'{MODULE}: {flag} is empty; give at least one trained workdir')
  paths = [os.path.abspath(w) for w in [*arm_a, *arm_b]]
  if len(set(paths)) < len(paths):
    raise SystemExit(f'{MODULE}: --arm-a/--arm-b name a workdir twice; each training seed is one workdir')
  models_a = [load_model(w, '--arm-a') for w in arm_a]
  models_b = [load_model(w, '--arm-b') for w in arm_b]
  check_same_data([m.trained.config for m in models_a], [m.trained.config for m in models_b])
  for m in [*models_a, *models_b]:
    arch = json.dumps(m.trained.config.model.to_dict(), sort_keys=True)
    first = _SHARED.setdefault(arch, m.trained)
    m.trained = dataclasses.replace(m.trained, apply_fn=first.apply_fn, predict=first.predict)
  names = [m.name for m in [*models_a, *models_b]]
  for m in [*models_a, *models_b]:   # same basename in two folders: show the parent too
    if names.count(m.name) > 1:
      m.name = f'{m.kind} ({os.path.relpath(m.key)})'
  return models_a, models_b


def train_runs(out: str, kind: str, seeds: Sequence[int], *, quick: bool = False, paper: bool = False,
               overrides: Sequence[str] = ()) -> list[str]:
  """Trains (or resumes, or reuses) `kind` with the main job's config, one run per seed, in
  `<out>/runs/<kind>-s<seed>`; returns the workdirs."""
  from configs import common  # pylint: disable=g-import-not-at-top
  from configs import spectro  # pylint: disable=g-import-not-at-top
  from train import nsde  # pylint: disable=g-import-not-at-top
  workdirs = []
  for seed in seeds:
    config = spectro.get_config('smoke' if quick else 'paper' if paper else None)
    if quick:  # a smoke run is compile-bound: the grouped conv compiles in half the time of 49 shifted adds, the
      # scan solver faster than diffrax (the same Euler-Maruyama math)
      common.override(config, {'model.depthwise': 'conv', 'model.solver': 'scan'})
    common.override(config, list(overrides))
    common.override(config, {'model.kind': kind, 'seed': int(seed)})
    workdir = os.path.join(out, 'runs', f'{kind}-s{seed}')
    nsde.train(config, workdir)   # the shared loop; resumes a partial run, reuses a finished one
    workdirs.append(workdir)
  return workdirs


def train_default_models(out: str, quick: bool, overrides: Sequence[str], *, seeds: int = SEEDS,
                         paper: bool = False) -> tuple[list[str], list[str]]:
  """Arm A: the ConvNeXt, arm B: the NSDE, seeds 0..seeds-1 each; returns (arm A workdirs, arm B workdirs)."""
  return tuple(train_runs(out, kind, range(seeds), quick=quick, paper=paper, overrides=overrides)
               for kind in ('convnext', 'nsde'))


# --- measurements ---------------------------------------------------------------------------------------------

def _key(settings: Settings, *names: Any) -> jax.Array:
  key = jax.random.key(settings.seed)
  for name in names:
    key = jax.random.fold_in(key, zlib.crc32(str(name).encode()) & 0x7FFFFFFF)
  return key


def _batches(n: int, batch: int):
  for start in range(0, n, batch):
    yield start, min(start + batch, n)


def _map_batches(fn: Callable[[np.ndarray, np.ndarray, jax.Array], Any], x: np.ndarray, y: np.ndarray,
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
    return _map_batches(fn, x, np.zeros(x.shape[0], np.int32), self.s.batch, key)[0]

  def judge(self, x_adv: np.ndarray, key: jax.Array) -> np.ndarray:
    """[n] 0/1 still correct on x_adv by AutoAttack's criterion: the argmax of the softmax averaged over the
    attack's EOT draws (one for a deterministic model)."""
    probs = attack.common.predict(self.apply_fn, self.variables, jnp.asarray(x_adv), key, eot=self.eot,
                                  stochastic=True)
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
    for i, (lo, hi) in enumerate(_batches(self.xa.shape[0], self.s.attack_batch)):
      res = attack.autoattack(self.apply_fn, self.variables, jnp.asarray(self.xa[lo:hi]),
                              jnp.asarray(self.ya[lo:hi]), eps=eps, norm=norm, key=jax.random.fold_in(key, i),
                              version=version, eot=self.eot, stochastic=True, steps=self.s.steps,
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
                           queries=self.s.queries, key=kb, eot=1, stochastic=True).x_adv

    x_adv = _map_batches(fn, self.xa, self.ya, self.s.attack_batch, k_attack)[0]
    return {'correct': self.judge(x_adv, k_judge).tolist()}

  def transfer(self, source: 'Evaluator', norm, eps, key):
    """The transfer check: APGD-CE crafted on `source` (deterministic), judged on this model."""
    k_attack, k_judge = jax.random.split(key)

    def fn(xb, yb, kb):
      return attack.apgd(source.apply_fn, source.variables, jnp.asarray(xb), jnp.asarray(yb), eps=eps, norm=norm,
                         steps=self.s.steps, key=kb, eot=1, stochastic=True)

    x_adv = _map_batches(fn, self.xa, self.ya, self.s.attack_batch, k_attack)[0]
    return {'correct': self.judge(x_adv, k_judge).tolist(), 'source': source.m.name}

  def stability(self, key, pred, tunnel: bool):
    n = self.s.n_attr
    k_pert, k_model = jax.random.split(key)

    def fn(xb, tb, kb):
      st = attribution.stability(self.apply_fn, self.variables, jnp.asarray(xb), jnp.asarray(tb), key=kb,
                                 radius=self.s.stability_radius, n_samples=self.s.stability_samples,
                                 steps=self.s.ig_steps, method=self.s.ig_method, chunk=self.s.ig_chunk,
                                 stochastic=True, model_key=k_model, draws=self.draws,
                                 tunnel_samples=self.s.tunnel_samples if tunnel else 0,
                                 tunnel_stdev=self.s.tunnel_stdev)
      return st.relative_l2, st.max_sensitivity, st.log_abs_change

    rel, mx, log_abs = _map_batches(fn, self.x[:n], np.asarray(pred[:n], np.int32), self.s.attr_batch, k_pert)
    return {'relative_l2': rel.tolist(), 'max_sensitivity': mx.tolist(), 'log_abs_change': log_abs.tolist()}

  def abc(self, key):
    n = self.s.n_attr

    def fn(xb, yb, kb):
      res = attribution.abc(self.apply_fn, self.variables, jnp.asarray(xb), key=kb, n_samples=self.s.abc_samples,
                            fraction=self.s.abc_fraction, steps=self.s.ig_steps, method=self.s.ig_method,
                            chunk=self.s.ig_chunk, stochastic=True, draws=self.draws)
      return res.score, res.label

    score, label = _map_batches(fn, self.x[:n], self.y[:n], self.s.attr_batch, key)
    return {'score': score.tolist(), 'correct': (label == self.y[:n]).astype(int).tolist(), 'draws': self.draws}


def measurements(settings: Settings, model: Model, source: Model | None = None) -> list[tuple[str, tuple]]:
  """(row name, arguments) of every measurement of `model`, in order (stability needs the clean predictions).

  `source`: the deterministic model whose APGD examples are transferred to `model` (stochastic models only).
  """
  rows = [('clean', ('clean',))]
  rows += [(f'noise={v:g}', ('noise', v)) for v in settings.noise]
  for norm in ('L2', 'Linf'):
    rows += [(f'aa-{norm}={e:g}', ('autoattack', norm, e)) for e in attack_grid(settings, norm)]
  for norm in ('L2', 'Linf'):
    e = check_eps(settings, norm)
    if e is not None and model.stochastic:
      rows.append((f'square-{norm}={e:g}', ('square', norm, e)))
      if source is not None:
        rows.append((f'transfer-{norm}={e:g}', ('transfer', norm, e)))
  rows += [('stability', ('stability', False)), ('stability-tunnel', ('stability', True)), ('abc', ('abc',))]
  return rows


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
  todo = [(m, name, spec) for m in models for name, spec in measurements(settings, m, sources.get(m.key))]
  results: dict[str, dict[str, dict[str, Any]]] = {m.key: {} for m in models}
  for m, name, spec in scaffold.progress(todo, desc='robustness'):
    source = sources.get(m.key)
    extra = f'|from={source.key}@{source.step}' if spec[0] == 'transfer' else ''
    store_key = f'{m.key}|step={m.step}|{data_tag}|{settings.tag()}|{name}{extra}'
    row = store.get(store_key)
    if row is None:
      started = time.time()
      ev = evaluators[m.key]
      key = _key(settings, m.kind, name)   # the same draws for every model of a kind: common random numbers
      what, *args = spec
      if what == 'stability':
        row = ev.stability(key, results[m.key]['clean']['pred'], *args)
      elif what == 'transfer':
        row = ev.transfer(evaluators[source.key], *args, key)
      else:
        row = getattr(ev, what)(*args, key)
      row['seconds'] = time.time() - started   # compile included: the first row of each kind compiles
      store.add(store_key, row)
    results[m.key][name] = row
  return results


# --- verdicts -------------------------------------------------------------------------------------------------

def bands(snr_db: np.ndarray) -> np.ndarray:
  """Band index per example: 0 (< 0 dB), 1 ([0, 10) dB), 2 (>= 10 dB)."""
  return np.searchsorted(np.asarray(BAND_EDGES), np.asarray(snr_db, np.float64), side='right')


def _mean(values: Sequence[float], mask: np.ndarray | None = None) -> float:
  v = np.asarray(values, np.float64)
  if mask is not None:
    v = v[..., np.asarray(mask, bool)[:v.shape[-1]]]
  return float(v.mean()) if v.size else float('nan')


def _stack(rows: Sequence[dict[str, dict[str, Any]]], name: str, field: str = 'correct') -> np.ndarray:
  """[S, N] float64: row `name`'s per-example `field` of each seed's model."""
  return np.asarray([r[name][field] for r in rows], np.float64)


def _mean_rows(rows, names: Sequence[str]) -> np.ndarray:
  """[S, N]: the per-example mean of several rows (an empty list: [S, 0])."""
  if not names:
    return np.zeros((len(rows), 0))
  return np.mean([_stack(rows, n) for n in names], axis=0)


def arm_scores(rows: Sequence[dict[str, dict[str, Any]]], settings: Settings) -> dict[str, np.ndarray]:
  """The per-example quantities of one arm, each [S seeds, N examples] (the claims compare these).

  clean, noise (mean over the noise levels): the whole test split; robust_l2, robust_linf (mean over the regular
  eps grid, the large eps excluded): the attack subset; stability, stability_tunnel (relative L2 change), abc
  (score) and abc_correct (1 where the model's ABC label is right): the attribution subset.
  """
  return {'clean': _stack(rows, 'clean'),
          'noise': _mean_rows(rows, [f'noise={v:g}' for v in settings.noise]),
          'robust_l2': _mean_rows(rows, [f'aa-L2={e:g}' for e in settings.l2_eps]),
          'robust_linf': _mean_rows(rows, [f'aa-Linf={e:g}' for e in settings.linf_eps]),
          'stability': _stack(rows, 'stability', 'relative_l2'),
          'stability_tunnel': _stack(rows, 'stability-tunnel', 'relative_l2'),
          'abc': _stack(rows, 'abc', 'score'), 'abc_correct': _stack(rows, 'abc', 'correct')}


CLAIMS = (
    # (quantity, claim about arm B against arm A, direction of mean(B) - mean(A) that supports it, attack norm)
    ('clean', 'lower clean accuracy (paper: 82.88% vs 87.20%)', -1, None),
    ('noise', 'more robust to Gaussian noise (mean accuracy over the intensities)', +1, None),
    ('robust_l2', 'more robust to AutoAttack L2 (mean robust accuracy over eps)', +1, 'L2'),
    ('robust_linf', 'more robust to AutoAttack Linf (mean robust accuracy over eps; not in the paper)', +1, 'Linf'),
    ('stability', 'more stable attributions (lower relative L2 change of IG)', -1, None),
    ('stability_tunnel', 'more stable attributions with the noise tunnel (lower relative L2 change)', -1, None),
    ('abc', 'higher ABC on correct predictions (paper: 0.599 vs 0.497)', +1, None),
)


def _paired_se(d: np.ndarray) -> float:
  """The standard error of the mean of d [S, N] (per-example differences), d's cells taken as independent."""
  return float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else 0.0


def rise_flags(eps: Sequence[float], acc: Sequence[np.ndarray], *, near_zero: float = NEAR_ZERO) -> list[str]:
  """Check (a): robust accuracy along an eps grid (ascending, the last one large).

  Args:
    eps: [E] ascending radii.
    acc: E arrays [S, N] of 0/1 robust correctness on the same examples.

  Returns:
    One sentence per failure: a rise from eps_k to eps_k+1 larger than 2 SE of the paired per-example
    difference, or a last robust accuracy above near_zero + 2 SE (binomial) at the largest eps.
  """
  flags = []
  for k in range(len(eps) - 1):
    d = np.asarray(acc[k + 1], np.float64) - np.asarray(acc[k], np.float64)
    rise, se = float(d.mean()), _paired_se(d)
    if rise > 0 and rise > 2 * se:
      flags.append(f'robust accuracy rises from eps {eps[k]:.4g} to {eps[k + 1]:.4g} by {rise:.3f} '
                   f'(> 2 SE = {2 * se:.3f})')
  if len(eps):
    last = np.asarray(acc[-1], np.float64)
    p = float(last.mean())
    se = float(np.sqrt(p * (1 - p) / last.size))
    if p > near_zero + 2 * se:
      flags.append(f'robust accuracy {p:.3f} at the large eps {eps[-1]:.4g} is not about 0 '
                   f'(> {near_zero:g} + 2 SE = {near_zero + 2 * se:.3f})')
  return flags


def blackbox_flags(white: np.ndarray, black: dict[str, np.ndarray], eps: float) -> list[str]:
  """Check (b): no black-box attack (name -> [S, N] 0/1 robust correctness) beats the white-box one [S, N] on
  the same examples by more than 2 SE of the paired per-example difference."""
  flags = []
  for name, b in black.items():
    d = np.asarray(b, np.float64) - np.asarray(white, np.float64)
    gap, se = float(d.mean()), _paired_se(d)
    if gap < 0 and -gap > 2 * se:
      flags.append(f'{name} at eps {eps:.4g} leaves robust accuracy {float(np.mean(b)):.3f}, below the white-box '
                   f'{float(np.mean(white)):.3f} by more than 2 SE ({2 * se:.3f})')
  return flags


def masking_checks(rows: Sequence[dict[str, dict[str, Any]]], settings: Settings) -> dict[str, list[str]]:
  """{norm: failures of checks (a) and (b)} of one arm, its seeds pooled (the rows its models measured)."""
  out = {}
  for norm in ('L2', 'Linf'):
    grid = attack_grid(settings, norm)
    if not grid:
      continue
    flags = rise_flags(grid, [_stack(rows, f'aa-{norm}={e:g}') for e in grid])
    e = check_eps(settings, norm)
    black = {}
    for what, label in (('square', 'Square'), ('transfer', 'transfer from the other arm\'s ConvNeXt')):
      name = f'{what}-{norm}={e:g}'
      if all(name in r for r in rows):
        black[label] = _stack(rows, name)
    out[norm] = flags + blackbox_flags(_stack(rows, f'aa-{norm}={e:g}'), black, e)
  return out


def verdicts(a: dict[str, np.ndarray], b: dict[str, np.ndarray], *, masked_a: dict[str, list[str]] | None = None,
             masked_b: dict[str, list[str]] | None = None, smoke: bool = False) -> list[stats.Verdict]:
  """The report's verdicts: one claim per quantity of `CLAIMS` that both arms measured, arm B against arm A.

  Args:
    a, b: `arm_scores` of arm A and arm B ({quantity: [S, N]}, the same N examples in both arms: paired).
    masked_a, masked_b: `masking_checks` of each arm ({norm: failures}).
    smoke: a --quick run (every verdict reads `not assessed (smoke run)`).

  Returns:
    `srjax.stats.Verdict`s, Holm-corrected across the claims; a `supported` robustness claim whose favoured arm
    failed a gradient-masking check for that norm reads "possibly masked".
  """
  claims, norms = [], []
  for quantity, text, direction, norm in CLAIMS:
    xa, xb = a[quantity], b[quantity]
    if quantity == 'abc':   # the examples every model of both arms classifies correctly
      keep = np.all(a['abc_correct'] > 0, axis=0) & np.all(b['abc_correct'] > 0, axis=0)
      xa, xb = xa[:, keep], xb[:, keep]
    if xa.shape[-1] < 2 or xb.shape[-1] < 2:
      continue   # not measured (no eps for this norm, or too few examples every model gets right)
    claims.append(stats.Claim(text, stats.compare(xa, xb, paired=True), direction))
    norms.append((norm, direction))
  out = stats.assess(claims, smoke=smoke)
  for k, (v, (norm, direction)) in enumerate(zip(out, norms)):
    favoured = (masked_b if direction > 0 else masked_a) or {}
    if norm is not None and v.verdict == stats.SUPPORTED and favoured.get(norm):
      out[k] = v._replace(verdict=MASKED)
  return out


# --- report ---------------------------------------------------------------------------------------------------

def _test_subset(model: Model) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
  """The whole test split of `model` (arm A's first): x [N, H, W, C], y [N], SNR [N] and a digest."""
  ts = model.trained.test_set
  x = np.asarray(ts.images, np.float32)
  y = np.asarray(ts.labels, np.int32)
  snr = np.asarray(ts.extras['snr_db'], np.float64)
  tag = hashlib.sha1(x.tobytes() + y.tobytes()).hexdigest()[:10]
  return x, y, snr, tag


def evaluate(arm_a: Sequence[str], arm_b: Sequence[str], settings: Settings, out: str):
  """Loads the arms, fits the settings to the test split and measures every model (rows in `out/rows.jsonl`).

  Returns:
    (models_a, models_b, results {model key: {row: row}}, settings, snr [N]).
  """
  models_a, models_b = load_arms(arm_a, arm_b)
  x, y, snr, data_tag = _test_subset(models_a[0])
  n = x.shape[0]
  settings = dataclasses.replace(settings, n_attack=min(settings.n_attack, n), n_attr=min(settings.n_attr, n),
                                 batch=min(settings.batch, n), attack_batch=min(settings.attack_batch, n),
                                 attr_batch=min(settings.attr_batch, settings.n_attr, n))
  store = scaffold.RowStore(os.path.join(out, 'rows.jsonl'))
  results = evaluate_models(models_a, models_b, x, y, settings, store, data_tag)
  return models_a, models_b, results, settings, snr


def judge(models_a, models_b, results, settings, *, smoke: bool) -> tuple[list[stats.Verdict], dict, dict]:
  """(verdicts, masking failures of arm A, of arm B) from the measured rows."""
  rows_a = [results[m.key] for m in models_a]
  rows_b = [results[m.key] for m in models_b]
  masked_a, masked_b = masking_checks(rows_a, settings), masking_checks(rows_b, settings)
  v = verdicts(arm_scores(rows_a, settings), arm_scores(rows_b, settings), masked_a=masked_a, masked_b=masked_b,
               smoke=smoke)
  return v, masked_a, masked_b


def _arm_workdirs(args: argparse.Namespace, out: str) -> tuple[list[str], list[str]]:
  if args.workdir and (args.arm_a or args.arm_b):
    raise SystemExit(f'{MODULE}: give either --workdir or --arm-a/--arm-b, not both')
  if args.workdir:   # the old interface: ConvNeXt runs form arm A, the others arm B
    from train import loop  # pylint: disable=g-import-not-at-top
    for w in args.workdir:
      if not _has_checkpoint(w):
        load_model(w, '--workdir')   # the one-line error
    kinds = [_kind(loop.read_config(w)) for w in args.workdir]
    arm_a = [w for w, k in zip(args.workdir, kinds) if k == 'convnext']
    arm_b = [w for w, k in zip(args.workdir, kinds) if k != 'convnext']
    if not arm_a or not arm_b:
      raise SystemExit(f'{MODULE}: --workdir needs a ConvNeXt run (arm A) and another run (arm B), got kinds '
                       f'{kinds}; use --arm-a/--arm-b to compare other arms')
    return arm_a, arm_b
  if (args.arm_a is None) != (args.arm_b is None):
    raise SystemExit(f'{MODULE}: give both --arm-a and --arm-b (or neither, to train the default arms)')
  if args.arm_a is not None:
    return list(args.arm_a), list(args.arm_b)
  seeds = args.seeds or (QUICK_SEEDS if args.quick else PAPER_SEEDS if args.paper else SEEDS)
  if seeds < 1:
    raise SystemExit(f'{MODULE}: --seeds must be >= 1, got {seeds}')
  return train_default_models(out, args.quick, args.set, seeds=seeds, paper=args.paper)


def main(argv: Sequence[str] | None = None) -> str:
  """Runs the experiment; returns the path of results.md."""
  args = scaffold.parse_args(__doc__.split('\n\n')[0], argv, default_out=DEFAULT_OUT, add_arguments=_add_arguments,
                             prog=f'python -m {MODULE}')
  out = scaffold.prepare_out(args.out)
  settings = settings_from(args)
  start = time.time()
  arm_a, arm_b = _arm_workdirs(args, out)
  models_a, models_b, results, settings, snr = evaluate(arm_a, arm_b, settings, out)
  v, masked_a, masked_b = judge(models_a, models_b, results, settings, smoke=args.quick)
  wall = time.time() - start
  band_of = bands(snr)
  arms = (('A', models_a), ('B', models_b))
  sections = [_settings_section(arms, settings, band_of),
              '## Summary (mean over each arm\'s seeds)\n\n' + band_table(results, arms, settings, band_of),
              _curves_section(results, arms, settings),
              _autoattack_log_section(results, arms, settings),
              _masking_section(results, arms, settings, {'A': masked_a, 'B': masked_b}),
              _verdict_section(v, arms, settings)]
  names = figures(out, results, arms, settings)
  sections.append('## Figures\n\n' + '\n'.join(f'![{n}]({n})' for n in names))
  sections.append(_cost_section(results, arms))
  compute = sum(float(row.get('seconds', 0.0)) for m in (*models_a, *models_b) for row in results[m.key].values())
  sections.append(f'Measurement time, the sum of the cost table: {compute:.0f} s (training not included). Wall time '
                  f'of this run: {wall:.0f} s (rows already in rows.jsonl are not recomputed); load average '
                  f'{os.getloadavg()[0]:.1f}.')
  path = scaffold.write_results(out, 'Robustness of the NSDE ConvNeXt (arXiv 2409.01532)', sections,
                                module=MODULE, argv=argv, quick=args.quick, verdicts=v, figures=names,
                                seconds=compute)
  scaffold.finish(path, f'arm A {len(models_a)} x {models_a[0].kind}, arm B {len(models_b)} x {models_b[0].kind}, '
                  f'{wall:.0f} s; {stats.count(v)}')
  return path


def _arm_label(name: str, models: Sequence[Model]) -> str:
  kinds = sorted({m.kind for m in models})
  return f'arm {name} ({"/".join(kinds)}, {len(models)} seed{"s" if len(models) > 1 else ""})'


def _settings_section(arms, settings, band_of) -> str:
  lines = ['## Settings', '', '| arm | model | workdir | kind | checkpoint step | EOT draws | attribution draws |',
           '|---|---|---|---|---|---|---|']
  for arm, models in arms:
    for m in models:
      eot = settings.eot if m.stochastic else 1
      draws = (settings.draws or m.draws) if m.stochastic else 1
      lines.append(f'| {arm} | {m.name} | {m.key} | {m.kind} | {m.step} | {eot} | {draws} |')
  counts = ', '.join(f'{n}: {int((band_of == i).sum())}' for i, n in enumerate(BAND_NAMES))
  lines += ['', f'Test spectrograms: {band_of.size} for clean and noise accuracy ({counts}); AutoAttack on the '
            f'first {settings.n_attack}; attribution metrics on the first {settings.n_attr}. AutoAttack: '
            f'{settings.steps} APGD/FAB iterations (the standard 100), Square {settings.queries} queries (the '
            f'standard 5,000), {settings.n_targets} targets, EOT {settings.eot} for a stochastic model; L2 eps '
            f'{list(attack_grid(settings, "L2"))}, Linf eps '
            f'{[round(e * 255, 3) for e in attack_grid(settings, "Linf")]}/255 (the last of each grid is the '
            f'large eps of the masking check). Gaussian noise std {list(settings.noise)} (clipped to [0, 1]). '
            f'Integrated gradients: {settings.ig_steps} {settings.ig_method} points, zero baseline, predicted class. '
            f'Stability: {settings.stability_samples} uniform perturbations of Linf radius '
            f'{settings.stability_radius}; noise tunnel {settings.tunnel_samples} copies, std '
            f'{settings.tunnel_stdev}. ABC: {settings.abc_samples} mutated inputs per example, '
            f'{settings.abc_fraction:.0%} of the features each. Seed {settings.seed}.']
  return '\n'.join(lines)


def band_table(results, arms, settings, band_of: np.ndarray) -> str:
  """A Markdown table: one row per (arm, band) with each quantity's mean over the arm's seeds and examples."""
  columns = ['arm', 'band', 'n', 'clean acc', 'noise acc (mean)', 'AA L2 acc (mean)', 'AA Linf acc (mean)',
             'attr. change', 'attr. change (tunnel)', 'ABC correct', 'ABC incorrect']
  rows = []
  for arm, models in arms:
    sc = arm_scores([results[m.key] for m in models], settings)
    correct = sc['abc_correct'] > 0
    for b, band_name in [(None, 'all')] + list(enumerate(BAND_NAMES)):
      mask = np.ones(band_of.size, bool) if b is None else band_of == b
      amask = np.broadcast_to(mask[:sc['abc'].shape[1]], sc['abc'].shape)
      rows.append({'arm': _arm_label(arm, models), 'band': band_name, 'n': int(mask.sum()),
                   'clean acc': _mean(sc['clean'], mask), 'noise acc (mean)': _mean(sc['noise'], mask),
                   'AA L2 acc (mean)': _mean(sc['robust_l2'], mask),
                   'AA Linf acc (mean)': _mean(sc['robust_linf'], mask),
                   'attr. change': _mean(sc['stability'], mask),
                   'attr. change (tunnel)': _mean(sc['stability_tunnel'], mask),
                   'ABC correct': _mean(sc['abc'][amask & correct]),
                   'ABC incorrect': _mean(sc['abc'][amask & ~correct])})
  return scaffold.markdown_table(rows, columns)


def _curves_section(results, arms, settings) -> str:
  cols = ['model', 'clean'] + [f'noise {v:g}' for v in settings.noise]
  rows = [{'model': f'{arm}: {m.name}', 'clean': _mean(results[m.key]['clean']['correct']),
           **{f'noise {v:g}': _mean(results[m.key][f'noise={v:g}']['correct']) for v in settings.noise}}
          for arm, models in arms for m in models]
  text = '## Accuracy under Gaussian noise\n\n' + scaffold.markdown_table(rows, cols)
  l2, linf = attack_grid(settings, 'L2'), attack_grid(settings, 'Linf')
  cols = ['model'] + [f'L2 {e:g}' for e in l2] + [f'Linf {e * 255:g}/255' for e in linf]
  rows = [{'model': f'{arm}: {m.name}',
           **{f'L2 {e:g}': _mean(results[m.key][f'aa-L2={e:g}']['correct']) for e in l2},
           **{f'Linf {e * 255:g}/255': _mean(results[m.key][f'aa-Linf={e:g}']['correct']) for e in linf}}
          for arm, models in arms for m in models]
  return text + '\n\n## Robust accuracy under AutoAttack\n\n' + scaffold.markdown_table(rows, cols)


def _autoattack_log_section(results, arms, settings) -> str:
  """Each AutoAttack run's log: robust accuracy after each attack (attacked points, seconds)."""
  lines = ['## AutoAttack logs', '', 'Robust accuracy after each attack, in the order run (attacked points, '
           'seconds); each attack runs on the points no earlier one fooled.', '',
           '| model | version | norm | eps | log |', '|---|---|---|---|---|']
  for arm, models in arms:
    for m in models:
      for norm in ('L2', 'Linf'):
        for e in attack_grid(settings, norm):
          row = results[m.key][f'aa-{norm}={e:g}']
          log = ' → '.join(f'{name} {acc:.3f} ({n}, {sec:.1f} s)' for name, n, acc, sec in row['log'])
          lines.append(f'| {arm}: {m.name} | {row["version"]} | {norm} | {e:.4g} | {log} |')
  return '\n'.join(lines)


def _masking_section(results, arms, settings, masked) -> str:
  lines = ['## Gradient-masking checks (Carlini et al. 2019)', '',
           '(a) robust accuracy never rises with eps (beyond 2 SE) and is about 0 at the large eps; (b) neither '
           'Square nor APGD-CE examples transferred from a deterministic model of the other arm beat the white-box '
           'AutoAttack (beyond 2 SE), at the largest regular eps. Seeds pooled per arm.', '',
           '| arm | norm | white-box | Square | transfer | result |', '|---|---|---|---|---|---|']
  for arm, models in arms:
    for norm, flags in masked[arm].items():
      e = check_eps(settings, norm)
      cell = lambda what: _mean([_mean(results[m.key][f'{what}-{norm}={e:g}']['correct']) for m in models
                                 if f'{what}-{norm}={e:g}' in results[m.key]])
      lines.append(f'| {_arm_label(arm, models)} | {norm} | {cell("aa"):.3f} | {cell("square"):.3f} | '
                   f'{cell("transfer"):.3f} | {"; ".join(flags) if flags else "passed"} |')
  return '\n'.join(lines)


def _verdict_section(v, arms, settings) -> str:
  (_, a), (_, b) = arms
  text = (f'## Verdicts: {_arm_label("B", b)} against {_arm_label("A", a)}\n\n'
          f'Effects are mean(arm B) - mean(arm A), over the same test examples (paired), both arms\' seeds '
          f'resampled; Holm over this report\'s {len(v)} claims (`srjax.stats`). "{MASKED}": the claim would be '
          'supported, but the favoured arm failed a gradient-masking check for that norm.\n\n')
  text += scaffold.verdict_table(v)
  missing = [c[1] for c in CLAIMS if c[1] not in {x.claim for x in v}]
  if missing:
    text += ('\n\nNot measured (no eps for that norm, or fewer than 2 attributed examples that every model gets '
             'right): ' + '; '.join(missing) + '.')
  paper = ', '.join(f'{k}: NSDE {x["nsde"]}, ConvNeXt {x["convnext"]}' for k, x in PAPER.items())
  return text + f'\n\nThe paper\'s numbers (its own data and models, not comparable in level): {paper}.'


def _cost_section(results, arms) -> str:
  """Seconds per measurement as stored with each row (the first row of each kind includes its compile)."""
  models = [(arm, m) for arm, ms in arms for m in ms]
  names = list(dict.fromkeys(n for _, m in models for n in results[m.key]))
  cols = ['measurement'] + [f'{arm}: {m.name}' for arm, m in models]
  rows = [{'measurement': n, **{f'{arm}: {m.name}': float(results[m.key][n].get('seconds', float('nan')))
                                if n in results[m.key] else '' for arm, m in models}} for n in names]
  return (f'## Cost\n\nSeconds per row, compile included, load average {os.getloadavg()[0]:.1f} at the end of '
          'the run (rows reused from rows.jsonl keep the time of the run that computed them).\n\n'
          + scaffold.markdown_table(rows, cols))


def figures(out: str, results, arms, settings) -> list[str]:
  """noise.png, robust.png, attribution.png: each arm's mean over its seeds (thin lines: each seed)."""
  names = []
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for i, (arm, models) in enumerate(arms):
    for j, m in enumerate(models):
      r = results[m.key]
      curve = [_mean(r['clean']['correct'])] + [_mean(r[f'noise={v:g}']['correct']) for v in settings.noise]
      ax.plot([0.0] + list(settings.noise), curve, '-', color=f'C{i}', lw=0.7, alpha=0.5,
              label=_arm_label(arm, models) if j == 0 else None)
  ax.set_xlabel('Gaussian noise intensity (std)')
  ax.set_ylabel('accuracy')
  ax.legend(fontsize=8)
  fig.tight_layout()
  names.append(scaffold.save_figure(fig, out, 'noise'))

  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
  for ax, norm, scale in ((axes[0], 'L2', 1.0), (axes[1], 'Linf', 255.0)):
    grid = attack_grid(settings, norm)
    for i, (arm, models) in enumerate(arms):
      if not grid:
        continue
      acc = np.asarray([[_mean(results[m.key][f'aa-{norm}={e:g}']['correct']) for e in grid] for m in models])
      ax.plot([e * scale for e in grid], acc.mean(0), 'o-', color=f'C{i}', label=_arm_label(arm, models))
      for row in acc:
        ax.plot([e * scale for e in grid], row, '-', color=f'C{i}', lw=0.5, alpha=0.4)
    ax.set_xlabel(f'{norm} eps' + (' (x 1/255)' if norm == 'Linf' else ''))
    ax.set_title(f'AutoAttack {norm}')
  axes[0].set_ylabel('robust accuracy')
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  names.append(scaffold.save_figure(fig, out, 'robust'))

  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  width = 0.8 / len(arms)
  for i, (arm, models) in enumerate(arms):
    sc = arm_scores([results[m.key] for m in models], settings)
    correct = sc['abc_correct'] > 0
    offset = (i - (len(arms) - 1) / 2) * width
    axes[0].bar([offset, 1 + offset], [_mean(sc['stability']), _mean(sc['stability_tunnel'])], width,
                color=f'C{i}', label=_arm_label(arm, models))
    axes[1].bar([offset, 1 + offset], [np.nan_to_num(_mean(sc['abc'][correct])),
                                       np.nan_to_num(_mean(sc['abc'][~correct]))], width, color=f'C{i}')
  axes[0].set_xticks([0, 1], ['IG', 'IG + noise tunnel'])
  axes[0].set_ylabel('relative L2 change of the attribution')
  axes[0].legend(fontsize=8)
  axes[1].set_xticks([0, 1], ['correct', 'incorrect'])
  axes[1].set_ylabel('ABC')
  axes[1].set_ylim(0, 1)
  fig.tight_layout()
  names.append(scaffold.save_figure(fig, out, 'attribution'))
  return names


if __name__ == '__main__':
  main()
