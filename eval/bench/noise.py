"""Benchmark of latent noise injection: the injected forward (`srjax.inject.apply`) against the plain forward of
the same model, for each noise kind, on the models of `configs/positive_noise.py`.

  python -m eval.bench.noise [--batch 100] [--repeats 7]

The injection rewrites one layer's input inside the traced function, so the compiled program is the plain one
plus a few elementwise ops (a roll and an add, a sum, or a random draw): the ratio to the plain forward should be
close to 1. Rows: model x kind (batch axis, and the per-sample axis for the linear kinds); baseline = the plain
forward of the same model in the same run. Load average printed beside each timing (shared machines).
"""
from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from configs import positive_noise as pn_config
from eval.bench import common
from srjax import inject
from train.srt_classifier import build_model

VARIANTS = (('none', 0.0, 'batch'), ('gaussian', 1.0, 'batch'), ('salt_and_pepper', 0.1, 'batch'),
            ('linear', 0.4, 'batch'), ('linear', 0.4, 'sample'), ('optimal', 1.0, 'batch'),
            ('optimal', 1.0, 'sample'))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--batch', type=int, default=100)
  parser.add_argument('--repeats', type=int, default=15)
  args = parser.parse_args()
  rows, result = [], {}
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(args.batch, 28, 28, 1)), jnp.float32)
  key = jax.random.key(0)
  for arch, preset in (('resnet', None), ('vit', 'vit')):
    config = pn_config.get_config(preset)
    model = build_model(config, 10, (28, 28, 1))
    variables = model.init(jax.random.key(1), x[:1])
    compiled = []
    for kind, strength, axis in VARIANTS:
      noise = inject.Noise(kind, strength, axis=axis)
      fn = jax.jit(lambda v, x, k, noise=noise: inject.apply(model, v, x, noise=noise, key=k))
      c, compile_s = common.compile_seconds(fn, variables, x, key)
      common.block(c(variables, x, key))
      compiled.append((c, compile_s))
    # Round-robin repeats, so a change of machine load hits every variant alike; then the median per variant.
    times = [[] for _ in VARIANTS]
    loads = [[] for _ in VARIANTS]
    for _ in range(args.repeats):
      for i, (c, _) in enumerate(compiled):
        times[i].append(common.median_time(lambda c=c: c(variables, x, key), warmup=1, repeats=1))
        loads[i].append(os.getloadavg()[0])
    base = float(np.median(times[0]))
    for (kind, strength, axis), (c, compile_s), t, load in zip(VARIANTS, compiled, times, loads):
      seconds = float(np.median(t))
      name = f'{arch} {kind} {strength:g} {axis}' if kind != 'none' else f'{arch} plain'
      rows.append({'variant': name, 'time_ms': 1e3 * seconds, 'ratio': seconds / base, 'compile_s': compile_s,
                   'peak_mb': common.compiled_peak_mb(c), 'load1': float(np.mean(load))})
      if kind != 'none':
        result[f'{arch}_{kind}_{axis}_ratio'] = seconds / base
    result[f'{arch}_plain_ms'] = 1e3 * base
  common.print_table(rows, ['variant', 'time_ms', 'ratio', 'compile_s', 'peak_mb', 'load1'])
  result['load1'] = os.getloadavg()[0]
  common.print_result(batch=args.batch, **result)


if __name__ == '__main__':
  main()
