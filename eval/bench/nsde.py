"""Benchmark of the NSDE ConvNeXt: train-step cost against its ConvNeXt and against PyTorch (timm's blocks),
diffrax against a plain lax.scan, the depthwise-conv implementations, APGD-100 per batch, and the spectrogram
generator.

  python -m eval.bench.nsde [--variant cpu] [--batch 32] [--size 64] [--stem 4] [--rounds 7] [--steps 10]
                            [--torch-threads 2] [--depthwise shift conv] [--quick]

What srjax does: each ConvNeXt stage of the NSDE is one diffrax solve (Euler on MultiTerm(ODETerm, ControlTerm),
RecursiveCheckpointAdjoint, a key-folded Brownian control), with the 7x7 depthwise conv written as 49 shifted
multiply-adds with a hand-written gradient (`depthwise='shift'`, `srjax.models.depthwise`). Rows:
  * ConvNeXt and NSDE (sigma = --sigma, diffrax) train step (value_and_grad + AdamW), forward-only (the loss) and
    gradient-only (jax.grad of the loss), with the shifted depthwise conv;
  * the same train steps with the grouped depthwise conv (`nn.Conv(feature_group_count=C)`) and the NSDE with
    `srjax.nsde.scan_solve` (plain lax.scan doing the same math);
  * when torch and timm are importable (never a dependency): the same network built from timm's
    `ConvNeXtStage`/`ConvNeXtBlock` (4x4 patchify stem + LayerNorm2d, timm's NormMlpClassifierHead), with the
    srjax params converted from its weights by `params_from_timm` (the logits are compared as a check), on
    --torch-threads threads; its NSDE adds sigma * N(0, 1) after each block (Euler-Maruyama at dt = 1). Torch
    runs NCHW (timm's default) and channels_last; the faster of the two is the peer;
  * APGD-CE L2 with 100 steps on one batch of the NSDE (EOT 1) when `srjax.attack` is installed;
  * the spectrogram generator (`srjax.data.spectro.generate`, no cache) in samples per second.
All step rows are timed in the same interleaved rounds (each round times --steps calls of every row, in a
shuffled order); a row's time is the median over --rounds rounds, so a change of load hits every row alike.
Compile time is `jit(f).lower(...).compile()`; peak memory is XLA's static estimate (`memory_analysis`). The CPU
model and the load average are printed: on a shared machine only ratios taken in the same run are comparable.

The last line: RESULT nsde_over_convnext=... diffrax_over_scan=... apgd_s=... gen_samples_per_s=...
convnext_vs_torch=... nsde_vs_torch=... (torch train-step time / srjax train-step time: > 1 means srjax is
faster; nan without torch).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from eval.bench import common
from srjax import nsde
from srjax.data import spectro
from srjax.models import convnext


SOLVERS = {'diffrax': nsde.DiffraxEuler(), 'scan': nsde.ScanEuler()}   # the table's labels


def _steps(model, kind: str, solver: str, sigma: float) -> tuple[dict[str, Callable], Any]:
  """{'train': step(params, opt_state, x, y, key), 'forward': loss(...), 'gradient': grad(...)} jitted."""
  tx = optax.adamw(1e-3, weight_decay=0.05)

  def loss(params, x, y, key):
    if kind == 'convnext':
      logits = model.apply({'params': params}, x)
    else:
      logits = nsde.apply(model, {'params': params}, x, key, sde=nsde.SDE(sigma, solver=SOLVERS[solver]), train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def step(params, opt_state, x, y, key):
    value, grads = jax.value_and_grad(loss)(params, x, y, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  return {'train': jax.jit(step), 'forward': jax.jit(loss), 'gradient': jax.jit(jax.grad(loss))}, tx


def torch_peer(dims, depths, stem: int, sigma: float, threads: int):
  """timm's ConvNeXt blocks assembled into the `cpu` network, or None when torch / timm are not importable.

  Returns:
    (state_dict as NumPy arrays (timm's names), {(kind, what, layout): fn(x NHWC NumPy, y) -> None},
    logits(x) of the ConvNeXt for the conversion check).
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from timm.layers import LayerNorm, LayerNorm2d, NormMlpClassifierHead  # pylint: disable=g-import-not-at-top
    from timm.models.convnext import ConvNeXtStage  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  torch.set_num_threads(threads)
  torch.manual_seed(0)

  class Net(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, dims[0], stem, stride=stem), LayerNorm2d(dims[0]))
      self.stages = torch.nn.Sequential(*[
          ConvNeXtStage(dims[max(s - 1, 0)], dims[s], stride=2 if s else 1, depth=depths[s], ls_init_value=0.1,
                        norm_layer=LayerNorm2d, norm_layer_cl=LayerNorm)
          for s in range(len(dims))])
      self.head = NormMlpClassifierHead(dims[-1], 8)
      self.sigma = 0.0

    def forward(self, x):
      x = self.stem(x)
      for stage in self.stages:
        x = stage.downsample(x)
        for block in stage.blocks:
          x = block(x)
          if self.sigma:
            x = x + self.sigma * torch.randn_like(x)
      return self.head(x)

  net = Net()
  state = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
  opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)

  def fns(kind, layout):
    fmt = torch.channels_last if layout == 'channels_last' else torch.contiguous_format

    def prep(x, y):
      xt = torch.from_numpy(np.array(x.transpose(0, 3, 1, 2))).contiguous(memory_format=fmt)
      return xt, torch.from_numpy(np.array(y)).long()

    def forward(x, y):
      net.sigma = sigma if kind == 'nsde' else 0.0
      with torch.no_grad():
        torch.nn.functional.cross_entropy(net(x), y)

    def gradient(x, y):
      net.sigma = sigma if kind == 'nsde' else 0.0
      net.zero_grad(set_to_none=True)
      torch.nn.functional.cross_entropy(net(x), y).backward()

    def train(x, y):
      gradient(x, y)
      opt.step()

    return {'forward': forward, 'gradient': gradient, 'train': train}, prep

  def logits(x):
    net.sigma = 0.0
    net.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
      return net(torch.from_numpy(np.array(x.transpose(0, 3, 1, 2)))).numpy()

  out = {}
  for layout in ('nchw', 'channels_last'):
    for kind in ('convnext', 'nsde'):
      f, prep = fns(kind, layout)
      for what, fn in f.items():
        out[(kind, what, layout)] = (fn, prep, layout)
  return state, out, logits, torch


def _interleaved(calls: dict[Any, Callable[[], Any]], rounds: int, steps: int) -> dict[Any, float]:
  """Median seconds per call of each entry over `rounds` rounds; each round runs `steps` calls of every entry
  in turn (after one warm-up call each), in an order shuffled per round (seeded), so a burst of load on a shared
  machine does not always hit the same neighbours."""
  for fn in calls.values():
    common.block(fn())
  samples = {name: [] for name in calls}
  order = list(calls)
  rng = random.Random(0)
  for _ in range(rounds):
    rng.shuffle(order)
    for name in order:
      fn = calls[name]
      start = time.perf_counter()
      for _ in range(steps):
        out = fn()
      common.block(out)
      samples[name].append((time.perf_counter() - start) / steps)
  return {name: statistics.median(v) for name, v in samples.items()}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--variant', default='cpu')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--size', type=int, default=64)
  parser.add_argument('--stem', type=int, default=4)
  parser.add_argument('--sigma', type=float, default=0.2)
  parser.add_argument('--rounds', type=int, default=7)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--torch-threads', type=int, default=2)
  parser.add_argument('--no-torch', action='store_true', help='skip the PyTorch peer')
  parser.add_argument('--depthwise', nargs='+', default=list(convnext.DEPTHWISE), choices=convnext.DEPTHWISE,
                      help='depthwise implementations to time (shift alone makes room for more rounds)')
  parser.add_argument('--apgd-steps', type=int, default=100)
  parser.add_argument('--gen-samples', type=int, default=2000)
  parser.add_argument('--quick', action='store_true', help='tiny shapes, 2 rounds of 2 steps, APGD 10 steps')
  args = parser.parse_args(argv)
  if 'shift' not in args.depthwise:
    parser.error('--depthwise must include shift (the rows the ratios are taken from)')
  if args.quick:
    args.size, args.batch, args.rounds, args.steps, args.apgd_steps, args.gen_samples = 16, 8, 2, 2, 10, 200
  key = jax.random.key(0)
  x = jax.random.uniform(key, (args.batch, args.size, args.size, 1))
  y = jnp.arange(args.batch) % 8
  x_np, y_np = np.asarray(x), np.asarray(y)
  print(f'# NSDE benchmark: ConvNeXt-{args.variant}, {args.size}x{args.size} inputs, batch {args.batch}, '
        f'stem {args.stem}, sigma {args.sigma}; backend {jax.default_backend()}, {jax.device_count()} device(s); '
        f'CPU {common.cpu_model()}, {os.cpu_count()} cores; load {common.load()}')

  cfg = convnext.variant(args.variant)
  peer = None if args.no_torch else torch_peer(cfg['dims'], cfg['depths'], args.stem, args.sigma,
                                                 args.torch_threads)
  calls, meta = {}, {}
  for depthwise in args.depthwise:
    model = convnext.build(args.variant, 8, stem_patch=args.stem, layer_scale_init=0.1, depthwise=depthwise)
    if peer is not None:   # the torch network's weights, so both compute the same function
      params = jax.tree.map(jnp.asarray, convnext.params_from_timm(peer[0]))
    else:
      params = jax.jit(model.init)(key, x[:1])['params']
    if depthwise == 'shift' and peer is not None:
      got = np.asarray(jax.jit(model.apply)({'params': params}, x))
      print(f'# srjax vs torch logits, same weights: max |diff| {np.abs(got - peer[2](x_np)).max():.2e}')
    for kind, solver in (('convnext', '-'), ('nsde', 'diffrax'), ('nsde', 'scan')):
      fns, tx = _steps(model, kind, solver, args.sigma)
      opt_state = tx.init(params)
      whats = ('train', 'forward', 'gradient') if (depthwise, solver) in (('shift', '-'), ('shift', 'diffrax')) \
          else ('train',)
      for what in whats:
        fn_args = (params, opt_state, x, y, key) if what == 'train' else (params, x, y, key)
        compiled, compile_s = common.compile_seconds(fns[what], *fn_args)
        name = ('srjax', kind, solver, depthwise, what)
        calls[name] = (lambda c=compiled, a=fn_args: c(*a))
        meta[name] = {'compile_s': compile_s, 'peak_mb': common.compiled_peak_mb(compiled)}
  if peer is not None:
    for (kind, what, layout), (fn, prep, _) in peer[1].items():
      xt, yt = prep(x_np, y_np)
      calls[('torch', kind, layout, what)] = (lambda f=fn, a=(xt, yt): f(*a))
      meta[('torch', kind, layout, what)] = {'compile_s': 0.0, 'peak_mb': float('nan')}
  load_before = common.load()
  times = _interleaved(calls, args.rounds, args.steps)
  load_after = common.load()

  base = times[('srjax', 'convnext', '-', 'shift', 'train')]
  rows = []
  for name, t in times.items():
    if name[0] == 'srjax':
      _, kind, solver, depthwise, what = name
      label = f'srjax {kind} {what} ({solver}, depthwise={depthwise})'
    else:
      _, kind, layout, what = name
      label = f'torch {kind} {what} (timm blocks, {layout}, {args.torch_threads} threads)'
    rows.append({'variant': label, 'time_s': t, 'ratio': t / base, **meta[name], 'load': load_after})

  vs_torch = {}
  for kind, solver in (('convnext', '-'), ('nsde', 'diffrax')):
    for what in ('train', 'forward', 'gradient'):
      if peer is None:
        vs_torch[(kind, what)] = float('nan')
        continue
      torch_s = min(times[('torch', kind, layout, what)] for layout in ('nchw', 'channels_last'))
      vs_torch[(kind, what)] = torch_s / times[('srjax', kind, solver, 'shift', what)]

  apgd_s = float('nan')
  try:
    from srjax import attack  # pylint: disable=g-import-not-at-top
  except ImportError:
    attack = None
    print('# APGD row skipped: srjax.attack is not installed on this branch')
  if attack is not None:
    model = convnext.build(args.variant, 8, stem_patch=args.stem, layer_scale_init=0.1)
    variables = jax.jit(model.init)(key, x[:1])
    apply_fn = nsde.NSDEApply(model, nsde.SDE(args.sigma))
    run = jax.jit(lambda v, x, y, k: attack.apgd(apply_fn, v, x, y, eps=0.5, norm='L2', steps=args.apgd_steps,
                                                 key=k, eot=1))
    compiled, compile_s = common.compile_seconds(run, variables, x, y, key)
    apgd_s = common.median_time(lambda: compiled(variables, x, y, key), repeats=max(1, args.rounds // 2))
    rows.append({'variant': f'APGD-CE L2, {args.apgd_steps} steps, NSDE, one batch', 'time_s': apgd_s,
                 'ratio': apgd_s / base, 'compile_s': compile_s, 'peak_mb': common.compiled_peak_mb(compiled),
                 'load': common.load()})

  start = time.perf_counter()
  spectro.generate(args.gen_samples, size=args.size)
  gen_s = time.perf_counter() - start
  gen_rate = args.gen_samples / gen_s
  rows.append({'variant': f'spectro.generate({args.gen_samples}, size={args.size})', 'time_s': gen_s,
               'ratio': float('nan'), 'compile_s': 0.0, 'peak_mb': common.process_peak_rss_mb(), 'load': common.load()})
  common.print_table(rows, ['variant', 'time_s', 'ratio', 'compile_s', 'peak_mb', 'load'])
  print(f'# ratio: time over the srjax ConvNeXt train step (shifted depthwise conv); step rows are medians of '
        f'{args.rounds} interleaved rounds of {args.steps} calls, load {load_before} -> {load_after}; the '
        f'generator row\'s peak_mb is the process RSS')
  if peer is not None:
    print('# torch time / srjax time (> 1: srjax faster; torch = the faster of NCHW and channels_last):')
    for (kind, what), r in vs_torch.items():
      print(f'#   {kind:8s} {what:8s} {r:.3g}')
  nsde_train = times[('srjax', 'nsde', 'diffrax', 'shift', 'train')]
  common.print_result(nsde_over_convnext=nsde_train / base,
                      diffrax_over_scan=nsde_train / times[('srjax', 'nsde', 'scan', 'shift', 'train')],
                      apgd_s=apgd_s, gen_samples_per_s=float(gen_rate),
                      convnext_vs_torch=vs_torch[('convnext', 'train')], nsde_vs_torch=vs_torch[('nsde', 'train')])


if __name__ == '__main__':
  main()
