"""Settings of the robustness eval: what changes a measured number (it keys the stored rows), the presets, the
flags, and the `Model` record of one trained run."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from typing import Any


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
