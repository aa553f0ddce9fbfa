"""Benchmark of the NSDE ConvNeXt: train-step cost against its ConvNeXt, diffrax against a plain lax.scan, the
depthwise-conv implementations, APGD-100 per batch, and the spectrogram generator.

  python -m eval.bench.nsde [--variant cpu] [--batch 32] [--size 64] [--stem 4] [--repeats 5] [--quick]

What srjax does: each ConvNeXt stage of the NSDE is one diffrax solve (Euler on MultiTerm(ODETerm, ControlTerm),
RecursiveCheckpointAdjoint, a key-folded Brownian control), with the 7x7 depthwise conv written as 49 shifted
multiply-adds (`depthwise='shift'`). Rows, all measured in the same process (so under the same load):
  * ConvNeXt train step (value_and_grad + AdamW), shifted and grouped (`nn.Conv(feature_group_count=C)`)
    depthwise conv: the baseline is the shifted one;
  * NSDE train step, diffrax and `srjax.nsde.scan_solve` (plain lax.scan doing the same math), shifted and grouped;
  * APGD-CE L2 with 100 steps on one batch of the NSDE (EOT 1) when `srjax.attack` is installed;
  * the spectrogram generator (`srjax.data.spectro.generate`, no cache) in samples per second.
Each time is the median of --repeats calls after a warm-up, with `block_until_ready`; compile time is
`jit(f).lower(...).compile()`; peak memory is XLA's static estimate (`memory_analysis`). The load average is
printed beside each row: on a shared machine only ratios taken in the same run are comparable.

The last line: RESULT nsde_over_convnext=... diffrax_over_scan=... apgd_s=... gen_samples_per_s=...
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from eval.bench import common
from srjax import nsde
from srjax.data import spectro
from srjax.models import convnext


def _load() -> float:
  return round(os.getloadavg()[0], 2)


def _train_step(model, kind: str, solver: str, sigma: float):
  tx = optax.adamw(1e-3, weight_decay=0.05)

  def loss(params, x, y, key):
    if kind == 'convnext':
      logits = model.apply({'params': params}, x)
    else:
      logits = nsde.apply(model, {'params': params}, x, key, sigma=sigma, solver=solver, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def step(params, opt_state, x, y, key):
    value, grads = jax.value_and_grad(loss)(params, x, y, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  return jax.jit(step), tx


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--variant', default='cpu')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--size', type=int, default=64)
  parser.add_argument('--stem', type=int, default=4)
  parser.add_argument('--sigma', type=float, default=0.2)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--apgd-steps', type=int, default=100)
  parser.add_argument('--gen-samples', type=int, default=2000)
  parser.add_argument('--quick', action='store_true', help='tiny shapes, 2 repeats, APGD 10 steps')
  args = parser.parse_args(argv)
  if args.quick:
    args.size, args.batch, args.repeats, args.apgd_steps, args.gen_samples = 16, 8, 2, 10, 200
  key = jax.random.key(0)
  x = jax.random.uniform(key, (args.batch, args.size, args.size, 1))
  y = jnp.arange(args.batch) % 8
  print(f'# NSDE benchmark: ConvNeXt-{args.variant}, {args.size}x{args.size} inputs, batch {args.batch}, '
        f'stem {args.stem}, sigma {args.sigma}; backend {jax.default_backend()}, {jax.device_count()} device(s)')

  rows, times = [], {}
  for depthwise in convnext.DEPTHWISE:
    model = convnext.build(args.variant, 8, stem_patch=args.stem, layer_scale_init=0.1, depthwise=depthwise)
    params = jax.jit(model.init)(key, x[:1])['params']
    for kind, solver in (('convnext', '-'), ('nsde', 'diffrax'), ('nsde', 'scan')):
      step, tx = _train_step(model, kind, solver, args.sigma)
      opt_state = tx.init(params)
      compiled, compile_s = common.compile_seconds(step, params, opt_state, x, y, key)
      seconds = common.median_time(lambda: compiled(params, opt_state, x, y, key), repeats=args.repeats)
      name = f'{kind} train step ({solver}, depthwise={depthwise})'
      times[(kind, solver, depthwise)] = seconds
      rows.append({'variant': name, 'time_s': seconds, 'compile_s': compile_s,
                   'peak_mb': common.compiled_peak_mb(compiled), 'load': _load()})
  base = times[('convnext', '-', 'shift')]
  for row, t in zip(rows, times.values()):
    row['ratio'] = t / base

  apgd_s = float('nan')
  try:
    from srjax import attack  # pylint: disable=g-import-not-at-top
  except ImportError:
    attack = None
    print('# APGD row skipped: srjax.attack is not installed on this branch')
  if attack is not None:
    model = convnext.build(args.variant, 8, stem_patch=args.stem, layer_scale_init=0.1)
    variables = jax.jit(model.init)(key, x[:1])
    apply_fn = nsde.NSDEApply(model, sigma=args.sigma)
    run = jax.jit(lambda v, x, y, k: attack.apgd(apply_fn, v, x, y, eps=0.5, norm='L2', steps=args.apgd_steps,
                                                 key=k, eot=1, stochastic=True))
    compiled, compile_s = common.compile_seconds(run, variables, x, y, key)
    apgd_s = common.median_time(lambda: compiled(variables, x, y, key), repeats=max(1, args.repeats // 2))
    rows.append({'variant': f'APGD-CE L2, {args.apgd_steps} steps, NSDE, one batch', 'time_s': apgd_s,
                 'ratio': apgd_s / base, 'compile_s': compile_s, 'peak_mb': common.compiled_peak_mb(compiled),
                 'load': _load()})

  start = time.perf_counter()
  spectro.generate(args.gen_samples, size=args.size)
  gen_s = time.perf_counter() - start
  gen_rate = args.gen_samples / gen_s
  rows.append({'variant': f'spectro.generate({args.gen_samples}, size={args.size})', 'time_s': gen_s,
               'ratio': float('nan'), 'compile_s': 0.0, 'peak_mb': common.process_peak_rss_mb(), 'load': _load()})
  common.print_table(rows, ['variant', 'time_s', 'ratio', 'compile_s', 'peak_mb', 'load'])
  print('# ratio: time over the ConvNeXt train step with the shifted depthwise conv; the generator row\'s peak_mb '
        'is the process RSS')
  common.print_result(nsde_over_convnext=times[('nsde', 'diffrax', 'shift')] / base,
                      diffrax_over_scan=times[('nsde', 'diffrax', 'shift')] / times[('nsde', 'scan', 'shift')],
                      apgd_s=apgd_s, gen_samples_per_s=float(gen_rate))


if __name__ == '__main__':
  main()
