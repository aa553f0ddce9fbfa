"""The verdicts: per-example scores of each arm, the gradient-masking checks, and the claims through `srjax.stats`."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from eval.robustness.measure import attack_grid, check_eps, row_name
from eval.robustness.settings import BAND_EDGES, MASKED, NEAR_ZERO, Settings
from srjax import stats


def bands(snr_db: np.ndarray) -> np.ndarray:
  """Band index per example: 0 (< 0 dB), 1 ([0, 10) dB), 2 (>= 10 dB)."""
  return np.searchsorted(np.asarray(BAND_EDGES), np.asarray(snr_db, np.float64), side='right')


def mean_of(values: Sequence[float], mask: np.ndarray | None = None) -> float:
  v = np.asarray(values, np.float64)
  if mask is not None:
    v = v[..., np.asarray(mask, bool)[:v.shape[-1]]]
  return float(v.mean()) if v.size else float('nan')


def stack_rows(rows: Sequence[dict[str, dict[str, Any]]], name: str, field: str = 'correct') -> np.ndarray:
  """[S, N] float64: row `name`'s per-example `field` of each seed's model."""
  return np.asarray([r[name][field] for r in rows], np.float64)


def mean_rows(rows, names: Sequence[str]) -> np.ndarray:
  """[S, N]: the per-example mean of several rows (an empty list: [S, 0])."""
  if not names:
    return np.zeros((len(rows), 0))
  return np.mean([stack_rows(rows, n) for n in names], axis=0)


def arm_scores(rows: Sequence[dict[str, dict[str, Any]]], settings: Settings) -> dict[str, np.ndarray]:
  """The per-example quantities of one arm, each [S seeds, N examples] (the claims compare these).

  clean, noise (mean over the noise levels): the whole test split; robust_l2, robust_linf (mean over the regular
  eps grid, the large eps excluded): the attack subset; stability, stability_tunnel (relative L2 change), abc
  (score) and abc_correct (1 where the model's ABC label is right): the attribution subset.
  """
  return {'clean': stack_rows(rows, 'clean'),
          'noise': mean_rows(rows, [row_name(settings, 'noise', level=v) for v in settings.noise]),
          'robust_l2': mean_rows(rows, [row_name(settings, 'autoattack', 'L2', e) for e in settings.l2_eps]),
          'robust_linf': mean_rows(rows, [row_name(settings, 'autoattack', 'Linf', e) for e in settings.linf_eps]),
          'stability': stack_rows(rows, row_name(settings, 'stability'), 'relative_l2'),
          'stability_tunnel': stack_rows(rows, row_name(settings, 'stability_tunnel'), 'relative_l2'),
          'abc': stack_rows(rows, row_name(settings, 'abc'), 'score'),
          'abc_correct': stack_rows(rows, row_name(settings, 'abc'), 'correct')}


CLAIMS = (
    # (quantity, claim about arm B against arm A, direction of mean(B) - mean(A) that supports it, attack norm)
    ('clean', 'lower clean accuracy (paper: 82.88% vs 87.20%)', -1, None),
    ('noise', 'more robust to Gaussian noise (mean accuracy over the intensities)', +1, None),
    ('robust_l2', 'more robust to AutoAttack L2 (mean robust accuracy over eps)', +1, 'L2'),
    ('robust_linf', 'more robust to AutoAttack Linf (mean robust accuracy over eps; not in the paper)', +1, 'Linf'),
    ('stability', 'more stable attributions (lower relative L2 change of IG)', -1, None),
    ('stability_tunnel', 'more stable attributions with the noise tunnel (lower relative L2 change)', -1, None),
    ('abc', 'higher ABC on correct predictions (paper: 0.599 vs 0.497)', +1, None),
)


def _paired_se(d: np.ndarray) -> float:
  """The standard error of the mean of d [S, N] (per-example differences), d's cells taken as independent."""
  return float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else 0.0


def rise_flags(eps: Sequence[float], acc: Sequence[np.ndarray], *, near_zero: float = NEAR_ZERO) -> list[str]:
  """Check (a): robust accuracy along an eps grid (ascending, the last one large).

  Args:
    eps: [E] ascending radii.
    acc: E arrays [S, N] of 0/1 robust correctness on the same examples.

  Returns:
    One sentence per failure: a rise from eps_k to eps_k+1 larger than 2 SE of the paired per-example
    difference, or a last robust accuracy above near_zero + 2 SE (binomial) at the largest eps.
  """
  flags = []
  for k in range(len(eps) - 1):
    d = np.asarray(acc[k + 1], np.float64) - np.asarray(acc[k], np.float64)
    rise, se = float(d.mean()), _paired_se(d)
    if rise > 0 and rise > 2 * se:
      flags.append(f'robust accuracy rises from eps {eps[k]:.4g} to {eps[k + 1]:.4g} by {rise:.3f} '
                   f'(> 2 SE = {2 * se:.3f})')
  if len(eps):
    last = np.asarray(acc[-1], np.float64)
    p = float(last.mean())
    se = float(np.sqrt(p * (1 - p) / last.size))
    if p > near_zero + 2 * se:
      flags.append(f'robust accuracy {p:.3f} at the large eps {eps[-1]:.4g} is not about 0 '
                   f'(> {near_zero:g} + 2 SE = {near_zero + 2 * se:.3f})')
  return flags


def blackbox_flags(white: np.ndarray, black: dict[str, np.ndarray], eps: float) -> list[str]:
  """Check (b): no black-box attack (name -> [S, N] 0/1 robust correctness) beats the white-box one [S, N] on
  the same examples by more than 2 SE of the paired per-example difference."""
  flags = []
  for name, b in black.items():
    d = np.asarray(b, np.float64) - np.asarray(white, np.float64)
    gap, se = float(d.mean()), _paired_se(d)
    if gap < 0 and -gap > 2 * se:
      flags.append(f'{name} at eps {eps:.4g} leaves robust accuracy {float(np.mean(b)):.3f}, below the white-box '
                   f'{float(np.mean(white)):.3f} by more than 2 SE ({2 * se:.3f})')
  return flags


def masking_checks(rows: Sequence[dict[str, dict[str, Any]]], settings: Settings) -> dict[str, list[str]]:
  """{norm: failures of checks (a) and (b)} of one arm, its seeds pooled (the rows its models measured)."""
  out = {}
  for norm in ('L2', 'Linf'):
    grid = attack_grid(settings, norm)
    if not grid:
      continue
    flags = rise_flags(grid, [stack_rows(rows, row_name(settings, 'autoattack', norm, e)) for e in grid])
    e = check_eps(settings, norm)
    black = {}
    for what, label in (('square', 'Square'), ('transfer', 'transfer from the other arm\'s ConvNeXt')):
      name = row_name(settings, what, norm, e)
      if all(name in r for r in rows):
        black[label] = stack_rows(rows, name)
    out[norm] = flags + blackbox_flags(stack_rows(rows, row_name(settings, 'autoattack', norm, e)), black, e)
  return out


def verdicts(a: dict[str, np.ndarray], b: dict[str, np.ndarray], *, masked_a: dict[str, list[str]] | None = None,
             masked_b: dict[str, list[str]] | None = None, smoke: bool = False) -> list[stats.Verdict]:
  """The report's verdicts: one claim per quantity of `CLAIMS` that both arms measured, arm B against arm A.

  Args:
    a, b: `arm_scores` of arm A and arm B ({quantity: [S, N]}, the same N examples in both arms: paired).
    masked_a, masked_b: `masking_checks` of each arm ({norm: failures}).
    smoke: a --quick run (every verdict reads `not assessed (smoke run)`).

  Returns:
    `srjax.stats.Verdict`s, Holm-corrected across the claims; a `supported` robustness claim whose favoured arm
    failed a gradient-masking check for that norm reads "possibly masked".
  """
  claims, norms = [], []
  for quantity, text, direction, norm in CLAIMS:
    xa, xb = a[quantity], b[quantity]
    if quantity == 'abc':   # the examples every model of both arms classifies correctly
      keep = np.all(a['abc_correct'] > 0, axis=0) & np.all(b['abc_correct'] > 0, axis=0)
      xa, xb = xa[:, keep], xb[:, keep]
    if xa.shape[-1] < 2 or xb.shape[-1] < 2:
      continue   # not measured (no eps for this norm, or too few examples every model gets right)
    claims.append(stats.Claim(text, stats.compare(xa, xb, paired=True), direction))
    norms.append((norm, direction))
  out = stats.assess(claims, smoke=smoke)
  for k, (v, (norm, direction)) in enumerate(zip(out, norms)):
    favoured = (masked_b if direction > 0 else masked_a) or {}
    if norm is not None and v.verdict == stats.SUPPORTED and favoured.get(norm):
      out[k] = v._replace(verdict=MASKED)
  return out
