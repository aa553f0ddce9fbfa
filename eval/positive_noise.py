"""Positive noise (NoisyNN) on the embedded MNIST subset: Table 1, the Fig. 2 ablations, and a batch-composition
audit of the linear-transform noise.

    python -m eval.positive_noise --out results/positive_noise [--workdir DIR] [--seeds 0 1 2]
                                  [--set data.source=tfds --set data.tfds_name=cifar10 ...] [--quick]

What it trains (through `train.positive_noise`, the shared loop; a CIFAR-style ResNet-8 of width 8 and a 4-block
ViT of width 32 with 7x7 patches, 300 steps each at batch 64, on 4,000 training digits):
  * Table 1 / 2 style, every seed: vanilla, + Gaussian (std 1, Eq. 16), + linear transform (the authors' kind per
    architecture: ResNet Eq. 17 with alpha 0.4, ViT the optimal Q of Eq. 19; mixed across the batch),
    + salt-and-pepper (alpha 0.1, Eq. 18), and the same linear transform mixed within each sample (spatial
    positions / patch tokens) instead of across the batch. Noise on in training and at test, at the authors'
    layer (ResNet: input of the last block of the last stage; ViT: last block's attention input after norm1,
    class token untouched).
  * Fig. 2 ablations, seed 0: the linear-transform strength, and the injected layer (every block).
Cost: 41 training runs and their evaluation took 11.8 CPU-minutes in all (measured: 35 min of wall time on 2
cores shared with a load average of 13, so about 6-12 min on 2 quiet cores; ResNet runs dominate). Every run
lives in `<workdir>/<run>` (default `<out>/runs`) and every finished row in `<out>/rows.jsonl`: a killed run
resumes from its checkpoint and finished rows are not recomputed. `--quick` (tiny models, 15 steps, 200 test
digits, one seed, vanilla and the two linear transforms, no ablations) takes about 10 CPU-seconds per
architecture plus start-up; the test runs `--quick --archs vit`.

The audit: every model is evaluated on the 1,000 test digits in three ways, with its own test-time noise:
  * sorted: class-sorted batches of 100 read in order, as the authors' test loaders do (a sorted folder);
  * shuffled: the same batch size, a random order;
  * single: batch size 1 (the batch-axis transform is then the identity, since there is nothing to mix).
Noise mixed across the batch makes a prediction depend on the other test images of its batch; with sorted batches
they share its label. The per-sample variant cannot depend on the batch, so its three numbers agree. "Test-only"
rows add the authors' linear transform at test time to the vanilla models (the published ViT run did that).

Verdicts (`srjax.stats`): every difference to vanilla gets a 95% interval from a paired hierarchical bootstrap
over the training seeds and the test digits; the paper's claims (linear transform helps, Gaussian and
salt-and-pepper noise hurt) are judged with shuffled test batches, Holm-corrected. With 3 seeds and 1,000 digits
a difference of about 6 accuracy points is detected with 80% power (srjax.stats' docstring).

Writes results.md (tables and the verdicts), verdicts.json, table.png, ablation.png and audit.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import time
from typing import Any, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from jax import lax  # pylint: disable=wrong-import-position

from configs import common  # pylint: disable=wrong-import-position
from configs import positive_noise as pn_config  # pylint: disable=wrong-import-position
from eval import scaffold  # pylint: disable=wrong-import-position
from srjax import inject  # pylint: disable=wrong-import-position
from srjax import stats as sr_stats  # pylint: disable=wrong-import-position
from train import positive_noise  # pylint: disable=wrong-import-position
from train.classifier import load_data  # pylint: disable=wrong-import-position
from train.srt_classifier import build_model, variables_of  # pylint: disable=wrong-import-position

MODULE = 'eval.positive_noise'
ARCHS = ('resnet', 'vit')
PROTOCOLS = ('sorted', 'shuffled', 'single')
PAPER_TABLE1 = [  # ImageNet top-1 (%), ResNet-18 column of the paper's Table 1
    {'variant': 'vanilla', 'ResNet-18': 63.90}, {'variant': '+ Gaussian', 'ResNet-18': 62.35},
    {'variant': '+ linear transform', 'ResNet-18': 79.62}, {'variant': '+ salt-and-pepper', 'ResNet-18': 55.45},
]
VARIANT_LABELS = {'vanilla': 'vanilla', 'gaussian': '+ Gaussian', 'linear': '+ linear transform (batch)',
                  'salt_and_pepper': '+ salt-and-pepper', 'linear_sample': '+ linear transform (per sample)'}


def reference_linear(arch: str) -> tuple[str, float]:
  """The authors' linear-transform kind and strength: ResNet Eq. 17 with alpha 0.4, ViT Eq. 19's optimal Q."""
  return ('linear', 0.4) if arch == 'resnet' else ('optimal', 1.0)


@dataclasses.dataclass(frozen=True)
class Run:
  """One trained model: architecture, the noise it is trained and tested with, and the seed."""
  arch: str
  variant: str
  seed: int
  kind: str
  strength: float
  layer: str = 'default'
  axis: str = 'batch'

  @property
  def key(self) -> str:
    return f'{self.arch}-{self.kind}-{self.strength:g}-{self.layer}-{self.axis}-s{self.seed}'

  @property
  def noise(self) -> inject.Noise:
    return inject.Noise(self.kind, self.strength, self.layer, self.axis)


def table_runs(arch: str, seed: int, quick: bool = False) -> list[Run]:
  """The Table 1 runs of one architecture and seed (--quick keeps vanilla and the two linear transforms)."""
  kind, strength = reference_linear(arch)
  runs = [Run(arch, 'vanilla', seed, 'none', 0.0), Run(arch, 'gaussian', seed, 'gaussian', 1.0),
          Run(arch, 'linear', seed, kind, strength), Run(arch, 'salt_and_pepper', seed, 'salt_and_pepper', 0.1),
          Run(arch, 'linear_sample', seed, kind, strength, axis='sample')]
  return [r for r in runs if r.variant in ('vanilla', 'linear', 'linear_sample')] if quick else runs


def ablation_runs(arch: str, layers: Sequence[str], strengths: Sequence[float]) -> list[Run]:
  kind, _ = reference_linear(arch)
  runs = [Run(arch, 'strength', 0, kind, float(s)) for s in strengths]
  return runs + [Run(arch, 'layer', 0, kind, reference_linear(arch)[1], layer=layer) for layer in layers]


def base_config(arch: str, quick: bool, overrides: Sequence[str]):
  config = pn_config.get_config('vit' if arch == 'vit' else None)
  common.override(config, {'num_steps': 300, 'eval_every': 300, 'checkpoint_every': 150, 'vit.depth': 4})
  if quick:
    common.override(config, {'num_steps': 15, 'eval_every': 15, 'checkpoint_every': 15, 'batch_size': 16,
                             'log_every': 5, 'optim.warmup_steps': 2, 'resnet.width': 4, 'vit.width': 16,
                             'vit.depth': 2, 'vit.mlp_dim': 16, 'data.test_fraction': 0.04,
                             'eval_batch_size': 20})
  return common.override(config, list(overrides))


def run_config(run: Run, quick: bool, overrides: Sequence[str]):
  config = base_config(run.arch, quick, overrides)
  return common.override(config, {'seed': run.seed, 'noise.kind': run.kind, 'noise.strength': run.strength,
                                  'noise.layer': run.layer, 'noise.axis': run.axis, 'noise.train': True,
                                  'noise.test': True})


@functools.partial(jax.jit, static_argnames=('model', 'noise', 'batch_size'))
def predictions(model: Any, noise: inject.Noise, variables: Any, images: jax.Array, key: jax.Array,
                batch_size: int) -> jax.Array:
  """Predicted labels [N] of `images` [N, H, W, C] (N a multiple of batch_size), in consecutive batches of
  `batch_size` through the noise-injected model in inference mode; batch b draws its noise from fold_in(key, b)."""
  n = images.shape[0]
  nb = n // batch_size
  xb = images.reshape((nb, batch_size) + images.shape[1:])
  keys = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(nb))

  def one(args):
    x, k = args
    return jnp.argmax(inject.apply(model, variables, x, noise=noise, key=k), -1)

  preds = lax.map(one, (xb, keys), batch_size=min(nb, 100) if batch_size == 1 else None)
  return preds.reshape(n)


def audit(model: Any, noise: inject.Noise, variables: Any, images: np.ndarray, labels: np.ndarray,
          batch_size: int, seed: int) -> dict[str, float]:
  """Accuracy under the three batch protocols (sorted, shuffled, single) with the model's test-time noise."""
  n = len(labels) // batch_size * batch_size
  images, labels = images[:n], labels[:n]
  orders = {'sorted': np.argsort(labels, kind='stable'),
            'shuffled': np.random.default_rng([seed, 7]).permutation(n), 'single': np.arange(n)}
  key = jax.random.key(seed + 1000)
  out = {}
  for name, order in orders.items():
    bs = 1 if name == 'single' else batch_size
    pred = np.asarray(predictions(model, noise, variables, jnp.asarray(images[order]), key, bs))
    hit = np.empty(n, bool)
    hit[order] = pred == labels[order]                # per test digit, in the test set's own order
    out[f'acc_{name}'] = float(hit.mean())
    out[f'correct_{name}'] = scaffold.pack_bits(hit)
  out['n_test'] = int(n)
  return out


def train_and_audit(run: Run, quick: bool, overrides: Sequence[str], root: str) -> tuple[list[dict], float]:
  """Trains (or reloads) `run` and audits it; a vanilla run also gets a 'test-only' row with the authors' linear
  transform added at test time."""
  config = run_config(run, quick, overrides)
  start = time.perf_counter()
  build = lambda c: dataclasses.replace(positive_noise.build_task(c), evaluate=None)
  trained = scaffold.train_or_reload(build, config, os.path.join(root, run.key))
  seconds = time.perf_counter() - start
  test_set = load_data(config, 'test')
  model = build_model(config, test_set.num_classes, test_set.images.shape[1:])
  variables = variables_of(trained.params, trained.model_state)
  base = dataclasses.asdict(run)
  rows = [{**base, 'protocol_noise': 'train+test', 'train_seconds': seconds,
           **audit(model, run.noise, variables, test_set.images, test_set.labels, config.eval_batch_size,
                   run.seed)}]
  if run.variant == 'vanilla':
    kind, strength = reference_linear(run.arch)
    noise = inject.Noise(kind, strength)
    rows.append({**base, 'variant': 'test_only', 'kind': kind, 'strength': strength,
                 'protocol_noise': 'test only', 'train_seconds': 0.0,
                 **audit(model, noise, variables, test_set.images, test_set.labels, config.eval_batch_size,
                         run.seed)})
  return rows, seconds


def plan(quick: bool, seeds: Sequence[int], archs: Sequence[str] = ARCHS) -> list[Run]:
  """Every run to train: the table for each arch and seed, then (not --quick) the seed-0 ablations."""
  runs: list[Run] = []
  for arch in archs:
    for seed in seeds:
      runs += table_runs(arch, seed, quick)
  if not quick and 'resnet' in archs:
    runs += ablation_runs('resnet', ('stages_0_0', 'stages_1_0'), (0.1, 0.2, 0.3))
  if not quick and 'vit' in archs:
    runs += ablation_runs('vit', ('encoderblock_0', 'encoderblock_1', 'encoderblock_2'), (0.25, 0.5, 0.75))
  seen, unique = set(), []
  for r in runs:
    if r.key not in seen:
      seen.add(r.key)
      unique.append(r)
  return unique


# ------------------------------------------------------------------------------------------------- reporting


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  v = np.asarray(values, dtype=np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _pm(values: Sequence[float]) -> str:
  m, s = _mean_std(values)
  return f'{100 * m:.2f} ± {100 * s:.2f}'


def _archs(rows: list[dict]) -> list[str]:
  return [a for a in ARCHS if any(r['arch'] == a for r in rows)]


def _select(rows: list[dict], **match) -> list[dict]:
  return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def table_section(rows: list[dict]) -> tuple[str, dict]:
  """The Table-1-style comparison (mean ± std over seeds, accuracy in %) and the numbers the verdict uses."""
  out_rows, stats = [], {}
  for arch in _archs(rows):
    vanilla = {p: [r[f'acc_{p}'] for r in _select(rows, arch=arch, variant='vanilla')] for p in PROTOCOLS}
    for variant in ('vanilla', 'gaussian', 'linear', 'salt_and_pepper', 'linear_sample', 'test_only'):
      sel = _select(rows, arch=arch, variant=variant)
      if not sel:
        continue
      row = {'model': arch, 'variant': VARIANT_LABELS.get(variant, '+ linear transform at test only'),
             'kind': f'{sel[0]["kind"]} {sel[0]["strength"]:g}', 'seeds': len(sel)}
      for p in PROTOCOLS:
        acc = [r[f'acc_{p}'] for r in sel]
        delta = 100 * (np.mean(acc) - np.mean(vanilla[p])) if vanilla[p] else float('nan')
        row[p] = f'{_pm(acc)} ({delta:+.2f})'
        stats[(arch, variant, p)] = acc
      out_rows.append(row)
  text = ('## Table 1 / 2 style: accuracy (%) by noise, mean ± std over seeds (difference to vanilla)\n\n'
          'Columns are the three test protocols: class-sorted batches (the authors\' protocol), shuffled batches, '
          'batch size 1. Noise is on in training and at test except in the "test only" row (vanilla weights).\n\n'
          + scaffold.markdown_table(out_rows, ['model', 'variant', 'kind', 'seeds', *PROTOCOLS])
          + '\n\nThe paper, ImageNet, ResNet-18 (Table 1), for reference:\n\n'
          + scaffold.markdown_table(PAPER_TABLE1, ['variant', 'ResNet-18']))
  return text, stats


def _trend(table: list[dict], what: str) -> str:
  """A sentence per protocol: accuracy from the first to the last row of an ablation table (its own numbers)."""
  if len(table) < 2:
    return ''
  parts = [f'{p} {float(table[0][p]):.2f} -> {float(table[-1][p]):.2f}' for p in PROTOCOLS]
  claim = (' The paper (Sec. 4.2, Fig. 2) reports that the deeper the injected layer, the better; here that holds '
           'for a protocol only if its arrow goes up.' if what == 'layer' else '')
  return f'\n\nFrom the first to the last {what}: ' + '; '.join(parts) + '.' + claim


def ablation_section(rows: list[dict]) -> str:
  parts = ['## Fig. 2 style ablations (seed 0, noise in training and at test), accuracy (%)']
  for arch in _archs(rows):
    kind, ref = reference_linear(arch)
    pts = [(0.0, _select(rows, arch=arch, variant='vanilla', seed=0))]
    pts += [(r['strength'], [r]) for r in _select(rows, arch=arch, variant='strength')]
    pts += [(ref, _select(rows, arch=arch, variant='linear', seed=0))]
    table = [{'strength': f'{s:g}', **{p: f'{100 * sel[0][f"acc_{p}"]:.2f}' for p in PROTOCOLS}}
             for s, sel in sorted(pts, key=lambda t: t[0]) if sel]
    parts.append(f'### {arch}: strength of `{kind}` at the default layer\n\n'
                 + scaffold.markdown_table(table, ['strength', *PROTOCOLS]) + _trend(table, 'strength'))
    lpts = [(r['layer'], r) for r in _select(rows, arch=arch, variant='layer')]
    default = _select(rows, arch=arch, variant='linear', seed=0)
    if default:
      lpts.append(('default (last)', default[0]))
    table = [{'layer': name, **{p: f'{100 * r[f"acc_{p}"]:.2f}' for p in PROTOCOLS}} for name, r in lpts]
    parts.append(f'### {arch}: injected layer (`{kind}` {ref:g})\n\n'
                 + scaffold.markdown_table(table, ['layer', *PROTOCOLS]) + _trend(table, 'layer'))
  return '\n\n'.join(parts)


def audit_section(rows: list[dict]) -> str:
  table = []
  for r in rows:
    if r['kind'] not in ('linear', 'optimal') or r['strength'] == 0:
      continue
    table.append({'model': r['arch'], 'run': r['variant'], 'seed': r['seed'], 'noise': f'{r["kind"]} {r["strength"]:g}',
                  'layer': r['layer'], 'axis': r['axis'], 'noise at': r['protocol_noise'],
                  **{p: f'{100 * r[f"acc_{p}"]:.2f}' for p in PROTOCOLS},
                  'sorted - shuffled': f'{100 * (r["acc_sorted"] - r["acc_shuffled"]):+.2f}'})
  return ('## The audit: every linear-transform model under the three batch protocols, accuracy (%)\n\n'
          + scaffold.markdown_table(table, ['model', 'run', 'seed', 'noise', 'layer', 'axis', 'noise at',
                                            *PROTOCOLS, 'sorted - shuffled']))


ROW_VERSION = 'v2'   # v2 rows carry each test digit's correctness under every protocol
CLAIMS = (('linear', 1, 'linear-transform noise improves accuracy'),
          ('gaussian', -1, 'Gaussian noise is harmful'),
          ('salt_and_pepper', -1, 'salt-and-pepper noise is harmful'))


def correctness(rows: list[dict], arch: str, variant: str, protocol: str) -> np.ndarray | None:
  """[S, N] per seed and test digit: correct under `protocol` (None when the variant was not run)."""
  sel = sorted(_select(rows, arch=arch, variant=variant), key=lambda r: r['seed'])
  sel = [r for r in sel if f'correct_{protocol}' in r]
  return np.stack([scaffold.unpack_bits(r[f'correct_{protocol}']) for r in sel]).astype(np.float64) if sel else None


def verdict_section(rows: list[dict], archs: Sequence[str], quick: bool = False) -> tuple[str, list]:
  """Differences to vanilla (accuracy points, 95% interval) for every variant and protocol, and the paper's
  claims judged with shuffled test batches, through `srjax.stats` (paired hierarchical bootstrap over the
  training seeds and the test digits; Holm over the claims).

  Returns:
    (Markdown, the claims' `srjax.stats.Verdict`s).
  """
  table, claims, notes = [], [], []
  for arch in archs:
    for variant in ('gaussian', 'salt_and_pepper', 'linear', 'linear_sample', 'test_only'):
      row = {'model': arch, 'variant': VARIANT_LABELS.get(variant, '+ linear transform at test only')}
      for protocol in PROTOCOLS:
        a, b = correctness(rows, arch, 'vanilla', protocol), correctness(rows, arch, variant, protocol)
        if a is None or b is None:
          continue
        c = sr_stats.compare(a, b)
        row[protocol] = f'{100 * c.effect:+.2f} [{100 * c.low:+.2f}, {100 * c.high:+.2f}]'
        if protocol == 'shuffled':
          for v, direction, text in CLAIMS:
            if v == variant:
              claims.append(sr_stats.Claim(f'{arch}: {text} (shuffled test batches)', c, direction=direction))
        if protocol == 'sorted' and variant in ('linear', 'test_only') and c.low > 0:
          notes.append(f'- **{arch}**, {row["variant"]}: with class-sorted batches (the authors\' protocol) the '
                       f'difference is {row["sorted"]} points; the same models with shuffled batches are in the '
                       'shuffled column: a gain that needs same-class batches comes from batch composition.')
      if len(row) > 2:
        table.append(row)
  verdicts = sr_stats.assess(claims, smoke=quick)
  text = ('## Verdict (computed from the numbers below)\n\nDifference to vanilla in accuracy points with its 95% '
          'interval (paired hierarchical bootstrap over training seeds and test digits, `srjax.stats`):\n\n'
          + scaffold.markdown_table(table, ['model', 'variant', *PROTOCOLS]) + '\n\n'
          'The paper\'s claims, with shuffled test batches (a prediction cannot borrow from same-class neighbours), '
          'Holm-corrected:\n\n' + scaffold.verdict_table(verdicts) + ('\n\n' + '\n'.join(notes) if notes else ''))
  return text, verdicts


# --------------------------------------------------------------------------------------------------- figures


def figure_table(stats: dict, out: str) -> str:
  archs = [a for a in ARCHS if any(k[0] == a for k in stats)]
  fig, axes = plt.subplots(1, len(archs), figsize=(6 * len(archs), 3.8), squeeze=False)
  variants = ('vanilla', 'gaussian', 'linear', 'salt_and_pepper', 'linear_sample', 'test_only')
  for ax, arch in zip(axes[0], archs):
    xs = np.arange(len(variants))
    for j, p in enumerate(PROTOCOLS):
      means = [100 * np.mean(stats.get((arch, v, p), [np.nan])) for v in variants]
      errs = [100 * (np.std(stats[(arch, v, p)], ddof=1) if len(stats.get((arch, v, p), [])) > 1 else 0)
              for v in variants]
      ax.bar(xs + (j - 1) * 0.27, means, 0.27, yerr=errs, label=p, capsize=2)
    ax.set_xticks(xs)
    ax.set_xticklabels(['vanilla', 'Gauss', 'LT batch', 'S&P', 'LT sample', 'LT test-only'], rotation=20)
    ax.set_ylabel('test accuracy (%)')
    ax.set_title(f'{arch}: noise kinds (mean ± std over seeds)')
    ax.legend(title='test batches', fontsize=8)
  return scaffold.save_figure(fig, out, 'table')


def figure_ablation(rows: list[dict], out: str) -> str:
  archs = _archs(rows)
  fig, axes = plt.subplots(2, len(archs), figsize=(6 * len(archs), 7), squeeze=False)
  for c, arch in enumerate(archs):
    kind, ref = reference_linear(arch)
    pts = [(0.0, r) for r in _select(rows, arch=arch, variant='vanilla', seed=0)]
    pts += [(r['strength'], r) for r in _select(rows, arch=arch, variant='strength')]
    pts += [(ref, r) for r in _select(rows, arch=arch, variant='linear', seed=0)]
    pts.sort(key=lambda t: t[0])
    for p in PROTOCOLS:
      axes[0, c].plot([s for s, _ in pts], [100 * r[f'acc_{p}'] for _, r in pts], 'o-', label=p)
    axes[0, c].set_xlabel(f'{kind} strength')
    axes[0, c].set_ylabel('test accuracy (%)')
    axes[0, c].set_title(f'{arch}: strength (default layer)')
    axes[0, c].legend(title='test batches', fontsize=8)
    lpts = [(r['layer'], r) for r in _select(rows, arch=arch, variant='layer')]
    lpts += [('last', r) for r in _select(rows, arch=arch, variant='linear', seed=0)]
    for p in PROTOCOLS:
      axes[1, c].plot(range(len(lpts)), [100 * r[f'acc_{p}'] for _, r in lpts], 'o-', label=p)
    axes[1, c].set_xticks(range(len(lpts)))
    axes[1, c].set_xticklabels([n for n, _ in lpts], rotation=15, fontsize=8)
    axes[1, c].set_ylabel('test accuracy (%)')
    axes[1, c].set_title(f'{arch}: injected layer ({kind} {ref:g})')
    axes[1, c].legend(title='test batches', fontsize=8)
  fig.tight_layout()
  return scaffold.save_figure(fig, out, 'ablation')


def figure_audit(rows: list[dict], out: str) -> str:
  sel = [r for r in rows if r['kind'] in ('linear', 'optimal') and r['strength'] > 0]
  fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(sel) + 2), 4))
  xs = np.arange(len(sel))
  for j, p in enumerate(PROTOCOLS):
    ax.bar(xs + (j - 1) * 0.27, [100 * r[f'acc_{p}'] for r in sel], 0.27, label=p)
  ax.set_xticks(xs)
  ax.set_xticklabels([f'{r["arch"]} {r["variant"]} {r["axis"]} s{r["seed"]}'
                      + ('' if r['variant'] not in ('strength', 'layer') else
                         f' {r["strength"]:g}' if r['variant'] == 'strength' else f' {r["layer"]}')
                      for r in sel], rotation=60, ha='right', fontsize=7)
  ax.set_ylabel('test accuracy (%)')
  ax.set_title('audit: linear-transform models by test-batch composition')
  ax.legend(title='test batches', fontsize=8)
  return scaffold.save_figure(fig, out, 'audit')


def main(argv: Sequence[str] | None = None) -> str:
  """Runs the experiment; returns the path of results.md."""
  def add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--seeds', type=int, nargs='+', default=None, help='Table 1 seeds (default 0 1 2)')
    parser.add_argument('--archs', nargs='+', default=list(ARCHS), choices=ARCHS, help='architectures')
  args = scaffold.parse_args(__doc__.split('\n\n')[0], argv, default_out='results/positive_noise',
                             add_arguments=add, prog=f'python -m {MODULE}')
  if len(args.workdir) > 1:
    raise SystemExit('error: --workdir: got several; accepted: one folder that holds the runs')
  out = scaffold.prepare_out(args.out)
  root = args.workdir[0] if args.workdir else os.path.join(out, 'runs')
  seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
  store = scaffold.RowStore(os.path.join(out, 'rows.jsonl'))
  runs = plan(args.quick, seeds, args.archs)
  for run in scaffold.progress(runs, desc='positive-noise runs'):
    if f'{run.key}/{ROW_VERSION}' in store:
      continue
    rows, _ = train_and_audit(run, args.quick, args.set, root)
    store.add(f'{run.key}/{ROW_VERSION}', {'rows': rows})
  rows = [r for key in [run.key for run in runs] for r in store.get(f'{key}/{ROW_VERSION}')['rows']]
  table_text, stats = table_section(rows)
  figures = [figure_table(stats, out), figure_ablation(rows, out), figure_audit(rows, out)]
  setup = ('## Setup\n\n'
           f'Data: `{base_config("resnet", args.quick, args.set).data.source}` '
           f'(test split audited in batches of {base_config("resnet", args.quick, args.set).eval_batch_size}). '
           'ResNet: CIFAR-style ResNet-8; noise at the input of the last block of the last stage. ViT: noise at the '
           'last block\'s attention input after norm1, class token untouched. Linear transform: ResNet Eq. 17 '
           '(alpha 0.4, `x + alpha (roll(x, -1) - x)`), ViT Eq. 19 (optimal Q). Mixing across the batch unless '
           'the axis says "sample". Training batches are shuffled. Seeds: ' + ', '.join(map(str, seeds)) + '.')
  verdict_text, verdicts = verdict_section(rows, args.archs, args.quick)
  sections = [setup, verdict_text, table_text, audit_section(rows), ablation_section(rows),
              '## Figures\n\n' + '\n'.join(f'![{f}]({f})' for f in figures)]
  path = scaffold.write_results(out, 'Positive noise: reproduction and batch-composition audit', sections,
                                module=MODULE, argv=argv, quick=args.quick, verdicts=verdicts, figures=figures,
                                seconds=sum(r['train_seconds'] for r in rows))
  return scaffold.finish(path, sr_stats.count(verdicts))


if __name__ == '__main__':
  main()
