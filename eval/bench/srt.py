"""Benchmark of SRT (srjax.srt) on a ViT with random weights: time per image for d = 1, 2, 3, and the plain forward.

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
Plain-forward rows: the jitted `vit.features` forward at the batch sizes the SRT chunks use (chunk * B images),
as ms per image and images per second, wall and process CPU time (the CPU time is less sensitive to other load);
when `torch` and `timm` happen to be importable (never a dependency), timm's ViT of the same size is timed in the
same interleaved rounds on torch.get_num_threads() threads.
The 'machinery only' rows run srt with a near-free apply_fn of the same output shape: their time is the SRT
overhead itself (shifts, area weights, aggregation), and their over_ideal is 1 + that time / the ideal, an
estimate of the ratio that does not depend on how loaded the machine is.
Peak memory is XLA's static estimate for the compiled call (`compiled_peak_mb`); with chunking it should not
grow with N. A `token, 1 chunk` row compiles (does not run) the token path with every offset in one batch to
show what chunking saves. The RESULT line: token/pixel time over ideal at d=3, token peak MiB at d=1, d=3, and the forward's ms per image
at the largest d's chunk batch (`forward_ms_per_img`, `torch_forward_ms_per_img` when measured); the load average
is printed beside every table.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from eval.bench import common
from srjax import srt_lib
from srjax.models import vit

# The authors' PyTorch code (`EnsembledExtractorFast`), 2 CPU threads, ViT-S/16 at 224^2, d=3 with their 50
# offsets, one image, on a quiet machine: 2.9 s per image, about 1.1x its 50 forwards (torch's ViT-S/16 forward:
# 52-58 ms per image). A different framework measured elsewhere: context only, not a baseline of this run.
REFERENCE_PYTORCH_S_D3 = 2.9


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


_TIMM_NAMES = {'Ti/16': 'vit_tiny_patch16_224', 'S/16': 'vit_small_patch16_224', 'B/16': 'vit_base_patch16_224'}


def torch_forward(variant: str, size: int):
  """timm's ViT `variant` (random weights, no head) as `fn(x [B, H, W, 3] NumPy) -> tokens`, or None when torch /
  timm are not importable."""
  try:
    import timm  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  if variant not in _TIMM_NAMES:
    return None
  net = timm.create_model(_TIMM_NAMES[variant], pretrained=False, num_classes=0, img_size=size).eval()

  def run(x):
    with torch.inference_mode():
      return net.forward_features(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
  return run


def forward_rows(fwd, params, torch_fwd, batches, size: int, repeats: int) -> list[dict]:
  """Plain-forward rows (srjax, and torch when given) at each batch size, timed in interleaved rounds."""
  rows = []
  for b in batches:
    x_np = np.random.RandomState(3).rand(b, size, size, 3).astype(np.float32)
    x = jnp.asarray(x_np)
    fns = {'srjax forward': lambda x=x: common.block(fwd(params, x))}
    if torch_fwd is not None:
      fns['torch forward'] = lambda x_np=x_np: torch_fwd(x_np)
    for f in fns.values():
      f()
    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for _ in range(repeats):
      for k, f in fns.items():
        c, t = time.process_time(), time.perf_counter()
        f()
        wall[k].append(time.perf_counter() - t)
        cpu[k].append(time.process_time() - c)
    base = np.asarray(wall['srjax forward'])
    for k in fns:
      ms = 1e3 * float(np.median(wall[k])) / b
      rows.append({'variant': k, 'batch': b, 'ms_per_image': ms, 'images_per_s': 1e3 / ms,
                   'cpu_ms_per_image': 1e3 * float(np.median(cpu[k])) / b,
                   'ratio_to_srjax': float(np.median(np.asarray(wall[k]) / base)),
                   'load_1min': os.getloadavg()[0]})
  return rows


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

  torch_fwd = torch_forward(variant, size)
  batches = sorted({srt_lib.plan_chunks(len(srt_lib.offsets_grid(d)), args.batch, args.chunk)[1] * args.batch
                    for d in ds})
  fwd_rows = forward_rows(fwd, params, torch_fwd, batches, size, args.repeats)
  print(f'\n## Plain forward (ms per image, interleaved rounds; load average {os.getloadavg()})\n')
  common.print_table(fwd_rows, ['variant', 'batch', 'ms_per_image', 'images_per_s', 'cpu_ms_per_image',
                                'ratio_to_srjax', 'load_1min'])
  big = srt_lib.plan_chunks(len(srt_lib.offsets_grid(max(ds))), args.batch, args.chunk)[1] * args.batch
  fwd_result = {f'{r["variant"].split()[0]}_forward_ms_per_img': r['ms_per_image'] for r in fwd_rows
                if r['batch'] == big}
  fwd_result = {'forward_ms_per_img': fwd_result['srjax_forward_ms_per_img'],
                **({'torch_forward_ms_per_img': fwd_result['torch_forward_ms_per_img']}
                   if 'torch_forward_ms_per_img' in fwd_result else {})}

  rows, result = [], {}
  img_np = np.asarray(img)
  for d in ds:
    offs = srt_lib.offsets_grid(d)
    n_off = len(offs)
    n_chunks, per_chunk = srt_lib.plan_chunks(n_off, args.batch, args.chunk)
    chunk_img = jnp.asarray(np.random.RandomState(2).rand(per_chunk * args.batch, size, size, 3), jnp.float32)

    def ideal_run():  # the same number of batched forwards srjax runs, rescaled to N offsets exactly
      return [fwd(params, chunk_img) for _ in range(n_chunks)]
    fns = {'ideal': ideal_run}
    info = {}
    for output in ('token', 'pixel'):
      prepared = srt_lib.prepare(fn, params, img, offsets=offs, output=output, chunk_size=args.chunk)
      compiled, compile_s = common.compile_seconds(prepared)
      fns[output] = lambda c=compiled, a=prepared.dynamic_args: c(*a)
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
      result[f'{k.split()[0]}_s_per_img_d{d}'] = float(np.median(t)) / args.batch
    for output in ('token', 'pixel'):
      result[f'{output}_peak_mb_d{d}'] = info[output]['peak_mb']
  # The machinery alone, with a near-free apply_fn of the same output shape (robust to machine load).
  d = max(ds)
  offs = srt_lib.offsets_grid(d)
  n_chunks, per_chunk = srt_lib.plan_chunks(len(offs), args.batch, args.chunk)
  cheap, cheap_params = CheapFeatures(cfg['patch_size']), jnp.ones((3, cfg['width']), jnp.float32)
  ideal_d = [r['s_per_image'] for r in rows if r['d'] == d and r['variant'] == 'ideal'][0]
  for output in ('token', 'pixel'):
    prepared = srt_lib.prepare(cheap, cheap_params, img, offsets=offs, output=output, chunk_size=args.chunk)
    compiled, compile_s = common.compile_seconds(prepared)
    t = common.median_time(lambda c=compiled, a=prepared.dynamic_args: c(*a), warmup=1,
                           repeats=args.repeats) / args.batch
    result[f'{output}_machinery_est_d{d}'] = 1 + t / ideal_d
    rows.append({'d': d, 'variant': f'{output} machinery only (cheap apply_fn)', 'offsets': len(offs),
                 'chunks': f'{n_chunks}x{per_chunk}', 's_per_image': t, 'over_ideal': 1 + t / ideal_d,
                 'compile_s': compile_s})
  # What chunking saves: the token path with all offsets of the largest d in one batch (compiled only).
  d = max(ds)
  offs = srt_lib.offsets_grid(d)
  compiled, compile_s = common.compile_seconds(srt_lib.prepare(fn, params, img, offsets=offs,
                                                               chunk_size=len(offs)))
  rows.append({'d': d, 'variant': 'token, 1 chunk (not run)', 'offsets': len(offs), 'chunks': f'1x{len(offs)}',
               'compile_s': compile_s, 'peak_mb': common.compiled_peak_mb(compiled)})

  if args.memory_sweep:
    print('\n## Compiled peak memory (MiB) vs d, per aggregate (compile only)\n')
    mem_rows = []
    for output in ('token', 'pixel'):
      for aggregate in ('mean', 'var', 'median'):
        row = {'output': output, 'aggregate': aggregate}
        for d in ds:
          compiled = srt_lib.prepare(fn, params, img, d=d, output=output, aggregate=aggregate,
                                     chunk_size=args.chunk).lower().compile()
          row[f'd={d}'] = common.compiled_peak_mb(compiled)
        mem_rows.append(row)
    common.print_table(mem_rows, ['output', 'aggregate'] + [f'd={d}' for d in ds])

  print(f'\n## SRT time per image (median), ratio to the ideal of the same d, compile time, peak memory (load '
        f'average {os.getloadavg()})\n')
  common.print_table(rows, ['d', 'variant', 'offsets', 'chunks', 's_per_image', 'over_ideal', 'compile_s',
                            'peak_mb'])
  if variant == 'S/16' and size == 224:
    print('\nContext, NOT measured here: the authors\' PyTorch code (EnsembledExtractorFast) on 2 CPU threads, '
          f'ViT-S/16 224^2, d=3 (50 offsets), quiet machine: {REFERENCE_PYTORCH_S_D3} s per image.')
  print(f'Process peak RSS: {common.process_peak_rss_mb():.0f} MiB')
  dmax, dmin = max(ds), min(ds)
  common.print_result(**{f'token_over_ideal_d{dmax}': result[f'token_over_ideal_d{dmax}'],
                         f'pixel_over_ideal_d{dmax}': result[f'pixel_over_ideal_d{dmax}'],
                         f'token_machinery_est_d{dmax}': result[f'token_machinery_est_d{dmax}'],
                         f'pixel_machinery_est_d{dmax}': result[f'pixel_machinery_est_d{dmax}'],
                         f'peak_mb_d{dmin}': result[f'token_peak_mb_d{dmin}'],
                         f'peak_mb_d{dmax}': result[f'token_peak_mb_d{dmax}'],
                         f'token_s_per_img_d{dmax}': result[f'token_s_per_img_d{dmax}'],
                         **fwd_result, 'load_1min': os.getloadavg()[0]})


if __name__ == '__main__':
  main()
