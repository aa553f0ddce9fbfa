"""Dense probe of SRT features (paper Sec. 3 / Appendix C): foreground segmentation of MNIST digits from the
token features of a small ViT trained here, with plain (nearest), bilinear and SRT (d = 1..4) upsampling, beside
SRT's training-free alternatives at equal cost (a larger input, the stride trick), each timed in the same run.

    python -m eval.srt_segmentation --out results/srt_segmentation [--workdir DIR] [--distill] [--quick]

Cost (2-core laptop CPU): training the ViT (patch 4, width 64, depth 4; 600 steps) takes 1-3 min quiet (13 min
at load average ~10), the SRT features of 600 digits for d = 1..4 (9 to 81 shifts each) and the probes about 1-2
min. The comparison at equal cost adds the larger inputs, the stride trick and SRT on the strided model: measured
on a shared 2-core AMD EPYC, the whole default comparison took 415 s (load average 10.6 falling to 1.7; the full
default run 20 min with training), and a second time 781 s (load 8.9 -> 6.7), against 239 s (load 4.7 -> 9.5)
for nearest, bilinear and SRT d = 1..4 alone run just before it from the same workdir (`--scales --stride-divs
--strided-srt`, nothing else). Those timings predate the validation digits: their SRT d = 1..4 features (150
digits, half the test set's) add an estimated 1-2 min. The committed full default run (results/srt_segmentation,
2026-12-05, load average 4.4 falling to 2.1) took 425 s in all, 265 s of it the comparison; the statistics take
seconds. `--quick` (a 10-step tiny ViT, 32 training + 32 test + 16 validation digits,
d <= 2, the same alternatives, batch 16) takes well under a minute; the test runs it.

Setup. Ground truth: pixel > 0.5 is foreground (a 28x28 mask per digit). The ViT (7x7 tokens) is trained with
the shared loop to classify the embedded MNIST subset (labels are used only there); its features are the last
block's tokens after the final LayerNorm, as in the paper. For each feature type we fit one linear probe
(logistic regression on standardised features, Newton/IRLS to convergence, L2 1e-3) on the pixels of
`n_train` training digits and report on `n_test` test digits (the first of the test split) the foreground IoU,
background IoU and their mean (mIoU), pooled over all test pixels. SRT's d is chosen on `n_val` validation digits,
the next ones of the test split (disjoint from the test digits and from the ViT's training digits); the layer is
fixed (the last block). Feature types at pixel resolution (28x28):
  * nearest: each token copied to its 4x4 patch (the plain single-pass map; equals SRT with d = 0);
  * bilinear: the 7x7 map bilinearly interpolated (jax.image.resize, half-pixel centres) -- Appendix C's
    "interpolated features";
  * SRT d: `srjax.srt(..., d, output='pixel', aggregate='mean')` over the (2d+1)^2 shift grid, zero fill;
  * larger input xk (k = 2, 3): the digit resized bicubically to 28k x 28k (the position embedding
    interpolated), its (7k)^2 tokens bilinearly resized to 28x28 -- the baseline of the feature-upsampling papers
    (FeatUp, LiFT, JAFAR, LoftUp, AnyUp);
  * stride trick p/k (k = 2, 4): Amir et al. 2021's overlapping patches, `ViT(patch_stride=p/k)` on the same
    weights (`srjax.models.vit`), (7k)^2 tokens bilinearly resized to 28x28;
  * SRT d on the strided model (default d = 1 at stride p/2).
Every method's seconds per image are the median batch time of one jitted call on the same batch size (50), after
a warm-up, with `block_until_ready`.

Verdicts (`srjax.stats`; `judge`). Every row's mIoU carries a 95% interval, and every claim is a paired
difference of test mIoU over the same test digits: `srjax.stats.compare` on each digit's linearised contribution
to the pooled mIoU (`miou_influence`), a bootstrap over the test digits. The claims, Holm-corrected together:
  * Appendix C (interpolating features does worse than SRT; there on NYU depth, where interpolation was even
    worse than the baseline): SRT at the d with the best validation mIoU minus bilinear;
  * at equal cost, for SRT d = 1, 2, 3: SRT d minus each method whose measured seconds per image are no more
    (every pair, nothing picked first; `contradicted` means that method beats SRT at no more cost).
Whether SRT lies on the Pareto front of (seconds per image, mIoU), drawn in miou_vs_cost.png, stays descriptive
(point estimates). The interval widths in results.md say which differences the 300 test digits resolve; Holm
over the ~20 claims of a default run widens each test to about alpha / 20 for the smallest p-value.
verdicts.json records the verdicts for `python -m eval.report`;
a --quick run reads 'not assessed (smoke run)' throughout.

With --distill the ViT is also self-distilled on its own SRT features (`train/srt_distill.py`, Eq. 6,
`configs/srt_distill.py` defaults: 300 label-free steps, d = 2; 3-6 more minutes) and the student's single pass
is probed the same way (paper Sec. 3.2: distillation keeps one forward pass at inference).

Writes results.md (the mIoU table and the claims), verdicts.json, rows.json, miou_vs_cost.png, miou_vs_d.png and
examples.png into --out.

References:
  Lao et al., "Sub-token ViT embedding via stochastic resonance transformers", Sec. 3, Appendix C.
  Amir et al., "Deep ViT features as dense visual descriptors" (2021), Sec. 3.1 (the stride trick).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from typing import Any, Callable, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from configs import common as config_common  # pylint: disable=wrong-import-position
from configs import srt_distill as distill_config  # pylint: disable=wrong-import-position
from eval import scaffold, srt_common  # pylint: disable=wrong-import-position
from eval.bench import common as bench_common  # pylint: disable=wrong-import-position
from srjax import checks  # pylint: disable=wrong-import-position
from srjax import stats as sr_stats  # pylint: disable=wrong-import-position
from srjax.data.batches import pad_rows  # pylint: disable=wrong-import-position
from srjax.srt_lib import srt  # pylint: disable=wrong-import-position
from train import metrics, srt_classifier, srt_distill  # pylint: disable=wrong-import-position

THRESHOLD = 0.5


@functools.partial(jax.jit, static_argnames=('iters',))
def fit_logistic(feats: jax.Array, labels: jax.Array, l2: float = 1e-3, iters: int = 25) -> jax.Array:
  """L2-regularised logistic regression by Newton's method (IRLS); returns weights [C + 1] (bias last).

  Args:
    feats: [N, C] standardised features.
    labels: [N] in {0, 1}.
    l2: ridge penalty on the weights (not the bias), per example (the objective is a mean).
    iters: Newton steps (quadratic convergence; 25 is far past convergence for C <= a few hundred).

  Returns:
    [C + 1] float32 weights, the bias last.
  """
  n, c = feats.shape
  x = jnp.concatenate([feats, jnp.ones((n, 1), feats.dtype)], axis=1)
  reg = l2 * jnp.eye(c + 1).at[c, c].set(0.0)

  def step(w, _):
    p = jax.nn.sigmoid(x @ w)
    grad = x.T @ (p - labels) / n + reg @ w
    hess = (x * (p * (1 - p))[:, None]).T @ x / n + reg + 1e-8 * jnp.eye(c + 1)
    return w - jnp.linalg.solve(hess, grad), None
  w, _ = jax.lax.scan(step, jnp.zeros(c + 1, feats.dtype), None, length=iters)
  return w


def predict(w: np.ndarray, feats: np.ndarray) -> np.ndarray:
  """Foreground decisions [N] bool of the probe `w` (from `fit_logistic`) on features [N, C]."""
  return (feats @ w[:-1] + w[-1]) > 0


def iou_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
  """Foreground IoU, background IoU and their mean (mIoU), pooled over all pixels."""
  fg = float(np.sum(pred & gt) / max(np.sum(pred | gt), 1))
  bg = float(np.sum(~pred & ~gt) / max(np.sum(~pred | ~gt), 1))
  return {'IoU fg': fg, 'IoU bg': bg, 'mIoU': (fg + bg) / 2}


# The comparison at equal cost: every method maps a batch of images [B, H, W, C] to pixel-resolution features
# [B, H, W, C'] in one jitted call, so its seconds per image are measured the same way for all.
FAMILIES = ('nearest', 'bilinear', 'larger input', 'stride trick', 'SRT', 'SRT + stride trick')


def method_specs(patch: int, ds: Sequence[int], scales: Sequence[int], stride_divs: Sequence[int],
                 strided_srt: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
  """The methods compared, as dicts {name, family, d, scale, stride, forwards}.

  Args:
    patch: the ViT's patch size p.
    ds: SRT levels d (each (2d+1)^2 forwards of the plain model).
    scales: input enlargement factors k (bicubic k H x k W input, k^2 times the tokens).
    stride_divs: stride-trick divisors k (patch stride p / k, about k^2 times the tokens).
    strided_srt: (k, d) pairs: SRT at level d on the model at stride p / k.

  Returns:
    The method list, in table order.
  """
  spec = lambda name, family, d=0, scale=1, stride=patch: dict(
      name=name, family=family, d=d, scale=scale, stride=stride, forwards=(2 * d + 1) ** 2)
  out = [spec('nearest', 'nearest'), spec('bilinear', 'bilinear')]
  out += [spec(f'larger input x{k}', 'larger input', scale=k) for k in scales]
  for k in stride_divs:
    if patch % k:
      checks.fail('--stride-divs', k, f'divisors of the patch size {patch}')
    out.append(spec(f'stride trick p/{k}', 'stride trick', stride=patch // k))
  out += [spec(f'SRT d={d}', 'SRT', d=d) for d in ds]
  for k, d in strided_srt:
    if patch % k:
      checks.fail('--strided-srt', k, f'divisors of the patch size {patch}')
    out.append(spec(f'SRT d={d} on stride p/{k}', 'SRT + stride trick', d=d, stride=patch // k))
  return out


def method_fn(spec: dict[str, Any], model: Any, size: tuple[int, int]) -> Callable[[Any, jax.Array], jax.Array]:
  """`fn(variables, images [B, H, W, C]) -> [B, H, W, C']` pixel features of one method (see `method_specs`).

  nearest / bilinear: the stride-p token map upsampled (block replication / jax.image.resize 'linear', half-pixel
  centres). larger input xk: the image resized bicubically (jax.image.resize, half-pixel centres) to kH x kW,
  run through the ViT (position embedding interpolated), tokens bilinearly resized to H x W. stride trick p/k:
  the ViT with `patch_stride=p/k` ('centre' padding: H k/p x W k/p tokens centred on their cells), bilinearly
  resized to H x W. SRT (+ stride trick): `srjax.srt(..., d, output='pixel', aggregate='mean')` on the plain or
  strided model (its native nearest-upsampled, back-shifted mean).
  """
  strided = model if spec['stride'] == model.patch_size else model.clone(patch_stride=spec['stride'])
  feats = srt_classifier.feature_fn(strided)
  if spec['family'] in ('SRT', 'SRT + stride trick'):
    return lambda p, b: srt(feats, p, b, d=spec['d'], output='pixel', aggregate='mean')
  k = spec['scale']
  up = 'nearest' if spec['family'] == 'nearest' else 'bilinear'

  def fn(p, b):
    if k != 1:
      b = jax.image.resize(b, (b.shape[0], k * size[0], k * size[1], b.shape[3]), 'bicubic')
    return srt_common.pixel_upsample(feats(p, b), size, up)
  return jax.jit(fn)


def interleaved_timing(fns: Sequence[Callable[[np.ndarray], jax.Array]], x: np.ndarray, batch_size: int,
                       consume: Callable[[int, int, np.ndarray], None]) -> list[float]:
  """Runs every fn on every batch of `x`, the methods interleaved batch by batch, timing each call.

  Each fn gets one warm-up call (compilation) first. Then for each batch of `batch_size` images (the last one
  zero-padded, so one compile) every fn runs in turn, timed with `block_until_ready`, and
  `consume(method_index, start, outputs[:k])` receives its outputs. Interleaving makes a load change on a shared
  machine hit all methods alike; the median over batches is robust to spikes.

  Args:
    fns: `fn(images [batch_size, ...]) -> array [batch_size, ...]`.
    x: [N, ...] inputs.
    batch_size: images per call, the same for every fn.
    consume: called with (fn index, first image index, host outputs of the real images).

  Returns:
    Median seconds per image of each fn.
  """
  pad = lambda c: pad_rows(c, batch_size)
  for fn in fns:
    jax.block_until_ready(fn(pad(x[:batch_size])))
  times = [[] for _ in fns]
  for start in range(0, len(x), batch_size):
    chunk = pad(x[start:start + batch_size])
    k = min(batch_size, len(x) - start)
    for i, fn in enumerate(fns):
      t = time.perf_counter()
      y = jax.block_until_ready(fn(chunk))
      times[i].append(time.perf_counter() - t)
      consume(i, start, np.asarray(y)[:k])
  return [float(np.median(t)) / batch_size for t in times]


def iou_counts(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """Per-image [N, 4] int64 counts (fg intersection, fg union, bg intersection, bg union) of masks [N, H, W]."""
  ax = (1, 2)
  return np.stack([np.sum(pred & gt, ax), np.sum(pred | gt, ax), np.sum(~pred & ~gt, ax),
                   np.sum(~pred | ~gt, ax)], axis=1).astype(np.int64)


def miou_from_counts(counts: np.ndarray) -> np.ndarray:
  """Pooled mIoU from summed counts [..., 4] (the same number `iou_scores` gives on the pooled pixels)."""
  counts = np.asarray(counts, np.float64)
  return (counts[..., 0] / np.maximum(counts[..., 1], 1) + counts[..., 2] / np.maximum(counts[..., 3], 1)) / 2


def miou_influence(counts: np.ndarray) -> np.ndarray:
  """Per-image scores [..., N] whose mean over the N images is exactly the pooled mIoU of counts [..., N, 4].

  The pooled IoU is a ratio R = sum(I) / sum(U) of per-image intersections and unions; its linearisation (the
  nonparametric delta method) gives image i the score R + (I_i - R U_i) / mean(U), whose mean is R. The mIoU's
  score is the mean of the foreground's and the background's. `srjax.stats.compare` on these scores bootstraps
  the test images with the pooled mIoU as the effect (a paired difference when two methods share the images);
  to first order this is the bootstrap of the pooled ratio itself.

  References:
    Davison & Hinkley, Bootstrap Methods and their Application (1997), Sec. 2.7 (empirical influence values;
    the ratio estimator).
  """
  c = np.asarray(counts, np.float64)
  out = 0.0
  for inter, union in ((c[..., 0], c[..., 1]), (c[..., 2], c[..., 3])):
    total = union.sum(-1, keepdims=True)
    ratio = inter.sum(-1, keepdims=True) / np.maximum(total, 1)
    out = out + ratio + (inter - ratio * union) / np.maximum(total / c.shape[-2], 1e-12)
  return out / 2


def row_intervals(counts: np.ndarray, *, resamples: int = sr_stats.RESAMPLES, seed: int = 0) -> sr_stats.Comparison:
  """Each method's pooled mIoU with its 95% interval: `srjax.stats.compare` (one arm, the bootstrap over the test
  images) on the `miou_influence` scores of counts [M, N, 4]; the fields are arrays [M]."""
  return sr_stats.compare(miou_influence(counts)[:, None, :], resamples=resamples, seed=seed)


def choose_on_validation(val_miou: dict[str, float]) -> str:
  """The candidate with the best validation mIoU (the first, i.e. the cheapest, on a tie)."""
  if not val_miou:
    checks.fail('val_miou', val_miou, 'at least one candidate row with its validation mIoU')
  return max(val_miou, key=lambda k: (val_miou[k], -list(val_miou).index(k)))


def judge(rows: Sequence[dict[str, Any]], counts: np.ndarray, val_miou: dict[str, float], budgets: Sequence[str],
          quick: bool = False, *, resamples: int = sr_stats.RESAMPLES,
          seed: int = 0) -> tuple[list[sr_stats.Verdict], str, list[str]]:
  """The report's claims, Holm-corrected together (`srjax.stats.assess`), and the lines that state them.

  Claims (each a paired comparison of pooled test mIoU over the same test digits, `miou_influence` scores):
    * Appendix C, "interpolated features do worse than SRT": SRT at the d chosen on the validation digits
      (`choose_on_validation` over `val_miou`; the test digits never choose) minus bilinear.
    * At equal cost, for each budget row (e.g. 'SRT d=2') and each other method whose seconds per image are no
      more: budget row minus that method ('supported': SRT beats it; 'contradicted': it beats SRT at no more
      cost). Every pair is tested (nothing is picked as the best first); the pair of the Appendix C claim is not
      repeated.
  The Pareto front of (seconds per image, mIoU) is drawn from point estimates and stays descriptive.

  Args:
    rows: the methods, in the order of counts: dicts with 'features' (the name), 'family', 's/img'.
    counts: [M, N, 4] per-image test counts (`iou_counts`), the same N test digits for every method.
    val_miou: {candidate row name: its pooled mIoU on the validation digits} (the SRT rows).
    budgets: budget rows (absent ones are skipped).
    quick: a --quick run: every verdict reads 'not assessed (smoke run)'.
    resamples, seed: of the bootstrap.

  Returns:
    (the verdicts, the chosen row's name, Markdown lines for results.md).

  Raises:
    ValueError: counts not [len(rows), N, 4]; a val_miou key that is not a row; no 'bilinear' row.
  """
  names = [r['features'] for r in rows]
  counts = np.asarray(counts)
  if counts.ndim != 3 or counts.shape[0] != len(rows) or counts.shape[2] != 4:
    checks.fail('counts', counts.shape, f'an array [{len(rows)}, N, 4] (one row of per-image counts per method)')
  if 'bilinear' not in names:
    checks.fail('rows', names, "a 'bilinear' row (the Appendix C baseline)")
  for name in val_miou:
    if name not in names:
      checks.fail('val_miou', name, f'names of rows ({names})')
  scores = miou_influence(counts)[:, None, :]                                  # [M, 1, N]
  cmp = lambda a, b: sr_stats.compare(scores[names.index(a)], scores[names.index(b)], paired=True,
                                      resamples=resamples, seed=seed)
  chosen = choose_on_validation(val_miou)
  claims = [sr_stats.Claim(f'SRT beats interpolation (Appendix C): {chosen} (d chosen on the validation digits) '
                           'minus bilinear, mIoU', cmp('bilinear', chosen))]
  costs = [r['s/img'] for r in rows]
  per_budget = []
  for budget in budgets:
    if budget not in names:
      continue
    b = names.index(budget)
    others = [names[i] for i in range(len(rows))
              if i != b and costs[i] <= costs[b] and not (budget == chosen and names[i] == 'bilinear')]
    per_budget.append((budget, len(claims), others))
    claims += [sr_stats.Claim(f'At equal cost: {budget} beats {o} (which costs no more), mIoU', cmp(o, budget))
               for o in others]
  verdicts = sr_stats.assess(claims, smoke=quick)
  fmt = lambda v: f'{v.effect:+.4f} [{v.low:+.4f}, {v.high:+.4f}], Holm p {v.p_holm:.3g}: **{v.verdict}**'
  lines = [f'- Appendix C: {chosen} (best of {len(val_miou)} SRT rows on the validation digits: '
           + ', '.join(f'{k} {v:.4f}' for k, v in val_miou.items()) + f') minus bilinear on the test digits '
           f'{fmt(verdicts[0])}.']
  for budget, start, others in per_budget:
    b = names.index(budget)
    if not others:
      lines.append(f'- At the cost of {budget} ({costs[b]:.2e} s/image): nothing else costs no more.')
      continue
    parts = [f'{o}: {fmt(v)}' for o, v in zip(others, verdicts[start:start + len(others)])]
    lines.append(f'- At the cost of {budget} ({costs[b]:.2e} s/image), {budget} minus each method that costs no '
                 f'more: ' + '; '.join(parts) + '.')
  front = pareto_front(costs, [r['mIoU'] for r in rows])
  on_front = [names[i] for i in front if rows[i]['family'] in ('SRT', 'SRT + stride trick')]
  lines.append(f'- Pareto front (seconds per image, mIoU; point estimates, descriptive): '
               f'{", ".join(names[i] for i in front)}. SRT rows on it: {", ".join(on_front) or "none"}.')
  return verdicts, chosen, lines


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
  """Indices of the points no other point dominates (cost <= and score >=, one of them strictly), by cost."""
  idx = []
  for i, (c, s) in enumerate(zip(costs, scores)):
    dominated = any(c2 <= c and s2 >= s and (c2 < c or s2 > s) for c2, s2 in zip(costs, scores))
    if not dominated:
      idx.append(i)
  return sorted(idx, key=lambda i: costs[i])


def miou_vs_cost_figure(rows: Sequence[dict[str, Any]], out: str) -> str:
  """mIoU (95% bootstrap interval) against seconds per image (log x), one point per method, Pareto front."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for j, family in enumerate(FAMILIES):
    fam = [r for r in rows if r['family'] == family]
    if not fam:
      continue
    ax.errorbar([r['s/img'] for r in fam], [r['mIoU'] for r in fam],
                yerr=[[r['mIoU'] - r['mIoU lo'] for r in fam], [r['mIoU hi'] - r['mIoU'] for r in fam]],
                fmt='os^vDP'[j], color=f'C{j}', label=family, capsize=2)
    for r in fam:
      ax.annotate(r['features'].replace(' on stride', '\n@'), (r['s/img'], r['mIoU']), fontsize=6,
                  xytext=(3, 3), textcoords='offset points')
  front = pareto_front([r['s/img'] for r in rows], [r['mIoU'] for r in rows])
  ax.step([rows[i]['s/img'] for i in front], [rows[i]['mIoU'] for i in front], where='post', color='k', lw=0.8,
          ls='--', label='Pareto front')
  ax.set_xscale('log')
  ax.set_xlabel('seconds per image (log scale; same run, same batch size)')
  ax.set_ylabel('test mIoU (linear probe)')
  ax.set_title('Dense features at equal cost: SRT vs training-free alternatives')
  ax.legend(fontsize=7)
  fig.tight_layout()
  return scaffold.save_figure(fig, out, 'miou_vs_cost')


def add_arguments(p: argparse.ArgumentParser) -> None:
  """This script's flags (the scaffold adds --out, --workdir, --quick, --set)."""
  p.add_argument('--ds', type=int, nargs='+', default=[1, 2, 3, 4])
  p.add_argument('--scales', type=int, nargs='*', default=[2, 3], help='larger-input factors (bicubic)')
  p.add_argument('--stride-divs', type=int, nargs='*', default=[2, 4],
                 help='stride trick: patch stride p / k for each k')
  p.add_argument('--strided-srt', nargs='*', default=['2:1'], metavar='K:D',
                 help='SRT at level D on the model at patch stride p / K')
  p.add_argument('--batch-size', type=int, default=50, help='images per call, the same for every method')
  p.add_argument('--n-boot', type=int, default=sr_stats.RESAMPLES,
                 help='bootstrap resamples of the test digits (srjax.stats.compare, paired across methods)')
  p.add_argument('--n-train', type=int, default=300, help='digits whose pixels train the probe')
  p.add_argument('--n-test', type=int, default=300, help='test digits (the first of the test split)')
  p.add_argument('--n-val', type=int, default=150,
                 help='validation digits that choose SRT\'s d (the test split\'s digits after the --n-test ones)')
  p.add_argument('--distill', action='store_true',
                 help='also self-distil the ViT on its SRT features (configs/srt_distill.py, Eq. 6) and probe the '
                      "student's single pass")
  p.add_argument('--distill-steps', type=int, default=None, help='override configs/srt_distill.py num_steps')


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  """--workdir keeps/reuses the trained ViT checkpoint; --set overrides a configs/srt_classifier.py field."""
  return scaffold.parse_args(__doc__.split('\n\n')[0], argv, default_out='results/srt_segmentation',
                             add_arguments=add_arguments, prog='python -m eval.srt_segmentation')


def distill_student(quick: bool, teacher_workdir: str, num_steps: int | None) -> tuple[Any, dict]:
  """Runs train/srt_distill.py's task (teacher = this script's ViT, reloaded from teacher_workdir).

  Returns:
    (student params, a dict with the distillation settings and its last test-set losses: the distillation
    loss of the student and the teacher gap, i.e. the same loss for the teacher's single pass).
  """
  config = distill_config.get_config('smoke' if quick else None)
  config_common.override(config, {'teacher_workdir': teacher_workdir})
  if num_steps is not None:
    config_common.override(config, {'num_steps': num_steps})
  with tempfile.TemporaryDirectory(prefix='srt_distill_') as workdir:
    run = scaffold.train_or_reload(srt_distill.build_task, config, workdir)
    last_eval = metrics.last_eval(workdir)
  info = {'num_steps': config.num_steps, 'd': config.d, 'loss': config.loss, 'lr': config.optim.learning_rate,
          'batch_size': config.batch_size, 'test distill loss': round(last_eval['loss'], 4),
          'test teacher gap (loss at step 0)': round(last_eval['teacher_gap'], 4)}
  return run.params, info


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  out = scaffold.prepare_out(args.out)
  t0 = time.time()
  preset, overrides, ds = None, {}, args.ds
  n_train, n_test, n_val = args.n_train, args.n_test, args.n_val
  batch_size, n_boot = args.batch_size, args.n_boot
  strided_srt = []
  for item in args.strided_srt:
    k, _, d = item.partition(':')
    if not (k.isdigit() and d.isdigit()):
      checks.fail('--strided-srt', item, "'K:D' with integers K (stride p / K) and D (SRT level)")
    strided_srt.append((int(k), int(d)))
  if args.quick:
    preset, ds, n_train, n_test, n_val, batch_size, n_boot = 'smoke', [1, 2], 32, 32, 16, 16, 200
  for name, value in (('--n-train', n_train), ('--n-test', n_test), ('--n-val', n_val), ('--batch-size', batch_size)):
    checks.integer(name, value, 1)
  checks.integer('--n-boot', n_boot, 100)
  config = srt_common.classifier_config_for(preset, overrides, args.set)
  if config.model != 'vit':
    checks.fail('config.model', config.model, "'vit' (the segmentation probe uses the ViT backbone)")
  with tempfile.TemporaryDirectory(prefix='srt_vit_') as tmp:  # kept until the distillation has reloaded it
    workdir = args.workdir[0] if args.workdir else (tmp if args.distill else None)
    backbone = srt_common.train_backbone(config, workdir)
    student, distill_info = (distill_student(args.quick, workdir, args.distill_steps) if args.distill
                             else (None, None))
  model = backbone.model
  params = backbone.variables
  x_train = backbone.train_set.images[:n_train]
  x_test = backbone.test_set.images[:n_test]
  x_val = backbone.test_set.images[n_test:n_test + n_val]   # disjoint from the test digits: they choose d
  if len(x_val) < n_val:
    checks.fail('--n-val', n_val, f'at most {len(backbone.test_set) - n_test} (the test split holds '
                                  f'{len(backbone.test_set)} digits, --n-test takes {n_test})')
  size = x_test.shape[1:3]
  gt_train = (x_train[..., 0] > THRESHOLD).reshape(-1)
  gt_test = x_test[..., 0] > THRESHOLD
  gt_val = x_val[..., 0] > THRESHOLD

  specs = method_specs(model.patch_size, ds, args.scales, args.stride_divs, strided_srt)
  runs = [(spec, params, spec['name']) for spec in specs]
  if student is not None:
    by_name = {spec['name']: spec for spec in specs}
    for name in ('nearest', 'bilinear'):
      runs.append((by_name[name], student, f'distilled student: {name}'))
    d_spec = method_specs(model.patch_size, [distill_info['d']], [], [], [])[-1]
    runs.append((d_spec, student, f'distilled student: {d_spec["name"]}'))
  load_before = os.getloadavg()
  t_cmp = time.time()
  # Stage 1, per method: the probe on the training digits (features discarded after the fit).
  fns, probes, train_miou, val_miou = [], [], [], {}
  for spec, p, name in scaffold.progress(runs, 'probes'):
    fn = functools.partial(method_fn(spec, model, size), p)
    f_tr = srt_common.batched(fn, x_train, batch_size)
    f_tr = f_tr.reshape(-1, f_tr.shape[-1])
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    w = np.asarray(fit_logistic(jnp.asarray((f_tr - mu) / sd), jnp.asarray(gt_train, jnp.float32)))
    fns.append(fn)
    probes.append((w, mu, sd))
    train_miou.append(iou_scores(predict(w, (f_tr - mu) / sd), gt_train)['mIoU'])
    if spec['family'] == 'SRT' and p is params:   # the candidates for Appendix C's d, scored on the validation digits
      f_val = srt_common.batched(fn, x_val, batch_size)
      val_miou[name] = iou_scores(predict(w, (f_val.reshape(-1, f_val.shape[-1]) - mu) / sd),
                                  gt_val.reshape(-1))['mIoU']
  # Stage 2: the test digits, every method timed on every batch, interleaved.
  preds_all = np.zeros((len(runs),) + gt_test.shape, bool)

  def consume(i, start, f):
    w, mu, sd = probes[i]
    preds_all[i, start:start + len(f)] = predict(w, (f.reshape(-1, f.shape[-1]) - mu) / sd).reshape(
        (len(f),) + gt_test.shape[1:])
  seconds = interleaved_timing(fns, x_test, batch_size, consume)
  rows, preds, counts = [], {}, []
  for (spec, _, name), pred_te, tr, sec in zip(runs, preds_all, train_miou, seconds):
    cnt = iou_counts(pred_te, gt_test)
    counts.append(cnt)
    per_image = (cnt[:, 0] / np.maximum(cnt[:, 1], 1) + cnt[:, 2] / np.maximum(cnt[:, 3], 1)) / 2
    rows.append({'features': name, 'family': spec['family'], 'forwards': spec['forwards'],
                 'tokens': (spec['scale'] * size[0] // spec['stride']) * (spec['scale'] * size[1] // spec['stride']),
                 **iou_scores(pred_te, gt_test), 'train mIoU': tr, 's/img': sec,
                 'per-image counts (fg inter, fg union, bg inter, bg union)': cnt.tolist(),
                 'per-image mIoU': per_image.round(5).tolist()})
    preds[name] = pred_te
  cmp_seconds = time.time() - t_cmp
  load_after = os.getloadavg()
  counts = np.stack(counts)
  ci = row_intervals(counts, resamples=n_boot)
  for k, r in enumerate(rows):
    r['mIoU lo'], r['mIoU hi'] = float(ci.low[k]), float(ci.high[k])
    r['mIoU [95%]'] = f'{r["mIoU"]:.4f} [{r["mIoU lo"]:.4f}, {r["mIoU hi"]:.4f}]'
    r['val mIoU'] = val_miou.get(r['features'], '')
  with open(os.path.join(out, 'rows.json'), 'w') as f:
    json.dump(rows, f)
  teacher = [r for r in rows if not r['features'].startswith('distilled')]
  verdicts, chosen, verdict_lines = judge(teacher, counts[:len(teacher)], val_miou,
                                          [f'SRT d={d}' for d in (1, 2, 3)], args.quick, resamples=n_boot)
  miou_vs_cost_figure(teacher, out)
  row = {r['features']: r for r in rows}

  # Figures.
  fig, ax = plt.subplots(figsize=(5, 3.5))
  srt_rows = [r for r in rows if r['family'] == 'SRT' and not r['features'].startswith('distilled')]
  distilled = [r for r in rows if r['features'].startswith('distilled')]
  ax.plot([0] + ds, [row['nearest']['mIoU']] + [r['mIoU'] for r in srt_rows], 'o-', label='SRT (d=0: nearest)')
  ax.axhline(row['bilinear']['mIoU'], color='C1', ls='--', label='bilinear')
  if distilled:
    ax.axhline(distilled[0]['mIoU'], color='C2', ls=':', label='distilled student, single pass')
  ax.set_xlabel('d')
  ax.set_ylabel('test mIoU (linear probe)')
  ax.set_title('MNIST foreground probe on ViT tokens (patch 4)')
  ax.legend()
  fig.tight_layout()
  scaffold.save_figure(fig, out, 'miou_vs_d')

  show = ['nearest', 'bilinear'] + [f'SRT d={d}' for d in ds]
  k = min(4, n_test)
  fig, axes = plt.subplots(k, 2 + len(show), figsize=(1.6 * (2 + len(show)), 1.7 * k), squeeze=False)
  for i in range(k):
    panels = [('image', x_test[i, ..., 0]), ('ground truth', gt_test[i])] + [(s, preds[s][i]) for s in show]
    for j, (title, img) in enumerate(panels):
      axes[i, j].imshow(img, cmap='gray', interpolation='nearest')
      axes[i, j].set_xticks([])
      axes[i, j].set_yticks([])
      if i == 0:
        axes[i, j].set_title(title, fontsize=8)
  fig.tight_layout()
  scaffold.save_figure(fig, out, 'examples', dpi=110)

  claim = verdicts[0].verdict
  cpu = bench_common.cpu_model()
  md = [
      f'Backbone: ViT `configs/srt_classifier.py{":" + preset if preset else ""}` (patch {config.vit.patch_size}, '
      f'width {config.vit.width}, depth {config.vit.depth}, {config.num_steps} steps), test accuracy '
      f'{backbone.test_accuracy:.4f}. Probe: logistic regression on {n_train} training digits '
      f'({n_train * 784} pixels), evaluated on {n_test} test digits; SRT\'s d chosen on {n_val} other test-split '
      f'digits (validation). Ground truth: pixel > {THRESHOLD}. '
      f'Wall time {time.time() - t0:.0f} s, of which the comparison (features, probes) {cmp_seconds:.0f} s.', '',
      f'Cost: seconds per image (`s/img`) is the median over the test batches of one jitted call on '
      f'{batch_size} images (after a warm-up call; `block_until_ready`), measured in this run for every method '
      f'with the same batch size; {cpu}, {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before and '
      f'{load_after[0]:.1f} after. Interval: 95%, `srjax.stats.compare` on each digit\'s linearised '
      f'contribution to the pooled mIoU (a bootstrap over the {n_test} test digits, {n_boot} resamples; per-image '
      f'counts are in rows.json). `val mIoU`: on the validation digits (the SRT rows, which it ranks). '
      f'`forwards` is the number of ViT passes per image, `tokens` the patch tokens of each.', '',
      scaffold.markdown_table(rows, ['features', 'forwards', 'tokens', 'mIoU [95%]', 'IoU fg', 'IoU bg',
                                     'train mIoU', 'val mIoU', 's/img']),
      '',
      '**Claims** (paired differences of test mIoU with 95% intervals over the test digits; Holm across the '
      f'{len(verdicts)} claims below):', '', *verdict_lines, '',
      scaffold.verdict_table(verdicts), '',
      f'Bilinear vs plain nearest (descriptive): {row["bilinear"]["mIoU"]:.4f} vs {row["nearest"]["mIoU"]:.4f}.', '']
  figures = ['miou_vs_cost.png', 'miou_vs_d.png', 'examples.png']
  tail = [f'![{f[:-4]}]({f})\n' for f in figures]
  if distilled:
    dd = distill_info['d']
    teacher_srt = {r['features']: r['mIoU'] for r in srt_rows}.get(f'SRT d={dd}')
    teacher_srt_txt = f'{teacher_srt:.4f}' if teacher_srt is not None else 'not computed'
    md += [
        f'Self-distillation (Eq. 6, `train/srt_distill.py`, {distill_info}): the student\'s single pass '
        f'(nearest) scores mIoU {distilled[0]["mIoU"]:.4f}, the teacher\'s single pass {row["nearest"]["mIoU"]:.4f}, '
        f'the teacher\'s SRT d={dd} (the distillation target) {teacher_srt_txt}.', '']
  path = scaffold.write_results(out, 'SRT features for a dense task: MNIST foreground segmentation by a linear probe',
                                ['\n'.join(md + tail)], module='eval.srt_segmentation', argv=argv, quick=args.quick,
                                verdicts=verdicts, figures=figures, seconds=time.time() - t0)
  scaffold.finish(path, f'SRT beats interpolation (Appendix C, {chosen} chosen on validation): {claim}; '
                        f'{sr_stats.count(verdicts)}')
  return {'rows': rows, 'test_accuracy': backbone.test_accuracy, 'verdicts': verdicts, 'claim': claim,
          'chosen': chosen, 'val_miou': val_miou, 'comparison_seconds': cmp_seconds}


if __name__ == '__main__':
  main()
