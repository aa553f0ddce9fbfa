"""torchattacks' AutoAttack parts on the small CNN of `eval.bench.attack`, for the side-by-side timing.

Runs under a Python with torch and torchattacks (never a dependency of srjax) and imports neither jax nor srjax:
`python eval/bench/torch_attacks.py IN.npz` reads the CNN's weights, the inputs and the settings written by
`eval.bench.attack` and prints one JSON line: per attack (and the ensemble) the seconds and the robust accuracy.
The attacks get the same settings as srjax's (steps, queries, targets, eps, norm), one restart each.
"""
import json
import sys
import time

import numpy as np

try:  # the peer: present only in a scratch venv, never a dependency of srjax
  import torch
  import torchattacks
except ImportError as e:
  raise SystemExit(f'eval/bench/torch_attacks.py needs torch and torchattacks (not srjax dependencies): {e}') from e


class SmallCNN(torch.nn.Module):
  """conv3x3/2 (8) - relu - conv3x3/2 (16) - relu - global mean - dense; the same as `eval.bench.attack.cnn`."""

  def __init__(self, w):
    super().__init__()
    self.c1 = torch.nn.Conv2d(w['k1'].shape[2], w['k1'].shape[3], 3, stride=2, padding=1)
    self.c2 = torch.nn.Conv2d(w['k2'].shape[2], w['k2'].shape[3], 3, stride=2, padding=1)
    self.fc = torch.nn.Linear(w['wd'].shape[0], w['wd'].shape[1])
    with torch.no_grad():  # JAX HWIO -> torch OIHW; dense [in, out] -> [out, in]
      self.c1.weight.copy_(torch.tensor(w['k1']).permute(3, 2, 0, 1))
      self.c1.bias.copy_(torch.tensor(w['b1']))
      self.c2.weight.copy_(torch.tensor(w['k2']).permute(3, 2, 0, 1))
      self.c2.bias.copy_(torch.tensor(w['b2']))
      self.fc.weight.copy_(torch.tensor(w['wd']).T)
      self.fc.bias.copy_(torch.tensor(w['bd']))

  def forward(self, x):
    h = torch.relu(self.c1(x))
    h = torch.relu(self.c2(h))
    return self.fc(h.mean(dim=(2, 3)))


def main(path):
  data = dict(np.load(path))
  torch.set_num_threads(int(data['threads']))
  model = SmallCNN(data).eval()
  x = torch.tensor(data['x']).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
  y = torch.tensor(data['y']).long()
  eps, norm = float(data['eps']), str(data['norm'])
  steps, queries, classes = int(data['steps']), int(data['queries']), int(data['classes'])
  targets = int(data['n_targets'])

  def apgd_t():
    a = torchattacks.APGDT(model, norm=norm, eps=eps, steps=steps, n_restarts=1, n_classes=classes, seed=0)
    a.n_target_classes = targets
    return a

  def fab_t():
    a = torchattacks.FAB(model, norm=norm, eps=eps, steps=steps, n_restarts=1, multi_targeted=True,
                         n_classes=classes, seed=0)
    a.n_target_classes = targets
    return a

  make = {
      'apgd-ce': lambda: torchattacks.APGD(model, norm=norm, eps=eps, steps=steps, n_restarts=1, loss='ce', seed=0),
      'apgd-t': apgd_t,
      'fab-t': fab_t,
      'square': lambda: torchattacks.Square(model, norm=norm, eps=eps, n_queries=queries, n_restarts=1, seed=0),
  }
  make['autoattack'] = lambda: torchattacks.MultiAttack([make[n]() for n in ('apgd-ce', 'apgd-t', 'fab-t', 'square')])
  out = {}
  with torch.no_grad():
    clean = (model(x).argmax(1) == y)
  for name, build in make.items():
    attack = build()
    start = time.perf_counter()
    x_adv = attack(x, y)
    seconds = time.perf_counter() - start
    with torch.no_grad():
      robust = (model(x_adv).argmax(1) == y) & clean
    out[name] = dict(seconds=seconds, robust_accuracy=float(robust.float().mean()))
  print(json.dumps(out))


if __name__ == '__main__':
  main(sys.argv[1])
