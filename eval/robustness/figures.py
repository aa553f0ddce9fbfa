"""noise.png, robust.png, attribution.png."""
from __future__ import annotations


import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from eval import scaffold
from eval.robustness.claims import arm_scores, mean_of
from eval.robustness.measure import attack_grid, row_name
from eval.robustness.report import arm_label


def figures(out: str, results, arms, settings) -> list[str]:
  """noise.png, robust.png, attribution.png: each arm's mean over its seeds (thin lines: each seed)."""
  names = []
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for i, (arm, models) in enumerate(arms):
    for j, m in enumerate(models):
      r = results[m.key]
      curve = [mean_of(r['clean']['correct'])] + [mean_of(r[row_name(settings, 'noise', level=v)]['correct'])
                                                for v in settings.noise]
      ax.plot([0.0] + list(settings.noise), curve, '-', color=f'C{i}', lw=0.7, alpha=0.5,
              label=arm_label(arm, models) if j == 0 else None)
  ax.set_xlabel('Gaussian noise intensity (std)')
  ax.set_ylabel('accuracy')
  ax.legend(fontsize=8)
  fig.tight_layout()
  names.append(scaffold.save_figure(fig, out, 'noise'))

  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
  for ax, norm, scale in ((axes[0], 'L2', 1.0), (axes[1], 'Linf', 255.0)):
    grid = attack_grid(settings, norm)
    for i, (arm, models) in enumerate(arms):
      if not grid:
        continue
      acc = np.asarray([[mean_of(results[m.key][row_name(settings, 'autoattack', norm, e)]['correct']) for e in grid]
                        for m in models])
      ax.plot([e * scale for e in grid], acc.mean(0), 'o-', color=f'C{i}', label=arm_label(arm, models))
      for row in acc:
        ax.plot([e * scale for e in grid], row, '-', color=f'C{i}', lw=0.5, alpha=0.4)
    ax.set_xlabel(f'{norm} eps' + (' (x 1/255)' if norm == 'Linf' else ''))
    ax.set_title(f'AutoAttack {norm}')
  axes[0].set_ylabel('robust accuracy')
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  names.append(scaffold.save_figure(fig, out, 'robust'))

  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  width = 0.8 / len(arms)
  for i, (arm, models) in enumerate(arms):
    sc = arm_scores([results[m.key] for m in models], settings)
    correct = sc['abc_correct'] > 0
    offset = (i - (len(arms) - 1) / 2) * width
    axes[0].bar([offset, 1 + offset], [mean_of(sc['stability']), mean_of(sc['stability_tunnel'])], width,
                color=f'C{i}', label=arm_label(arm, models))
    axes[1].bar([offset, 1 + offset], [np.nan_to_num(mean_of(sc['abc'][correct])),
                                       np.nan_to_num(mean_of(sc['abc'][~correct]))], width, color=f'C{i}')
  axes[0].set_xticks([0, 1], ['IG', 'IG + noise tunnel'])
  axes[0].set_ylabel('relative L2 change of the attribution')
  axes[0].legend(fontsize=8)
  axes[1].set_xticks([0, 1], ['correct', 'incorrect'])
  axes[1].set_ylabel('ABC')
  axes[1].set_ylim(0, 1)
  fig.tight_layout()
  names.append(scaffold.save_figure(fig, out, 'attribution'))
  return names
