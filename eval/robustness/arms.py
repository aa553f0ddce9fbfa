"""The two arms: each a list of `python -m train.nsde` workdirs (one per training seed), loaded, checked for the
same data, or trained with the main job's config."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any, Sequence

from eval.robustness.settings import MODULE, Model, PAPER_SEEDS, QUICK_SEEDS, SEEDS
from srjax.models.apply_fn import takes_key


def has_checkpoint(workdir: str) -> bool:
  directory = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def kind_of(config: Any) -> str:
  model = config.get('model') if hasattr(config, 'get') else None
  kind = model.get('kind') if hasattr(model, 'get') else None
  return str(kind) if kind else 'nsde'


def load_model(workdir: str, flag: str = '--arm-a') -> Model:
  """Loads a finished `train.nsde` run.

  Raises:
    SystemExit: a one-line message naming `flag` when the workdir holds no checkpoint.
  """
  if not has_checkpoint(workdir):
    raise SystemExit(f'{MODULE}: {flag} {workdir} holds no checkpoint; train it first with '
                     f'`python -m train.nsde --config configs/spectro.py --workdir {workdir}`')
  from train import nsde  # pylint: disable=g-import-not-at-top  (the training stack loads only when needed)
  trained = nsde.load_trained(workdir)
  kind = kind_of(trained.config)
  stochastic = takes_key(trained.apply_fn)   # an NSDE: its noise stays on at test time
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


def arm_workdirs(args: argparse.Namespace, out: str) -> tuple[list[str], list[str]]:
  if args.workdir and (args.arm_a or args.arm_b):
    raise SystemExit(f'{MODULE}: give either --workdir or --arm-a/--arm-b, not both')
  if args.workdir:   # the old interface: ConvNeXt runs form arm A, the others arm B
    from train import loop  # pylint: disable=g-import-not-at-top
    for w in args.workdir:
      if not has_checkpoint(w):
        load_model(w, '--workdir')   # the one-line error
    kinds = [kind_of(loop.read_config(w)) for w in args.workdir]
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
