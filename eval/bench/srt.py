"""Benchmark of SRT (srjax.srt) on a ViT with random weights: time per image for d = 1, 2, 3.

  nice python -m eval.bench.srt                 # ViT-S/16 at 224^2, 1 image (a few minutes on 2 CPU cores)
  nice python -m eval.bench.srt --quick         # ViT-Ti/16 at 64^2, smoke test (~1 min)
  nice python -m eval.bench.srt --batch-sweep   # also: forward time per image vs batch size (default chunk)
  nice python -m eval.bench.srt --memory-sweep  # also: compiled peak memory of mean / var / median vs d

Variants, per d (N = (2d+1)^2 offsets):
  token  srjax `srt(output='token')`: chunked vmap + lax.scan, area-overlap weights at token resolution.
  pixel  srjax `srt(output='pixel')`: the same chunks, aggregated at full resolution.
  naive  a Python loop over offsets around a jitted single forward, with NumPy shift / nearest upsample /
         back-shift / accumulate, as the official PyTorch code's dense path does.
  ideal  the batched forwards alone: n_chunks jitted forwards of chunk * B images, rescaled by
         N / (n_chunks * chunk) to exactly N offsets; srjax's ratio to it is its overhead (shifts, padded
         slots, aggregation). Timing rounds interleave the variants; ratios are taken within a round.
The 'machinery only' rows run srt with a near-free apply_fn of the same output shape: their time is the SRT
overhead itself (shifts, area weights, aggregation), and their over_ideal is 1 + that time / the ideal, an
estimate of the ratio that does not depend on how loaded the machine is.
Peak memory is XLA's static estimate for the compiled call (`compiled_peak_mb`); with chunking it should not
grow with N. A `token, 1 chunk` row compiles (does not run) the token path with every offset in one batch to
show what chunking saves. The RESULT line: token/pixel time over ideal at d=3 and token peak MiB at d=1, d=3.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from eval.bench import common
from srjax.models import vit

srt_mod = importlib.import_module('srjax.srt')  # the module (srjax.srt is also the function's name)

# Official PyTorch code, 2 CPU threads, ViT-S/16 at 224^2, seconds per image (REFERENCE_NOTES). A different
# framework, measured elsewhere: context only, not a baseline of this run.
REFERENCE_PYTORCH_S = {1: (2.9, 6.4), 2: (6.5, 11.4), 3: (13.9, 20.0)}  # d: (efficient, dense)
REFERENCE_PYTORCH_FORWARD_S = 0.27  # one forward per image at batch 10


def naive_srt(fwd, params, img: np.ndarray, offsets, output: str) -> np.ndarray:
  """The reference's dense path: loop over offsets, zero-fill shift, forward, upsample, back-shift, sum / N."""
  b, h, w, _ = img.shape
  acc = None
  for dy, dx in offsets:
    shifted = np.zeros_like(img)
    shifted[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        img[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    f = np.asarray(fwd(params, shifted))
    p = h // f.shape[1]
    up = np.repeat(np.repeat(f, p, axis=1), p, axis=2)
    back = np.zeros_like(up)  # back[y, x] = up[y + dy, x + dx], zero outside
    back[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)] = \
        up[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
    acc = back if acc is None else acc + back
  out = acc / len(offsets)
  if output == 'token':
    out = out.reshape(b, h // p, p, w // p, p, -1).mean((2, 4))
  return out


@dataclasses.dataclass(frozen=True)
class CheapFeatures:
  """Stand-in feature extractor with the ViT's output shape and almost no compute (patch mean, projection):
  srt with it times the SRT machinery alone (shift, weights, aggregation), independently of the load."""
  patch: int

  def __call__(self, params, x):
    b, h, w, c = x.shape
    p = self.patch
    return x.reshape(b, h // p, p, w // p, p, c).mean((2, 4)) @ params


def forward_per_image(fwd, params, batch: int, size: int, repeats: int) -> float:
  x = jnp.asarray(np.random.RandomState(0).rand(batch, size, size, 3), jnp.float32)
  common.block(fwd(params, x))
  return common.median_time(lambda: fwd(params, x), warmup=0, repeats=repeats) / batch


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quick', action='store_true', help='ViT-Ti/16 at 64^2 (smoke test)')
  parser.add_argument('--variant', default=None, help='ViT variant, default S/16 (Ti/16 with --quick)')
  parser.add_argument('--size', type=int, default=None, help='image side, default 224 (64 with --quick)')
  parser.add_argument('--batch', type=int, default=1, help='images per srt call')
  parser.add_argument('--ds', default='1,2,3', help='comma-separated perturbation levels d')
  parser.add_argument('--chunk', type=int, default=None, help='chunk_size (default: srt default)')
  parser.add_argument('--repeats', type=int, default=3, help='interleaved timing rounds')
  parser.add_argument('--no-naive', action='store_true', help='skip the Python-loop variant')
  parser.add_argument('--memory-sweep', action='store_true', help='peak memory of mean/var/median vs d')
  parser.add_argument('--batch-sweep', action='store_true', help='forward time per image vs batch size')
  args = parser.parse_args()
  variant = args.variant or ('Ti/16' if args.quick else 'S/16')
  size = args.size or (64 if args.quick else 224)
  ds = [int(v) for v in args.ds.split(',')]
  cfg = vit.decode_variant(variant)
  grid = (size // cfg['patch_size'],) * 2
  model = vit.ViT(**cfg, posemb_grid=grid, exact_gelu=True)
  fn = vit.features(model)
  img = jnp.asarray(np.random.RandomState(1).rand(args.batch, size, size, 3), jnp.float32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), img[:1])['params']
  fwd = jax.jit(fn)
  print(f'# SRT benchmark: ViT-{variant} at {size}^2, random weights, batch {args.batch}, '
        f'{jax.device_count()} {jax.default_backend()} device(s), repeats {args.repeats}')

  if args.batch_sweep:
    print('\n## Forward time per image vs batch size (jitted features)\n')
    rows = []
    for b in (1, 2, 4, 8, 10, 16, 32):
      rows.append({'batch': b, 'ms_per_image': 1e3 * forward_per_image(fwd, params, b, size, args.repeats)})
    common.print_table(rows, ['batch', 'ms_per_image'])

  rows, result = [], {}
  img_np = np.asarray(img)
  for d in ds:
    offs = srt_mod.offsets_grid(d)
    n_off = len(offs)
    n_chunks, per_chunk = srt_mod.plan_chunks(n_off, args.batch, args.chunk)
    chunk_img = jnp.asarray(np.random.RandomState(2).rand(per_chunk * args.batch, size, size, 3), jnp.float32)

    def ideal_run():  # the same number of batched forwards srjax runs, rescaled to N offsets exactly
      return [fwd(params, chunk_img) for _ in range(n_chunks)]
    fns = {'ideal': ideal_run}
    info = {}
    for output in ('token', 'pixel'):
      compiled, compile_s = common.compile_seconds(
          srt_mod._srt_jit, fn, params, img, offsets=offs, padding='zeros', output=output, aggregate='mean',
          back_fill='exclude', chunk_size=per_chunk)
      fns[output] = lambda c=compiled: c(params, img)
      info[output] = {'compile_s': compile_s, 'peak_mb': common.compiled_peak_mb(compiled)}
    if not args.no_naive:
      fns['naive loop'] = lambda: naive_srt(fwd, params, img_np, offs, 'token')
      common.block(fwd(params, img))  # compile the batch-B forward the loop uses
    for f in fns.values():  # warm-up
      common.block(f())
    # Interleaved rounds: on a shared machine the load drifts, so each round times every variant back to back
    # and the ratio to the ideal is taken within the round (median over rounds reported).
    times = {k: [] for k in fns}
    for _ in range(args.repeats):
      for k, f in fns.items():
        times[k].append(common.median_time(f, warmup=0, repeats=1))
    ideal = [t * n_off / (n_chunks * per_chunk) for t in times['ideal']]
    for k in fns:
      t = ideal if k == 'ideal' else times[k]
      ratio = float(np.median([a / b for a, b in zip(t, ideal)]))
      rows.append({'d': d, 'variant': k, 'offsets': n_off,
                   'chunks': f'{n_off}x1' if k == 'naive loop' else f'{n_chunks}x{per_chunk}',
                   's_per_image': float(np.median(t)) / args.batch, 'over_ideal': ratio, **info.get(k, {})})
      result[f'{k.split()[0]}_over_ideal_d{d}'] = ratio
    for output in ('token', 'pixel'):
      result[f'{output}_peak_mb_d{d}'] = info[output]['peak_mb']
  # The machinery alone, with a near-free apply_fn of the same output shape (robust to machine load).
  d = max(ds)
  offs = srt_mod.offsets_grid(d)
  n_chunks, per_chunk = srt_mod.plan_chunks(len(offs), args.batch, args.chunk)
  cheap, cheap_params = CheapFeatures(cfg['patch_size']), jnp.ones((3, cfg['width']), jnp.float32)
  ideal_d = [r['s_per_image'] for r in rows if r['d'] == d and r['variant'] == 'ideal'][0]
  for output in ('token', 'pixel'):
    compiled, compile_s = common.compile_seconds(
        srt_mod._srt_jit, cheap, cheap_params, img, offsets=offs, padding='zeros', output=output,
        aggregate='mean', back_fill='exclude', chunk_size=per_chunk)
    t = common.median_time(lambda c=compiled: c(cheap_params, img), warmup=1, repeats=args.repeats) / args.batch
    result[f'{output}_machinery_est_d{d}'] = 1 + t / ideal_d
    rows.append({'d': d, 'variant': f'{output} machinery only (cheap apply_fn)', 'offsets': len(offs),
                 'chunks': f'{n_chunks}x{per_chunk}', 's_per_image': t, 'over_ideal': 1 + t / ideal_d,
                 'compile_s': compile_s})
  # What chunking saves: the token path with all offsets of the largest d in one batch (compiled only).
  d = max(ds)
  offs = srt_mod.offsets_grid(d)
  compiled, compile_s = common.compile_seconds(
      srt_mod._srt_jit, fn, params, img, offsets=offs, padding='zeros', output='token', aggregate='mean',
      back_fill='exclude', chunk_size=len(offs))
  rows.append({'d': d, 'variant': 'token, 1 chunk (not run)', 'offsets': len(offs), 'chunks': f'1x{len(offs)}',
               'compile_s': compile_s, 'peak_mb': common.compiled_peak_mb(compiled)})

  if args.memory_sweep:
    print('\n## Compiled peak memory (MiB) vs d, per aggregate (compile only)\n')
    mem_rows = []
    for output in ('token', 'pixel'):
      for aggregate in ('mean', 'var', 'median'):
        row = {'output': output, 'aggregate': aggregate}
        for d in ds:
          offs = srt_mod.offsets_grid(d)
          compiled = srt_mod._srt_jit.lower(
              fn, params, img, offsets=offs, padding='zeros', output=output, aggregate=aggregate,
              back_fill='exclude', chunk_size=srt_mod.plan_chunks(len(offs), args.batch, args.chunk)[1]).compile()
          row[f'd={d}'] = common.compiled_peak_mb(compiled)
        mem_rows.append(row)
    common.print_table(mem_rows, ['output', 'aggregate'] + [f'd={d}' for d in ds])

  print('\n## SRT time per image (median), ratio to the ideal of the same d, compile time, peak memory\n')
  common.print_table(rows, ['d', 'variant', 'offsets', 'chunks', 's_per_image', 'over_ideal', 'compile_s',
                            'peak_mb'])
  if variant == 'S/16' and size == 224:
    print('\nContext, NOT measured here: the official PyTorch code on 2 CPU threads (REFERENCE_NOTES), ViT-S/16 '
          f'224^2, s per image: ' + ', '.join(f'd={k}: efficient {v[0]}, dense {v[1]}'
                                              for k, v in REFERENCE_PYTORCH_S.items())
          + f'; one forward {REFERENCE_PYTORCH_FORWARD_S} s/image at batch 10.')
  print(f'Process peak RSS: {common.process_peak_rss_mb():.0f} MiB')
  dmax, dmin = max(ds), min(ds)
  common.print_result(**{f'token_over_ideal_d{dmax}': result[f'token_over_ideal_d{dmax}'],
                         f'pixel_over_ideal_d{dmax}': result[f'pixel_over_ideal_d{dmax}'],
                         f'token_machinery_est_d{dmax}': result[f'token_machinery_est_d{dmax}'],
                         f'pixel_machinery_est_d{dmax}': result[f'pixel_machinery_est_d{dmax}'],
                         f'peak_mb_d{dmin}': result[f'token_peak_mb_d{dmin}'],
                         f'peak_mb_d{dmax}': result[f'token_peak_mb_d{dmax}']})


if __name__ == '__main__':
  main()
