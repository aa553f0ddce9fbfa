"""results.md's sections."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from eval import scaffold
from eval.robustness.claims import CLAIMS, arm_scores, mean_of
from eval.robustness.measure import attack_grid, check_eps, row_name
from eval.robustness.settings import BAND_NAMES, MASKED, Model, PAPER


def arm_label(name: str, models: Sequence[Model]) -> str:
  kinds = sorted({m.kind for m in models})
  return f'arm {name} ({"/".join(kinds)}, {len(models)} seed{"s" if len(models) > 1 else ""})'


def settings_section(arms, settings, band_of) -> str:
  lines = ['## Settings', '', '| arm | model | workdir | kind | checkpoint step | EOT draws | attribution draws |',
           '|---|---|---|---|---|---|---|']
  for arm, models in arms:
    for m in models:
      eot = settings.eot if m.stochastic else 1
      draws = (settings.draws or m.draws) if m.stochastic else 1
      lines.append(f'| {arm} | {m.name} | {m.key} | {m.kind} | {m.step} | {eot} | {draws} |')
  counts = ', '.join(f'{n}: {int((band_of == i).sum())}' for i, n in enumerate(BAND_NAMES))
  lines += ['', f'Test spectrograms: {band_of.size} for clean and noise accuracy ({counts}); AutoAttack on the '
            f'first {settings.n_attack}; attribution metrics on the first {settings.n_attr}. AutoAttack: '
            f'{settings.steps} APGD/FAB iterations (the standard 100), Square {settings.queries} queries (the '
            f'standard 5,000), {settings.n_targets} targets, EOT {settings.eot} for a stochastic model; L2 eps '
            f'{list(attack_grid(settings, "L2"))}, Linf eps '
            f'{[round(e * 255, 3) for e in attack_grid(settings, "Linf")]}/255 (the last of each grid is the '
            f'large eps of the masking check). Gaussian noise std {list(settings.noise)} (clipped to [0, 1]). '
            f'Integrated gradients: {settings.ig_steps} {settings.ig_method} points, zero baseline, predicted class. '
            f'Stability: {settings.stability_samples} uniform perturbations of Linf radius '
            f'{settings.stability_radius}; noise tunnel {settings.tunnel_samples} copies, std '
            f'{settings.tunnel_stdev}. ABC: {settings.abc_samples} mutated inputs per example, '
            f'{settings.abc_fraction:.0%} of the features each. Seed {settings.seed}.']
  return '\n'.join(lines)


def band_table(results, arms, settings, band_of: np.ndarray) -> str:
  """A Markdown table: one row per (arm, band) with each quantity's mean over the arm's seeds and examples."""
  columns = ['arm', 'band', 'n', 'clean acc', 'noise acc (mean)', 'AA L2 acc (mean)', 'AA Linf acc (mean)',
             'attr. change', 'attr. change (tunnel)', 'ABC correct', 'ABC incorrect']
  rows = []
  for arm, models in arms:
    sc = arm_scores([results[m.key] for m in models], settings)
    correct = sc['abc_correct'] > 0
    for b, band_name in [(None, 'all')] + list(enumerate(BAND_NAMES)):
      mask = np.ones(band_of.size, bool) if b is None else band_of == b
      amask = np.broadcast_to(mask[:sc['abc'].shape[1]], sc['abc'].shape)
      rows.append({'arm': arm_label(arm, models), 'band': band_name, 'n': int(mask.sum()),
                   'clean acc': mean_of(sc['clean'], mask), 'noise acc (mean)': mean_of(sc['noise'], mask),
                   'AA L2 acc (mean)': mean_of(sc['robust_l2'], mask),
                   'AA Linf acc (mean)': mean_of(sc['robust_linf'], mask),
                   'attr. change': mean_of(sc['stability'], mask),
                   'attr. change (tunnel)': mean_of(sc['stability_tunnel'], mask),
                   'ABC correct': mean_of(sc['abc'][amask & correct]),
                   'ABC incorrect': mean_of(sc['abc'][amask & ~correct])})
  return scaffold.markdown_table(rows, columns)


def curves_section(results, arms, settings) -> str:
  cols = ['model', 'clean'] + [f'noise {v:g}' for v in settings.noise]
  rows = [{'model': f'{arm}: {m.name}', 'clean': mean_of(results[m.key]['clean']['correct']),
           **{f'noise {v:g}': mean_of(results[m.key][row_name(settings, 'noise', level=v)]['correct'])
              for v in settings.noise}}
          for arm, models in arms for m in models]
  text = '## Accuracy under Gaussian noise\n\n' + scaffold.markdown_table(rows, cols)
  l2, linf = attack_grid(settings, 'L2'), attack_grid(settings, 'Linf')
  cols = ['model'] + [f'L2 {e:g}' for e in l2] + [f'Linf {e * 255:g}/255' for e in linf]
  rows = [{'model': f'{arm}: {m.name}',
           **{f'L2 {e:g}': mean_of(results[m.key][row_name(settings, 'autoattack', 'L2', e)]['correct']) for e in l2},
           **{f'Linf {e * 255:g}/255': mean_of(results[m.key][row_name(settings, 'autoattack', 'Linf', e)]['correct'])
              for e in linf}}
          for arm, models in arms for m in models]
  return text + '\n\n## Robust accuracy under AutoAttack\n\n' + scaffold.markdown_table(rows, cols)


def autoattack_log_section(results, arms, settings) -> str:
  """Each AutoAttack run's log: robust accuracy after each attack (attacked points, seconds)."""
  lines = ['## AutoAttack logs', '', 'Robust accuracy after each attack, in the order run (attacked points, '
           'seconds); each attack runs on the points no earlier one fooled.', '',
           '| model | version | norm | eps | log |', '|---|---|---|---|---|']
  for arm, models in arms:
    for m in models:
      for norm in ('L2', 'Linf'):
        for e in attack_grid(settings, norm):
          row = results[m.key][row_name(settings, 'autoattack', norm, e)]
          log = ' → '.join(f'{name} {acc:.3f} ({n}, {sec:.1f} s)' for name, n, acc, sec in row['log'])
          lines.append(f'| {arm}: {m.name} | {row["version"]} | {norm} | {e:.4g} | {log} |')
  return '\n'.join(lines)


def masking_section(results, arms, settings, masked) -> str:
  lines = ['## Gradient-masking checks (Carlini et al. 2019)', '',
           '(a) robust accuracy never rises with eps (beyond 2 SE) and is about 0 at the large eps; (b) neither '
           'Square nor APGD-CE examples transferred from a deterministic model of the other arm beat the white-box '
           'AutoAttack (beyond 2 SE), at the largest regular eps. Seeds pooled per arm.', '',
           '| arm | norm | white-box | Square | transfer | result |', '|---|---|---|---|---|---|']
  for arm, models in arms:
    for norm, flags in masked[arm].items():
      e = check_eps(settings, norm)
      cell = lambda what: mean_of([mean_of(results[m.key][f'{what}-{norm}={e:g}']['correct']) for m in models
                                 if f'{what}-{norm}={e:g}' in results[m.key]])
      lines.append(f'| {arm_label(arm, models)} | {norm} | {cell("aa"):.3f} | {cell("square"):.3f} | '
                   f'{cell("transfer"):.3f} | {"; ".join(flags) if flags else "passed"} |')
  return '\n'.join(lines)


def verdict_section(v, arms, settings) -> str:
  (_, a), (_, b) = arms
  text = (f'## Verdicts: {arm_label("B", b)} against {arm_label("A", a)}\n\n'
          f'Effects are mean(arm B) - mean(arm A), over the same test examples (paired), both arms\' seeds '
          f'resampled; Holm over this report\'s {len(v)} claims (`srjax.stats`). "{MASKED}": the claim would be '
          'supported, but the favoured arm failed a gradient-masking check for that norm.\n\n')
  text += scaffold.verdict_table(v)
  missing = [c[1] for c in CLAIMS if c[1] not in {x.claim for x in v}]
  if missing:
    text += ('\n\nNot measured (no eps for that norm, or fewer than 2 attributed examples that every model gets '
             'right): ' + '; '.join(missing) + '.')
  paper = ', '.join(f'{k}: NSDE {x["nsde"]}, ConvNeXt {x["convnext"]}' for k, x in PAPER.items())
  return text + f'\n\nThe paper\'s numbers (its own data and models, not comparable in level): {paper}.'


def cost_section(results, arms) -> str:
  """Seconds per measurement as stored with each row (the first row of each kind includes its compile)."""
  models = [(arm, m) for arm, ms in arms for m in ms]
  names = list(dict.fromkeys(n for _, m in models for n in results[m.key]))
  cols = ['measurement'] + [f'{arm}: {m.name}' for arm, m in models]
  rows = [{'measurement': n, **{f'{arm}: {m.name}': float(results[m.key][n].get('seconds', float('nan')))
                                if n in results[m.key] else '' for arm, m in models}} for n in names]
  return (f'## Cost\n\nSeconds per row, compile included, load average {os.getloadavg()[0]:.1f} at the end of '
          'the run (rows reused from rows.jsonl keep the time of the run that computed them).\n\n'
          + scaffold.markdown_table(rows, cols))
