"""Benchmark of `srjax.sweep.sr_curves`: the paper's full grid with its LSTM, against a Python loop.

    python -m eval.bench.sweep [--draws 10] [--chunk-size N] [--tfds-dir DIR] [--loop-repeats 1]

The grid of arXiv 2502.14442 (7 contrasts x 11 levels) x 10 draws over the whole test split (the embedded
1,000 digits + 100 blanks; `--tfds-dir` for MNIST's 10,000 + 1,000) with LSTM(20, relu) over 5 presentations,
independent uniform noise per image, draw and presentation. Variants, all measured in the same run:

* sweep: one `sr_curves` call (the compiled `correct_counts` timed on its own, median of --repeats runs after a
  warm-up; compile time by AOT lowering, peak memory from XLA's memory analysis);
* loop: a Python loop over (contrast, level, draw) around one jitted predict that draws the same per-image noise
  and returns the correct count, synchronising on each count (median of --loop-repeats runs after a warm-up);
* forward: the model's plain jitted forward on noisy sequences already in memory, batch = the sweep's step
  (chunk x levels x draws), timed per image: the cost floor of the sweep's forwards.

The weights are the initial ones (timing does not depend on them). The last line is
`RESULT speedup=loop/sweep sweep_s=... loop_s=... sweep_over_forward=sweep time / (images x forward time)`.
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from eval.bench import common
from srjax import data as srdata
from srjax import sweep
from srjax.data.no_signal import with_no_signal
from srjax.models import lstm
from srjax.models.apply_fn import ModuleApply

CONTRASTS = (1.0, 0.4, 0.25, 0.2, 0.15, 0.1, 0.05)
LEVELS = (0.0, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.35)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--draws', type=int, default=10)
  parser.add_argument('--seq-len', type=int, default=5)
  parser.add_argument('--chunk-size', type=int, default=None)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--loop-repeats', type=int, default=1)
  parser.add_argument('--tfds-dir', default='')
  args = parser.parse_args()

  if args.tfds_dir:
    test = srdata.load('tfds', 'test', name='mnist', data_dir=args.tfds_dir)
  else:
    test = srdata.load('mnist', 'test')
  test = with_no_signal(test, 0.1)
  x, y = test.images, test.labels
  n, T, D = len(y), args.seq_len, args.draws
  model = lstm.LSTMClassifier(num_classes=test.num_classes, seq_len=T)
  apply_fn = ModuleApply(model)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1,) + x.shape[1:]))
  key = jax.random.key(1)
  contrasts, levels = jnp.asarray(CONTRASTS, jnp.float32), jnp.asarray(LEVELS, jnp.float32)
  C, L = len(CONTRASTS), len(LEVELS)
  images = n * C * L * D
  print(f'# sweep benchmark: {n} test images x {C} contrasts x {L} levels x {D} draws = {images} noisy '
        f'sequences of {T} x 784; {jax.device_count()} {jax.devices()[0].platform} device(s)')

  # --- the compiled sweep
  mesh = sweep.make_mesh()
  chunk = args.chunk_size or sweep.default_chunk_size(L, D, jax.device_count())
  xs, ys, idx = sweep.chunk_dataset(x, y, chunk, mesh)
  static = dict(noise='uniform', draws=D, shared=False, repeats=T, mesh=mesh)
  compiled, compile_s = common.compile_seconds(sweep.correct_counts, apply_fn, variables, xs, ys, idx, contrasts,
                                               levels, key, **static)
  peak_mb = common.compiled_peak_mb(compiled)
  run_sweep = lambda: compiled(variables, xs, ys, idx, contrasts, levels, key)
  load_sweep = os.getloadavg()[0]
  sweep_s = common.median_time(run_sweep, warmup=1, repeats=args.repeats)
  counts = np.asarray(run_sweep())
  full = sweep.sr_curves(apply_fn, variables, x, y, contrasts=CONTRASTS, levels=LEVELS, draws=D, key=key,
                         repeats=T, chunk_size=chunk)
  assert np.array_equal(full.accuracy, (counts / n).astype(np.float32)), 'sr_curves != its compiled core'

  # --- the Python loop around a jitted predict (same draws)
  xj, yj, ij = jnp.asarray(x), jnp.asarray(y), jnp.arange(n)

  @jax.jit
  def predict_correct(variables, t, s, draw_key):
    u = jax.vmap(lambda i: sweep.standard_noise(jax.random.fold_in(draw_key, i), (T,) + x.shape[1:],
                                                'uniform'))(ij)
    logits = apply_fn(variables, sweep.perturb(xj[:, None], u, t, s))
    return jnp.sum(jnp.argmax(logits, -1) == yj)

  draw_keys = [jax.random.fold_in(key, d) for d in range(D)]
  compiled_loop, loop_compile_s = common.compile_seconds(predict_correct, variables, contrasts[0], levels[0],
                                                         draw_keys[0])
  loop_peak_mb = common.compiled_peak_mb(compiled_loop)

  def run_loop():
    out = np.zeros((C, L, D), np.int64)
    for ci in range(C):
      for li in range(L):
        for d in range(D):
          out[ci, li, d] = int(compiled_loop(variables, contrasts[ci], levels[li], draw_keys[d]))
    return out

  load_loop = os.getloadavg()[0]
  int(compiled_loop(variables, contrasts[0], levels[0], draw_keys[0]))
  loop_counts = None
  loop_times = []
  for _ in range(args.loop_repeats):
    start = time.perf_counter()
    loop_counts = run_loop()
    loop_times.append(time.perf_counter() - start)
  loop_s = float(np.median(loop_times))
  assert np.array_equal(loop_counts, counts), 'the loop and the sweep disagree'

  # --- the plain forward on the same kind of input (noisy sequences in memory), the sweep's step batch
  step_batch = chunk * L * D
  seqs = jnp.clip(jax.random.uniform(jax.random.key(2), (step_batch, T) + x.shape[1:]), 0, 1)
  forward = jax.jit(apply_fn)
  compiled_fwd, fwd_compile_s = common.compile_seconds(forward, variables, seqs)
  load_fwd = os.getloadavg()[0]
  fwd_s = common.median_time(lambda: compiled_fwd(variables, seqs), warmup=1, repeats=5)
  fwd_per_image = fwd_s / step_batch
  sweep_over_forward = sweep_s / (images * fwd_per_image)

  rows = [
      {'variant': 'sweep (sr_curves)', 'time_s': sweep_s, 'ratio_to_loop': sweep_s / loop_s,
       'images_per_s': images / sweep_s, 'compile_s': compile_s, 'peak_mb': peak_mb, 'load': load_sweep},
      {'variant': 'python loop x jitted predict', 'time_s': loop_s, 'ratio_to_loop': 1.0,
       'images_per_s': images / loop_s, 'compile_s': loop_compile_s, 'peak_mb': loop_peak_mb, 'load': load_loop},
      {'variant': f'plain forward (batch {step_batch}), per-image x {images}', 'time_s': images * fwd_per_image,
       'ratio_to_loop': images * fwd_per_image / loop_s, 'images_per_s': 1 / fwd_per_image,
       'compile_s': fwd_compile_s, 'peak_mb': common.compiled_peak_mb(compiled_fwd), 'load': load_fwd},
  ]
  common.print_table(rows, ['variant', 'time_s', 'ratio_to_loop', 'images_per_s', 'compile_s', 'peak_mb', 'load'])
  print(f'chunk_size={chunk} ({step_batch} forward sequences per scan step); process peak RSS '
        f'{common.process_peak_rss_mb():.0f} MiB')
  common.print_result(speedup=loop_s / sweep_s, sweep_s=sweep_s, loop_s=loop_s,
                      sweep_over_forward=sweep_over_forward, compile_s=compile_s, peak_mb=peak_mb,
                      images_per_s=images / sweep_s, load=load_sweep)


if __name__ == '__main__':
  main()
