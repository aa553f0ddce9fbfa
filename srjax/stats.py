"""Verdicts you can trust: one set of statistics for every experiment of srjax and its evals.

Every comparison of two arms (for example a model trained with noise against one trained without, each trained
from several seeds and evaluated on the same test examples) goes through `compare`; every claim of a report goes
through `assess`, which corrects across the report's claims (Holm) and speaks one vocabulary:

    supported                  the claimed direction, separated from 0 after Holm's correction
    not separated              the interval cannot tell the arms apart (absence of evidence, not of an effect)
    contradicted               separated from 0, in the opposite direction (for a "no effect" claim: a difference)
    equivalent within ±m       a "no effect" claim, shown by TOST with the stated margin m
    not assessed (smoke run)   a --quick run: the numbers check the pipeline, not the paper

    a = np.stack([correct_per_example(m) for m in arm_a_models])     # [seeds, examples] scores (0/1 or real)
    b = np.stack([correct_per_example(m) for m in arm_b_models])
    c = srjax.stats.compare(a, b)                                     # mean(b) - mean(a), interval, p-value
    srjax.stats.assess([srjax.stats.Claim('b beats a', c, direction=+1)])[0].verdict

The design: seeds x examples, crossed. Each arm is an array [S, N]: S training seeds, N test examples, one score
per (seed, example) (correctness, a loss, a margin). The arms are *paired* when they score the same N examples in
the same order (the default when the shapes allow it). The effect is mean(b) - mean(a), both means over seeds and
examples. Its uncertainty comes from a hierarchical bootstrap (Efron & Tibshirani 1993, Ch. 6 and 8; Davison &
Hinkley 1997, Sec. 3.8): each replicate resamples the test examples with replacement (once, shared by both arms
when paired, so the examples' difficulty cancels), then each arm's seeds with replacement. Two small-sample
corrections keep the interval honest with 3-5 seeds: the resampled seed deviations are scaled by sqrt(S / (S - 1))
(the bootstrap's variance of a mean of S values is (S - 1) / S of the unbiased one), and the interval is
effect ± t(df) x se, with se the standard deviation of the replicates and df the Welch-Satterthwaite degrees of
freedom of its seed and example components (Satterthwaite 1946): with few seeds and a large seed-to-seed spread
the t quantile widens the interval, with many examples and little seed spread it tends to the normal one. The
p-value is the two-sided t tail of effect / se, so "the interval excludes 0" and "p < 1 - level" agree.
`percentile_interval` gives the plain percentile interval of the same replicates.

Holm's step-down procedure (Holm 1979) controls the family-wise error rate over a report's claims. A "no effect"
claim is an equivalence test (two one-sided tests, Schuirmann 1987): it is `equivalent within ±m` when the
(1 - 2 alpha) interval lies inside (-m, m).

What the default designs can detect (80% power at alpha = 0.05, two-sided; tests/test_stats.py simulates the
3-seed case): with 3 seeds per arm and 1,000 paired test examples at ~77% accuracy and a seed-to-seed sd of ~1.5
points, an effect of about 6.5 accuracy points (the t quantile with the few seed degrees of freedom is the
price of honest intervals); with 5 seeds, about 4 points; with one seed per arm and 1,000 examples scored by two
independently trained models, about 4.5 points. A TOST shows two equal arms equivalent with power >= 80% at a
margin of 6 points (3 seeds) or 5 points (5 seeds) in that design. Under the null each procedure separates the
arms at most alpha of the time (simulated with 1,000 experiments per design).

References:
  B. Efron and R. J. Tibshirani, An Introduction to the Bootstrap, Chapman & Hall 1993 (Ch. 6, 8, 12-13, 16).
  A. C. Davison and D. V. Hinkley, Bootstrap Methods and their Application, CUP 1997 (Sec. 3.8, hierarchical
    data).
  S. Holm, A simple sequentially rejective multiple test procedure, Scand. J. Statist. 6 (1979) 65-70.
  D. J. Schuirmann, A comparison of the two one-sided tests procedure and the power approach for assessing the
    equivalence of average bioavailability, J. Pharmacokinet. Biopharm. 15 (1987) 657-680.
  F. E. Satterthwaite, An approximate distribution of estimates of variance components, Biometrics Bull. 2
    (1946) 110-114.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Sequence

import numpy as np
from scipy import stats as _scipy_stats

from srjax import checks

LEVEL = 0.95
ALPHA = 1.0 - LEVEL
RESAMPLES = 2000
SUPPORTED = 'supported'
NOT_SEPARATED = 'not separated'
CONTRADICTED = 'contradicted'
SMOKE = 'not assessed (smoke run)'
SMOKE_BANNER = 'smoke run: the numbers check the pipeline, not the paper'


def equivalent(margin: float) -> str:
  """The verdict of a "no effect" claim shown equivalent by TOST: 'equivalent within ±<margin>'."""
  return f'equivalent within ±{margin:g}'


VERDICTS = (SUPPORTED, NOT_SEPARATED, CONTRADICTED, 'equivalent within ±m', SMOKE)


class Comparison(NamedTuple):
  """mean(b) - mean(a) (or mean(a) for one arm) with its hierarchical-bootstrap interval.

  Leading batch axes of the inputs carry through: every array field then has that batch shape.

  Attributes:
    effect: the point estimate.
    low, high: the two-sided `level` interval, effect -/+ t(df) x se.
    se: the standard deviation of the bootstrap replicates.
    df: Welch-Satterthwaite degrees of freedom (inf when the seed components vanish or S = 1 in both arms).
    p_value: two-sided p-value of effect / se against t(df).
    level: the interval's level.
    seeds: (S_a, S_b) (S_b = 0 for one arm).
    n: (N_a, N_b) examples (N_b = 0 for one arm).
    paired: whether the arms share the examples' resampling.
    replicates: [..., R] the bootstrap replicates of the effect.
  """
  effect: Any
  low: Any
  high: Any
  se: Any
  df: Any
  p_value: Any
  level: float
  seeds: tuple[int, int]
  n: tuple[int, int]
  paired: bool
  replicates: np.ndarray


def _arm(name: str, x: Any) -> np.ndarray:
  arr = np.asarray(x, np.float64)
  if arr.ndim == 0 or arr.shape[-1] == 0:
    checks.fail(name, x, 'an array [..., S, N] (or [N] for one seed) of per-example scores with N >= 1')
  if arr.ndim == 1:
    arr = arr[None]
  if arr.shape[-2] == 0:
    checks.fail(name, x, 'at least one seed (S >= 1) in an array [..., S, N]')
  if not np.all(np.isfinite(arr)):
    checks.fail(name, float(arr[~np.isfinite(arr)].flat[0]), 'finite scores')
  return arr


def example_counts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
  """[R, n] float64 counts of each of n examples in R resamples of size n drawn with replacement.

  The draw: `idx = rng.integers(0, n, (resamples, n))`, then the counts of each row (so a test can redo it).
  """
  idx = rng.integers(0, n, (resamples, n))
  flat = (idx + n * np.arange(resamples)[:, None]).ravel()
  return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def _arm_replicates(x: np.ndarray, w_examples: np.ndarray, w_seeds: np.ndarray) -> np.ndarray:
  """[..., R] resampled means of x [..., S, N]: the mean plus a seed-level and an example-level deviation.

  Seed level: the per-seed means (over the test examples) resampled by w_seeds [R, S], deviations scaled by
  sqrt(S / (S - 1)). Example level: the per-example means (over seeds) resampled by w_examples [R, N].
  """
  s, n = x.shape[-2:]
  centre = x.mean((-2, -1))[..., None]
  per_seed, per_example = x.mean(-1), x.mean(-2)                      # [..., S], [..., N]
  seed_dev = per_seed @ w_seeds.T / s - centre
  if s > 1:
    seed_dev = seed_dev * math.sqrt(s / (s - 1))
  return centre + seed_dev + (per_example @ w_examples.T / n - centre)


def hierarchical_bootstrap(a: Any, b: Any = None, *, paired: bool | None = None, resamples: int = RESAMPLES,
                           seed: int = 0) -> np.ndarray:
  """Bootstrap replicates of mean(b) - mean(a) (of mean(a) when b is None) over seeds, then examples.

  Each replicate draws the examples with replacement (the same draw for both arms when paired), then each arm's
  seeds with replacement, and scales each arm's seed deviations by sqrt(S / (S - 1)) (see the module doc).
  Replicate r uses, in this order, from `np.random.default_rng(seed)`: the example counts of arm a
  (`example_counts`), those of arm b when not paired, then the seed draws `rng.integers(0, S, (R, S))` of a and
  of b.

  Args:
    a: [..., S_a, N_a] scores (or [N_a]: one seed).
    b: [..., S_b, N_b] scores, or None.
    paired: share the example draw; None: paired when N_a == N_b.
    resamples: R >= 100.
    seed: the NumPy seed of the resampling.

  Returns:
    [..., R] float64 replicates.

  References:
    Efron & Tibshirani (1993), Ch. 6 (the bootstrap estimate of standard error) and Ch. 8 (structured data);
    Davison & Hinkley (1997), Sec. 3.8 (hierarchical data).
  """
  return _replicates(*_setup(a, b, paired, resamples, seed))


def _setup(a, b, paired, resamples, seed):
  checks.integer('resamples', resamples, 100)
  checks.integer('seed', seed, 0)
  a = _arm('a', a)
  b = None if b is None else _arm('b', b)
  if b is None:
    paired = False
  elif paired is None:
    paired = a.shape[-1] == b.shape[-1]
  elif paired and a.shape[-1] != b.shape[-1]:
    checks.fail('paired', paired, f'False when the arms have different numbers of examples ({a.shape[-1]} and '
                                  f'{b.shape[-1]})')
  return a, b, bool(paired), resamples, seed


def _seed_counts(rng, s, resamples):
  idx = rng.integers(0, s, (resamples, s))
  flat = (idx + s * np.arange(resamples)[:, None]).ravel()
  return np.bincount(flat, minlength=resamples * s).reshape(resamples, s).astype(np.float64)


def _replicates(a, b, paired, resamples, seed):
  rng = np.random.default_rng(seed)
  wa = example_counts(rng, a.shape[-1], resamples)
  wb = None if b is None else (wa if paired else example_counts(rng, b.shape[-1], resamples))
  sa = _seed_counts(rng, a.shape[-2], resamples)
  va = _arm_replicates(a, wa, sa)
  if b is None:
    return va
  sb = _seed_counts(rng, b.shape[-2], resamples)
  return _arm_replicates(b, wb, sb) - va


def cell_variance(x: np.ndarray) -> np.ndarray:
  """The two-way residual mean square of x [..., S, N] (S >= 2): the (seed x example) variance sigma_e^2.

  sum (x_ji - xbar_j. - xbar_.i + xbar)^2 / ((S - 1)(N - 1)), unbiased for an additive seed + example + cell
  model; 0 when N = 1.
  """
  s, n = x.shape[-2:]
  resid = x - x.mean(-1, keepdims=True) - x.mean(-2, keepdims=True) + x.mean((-2, -1), keepdims=True)
  return (resid ** 2).sum((-2, -1)) / max((s - 1) * (n - 1), 1)


def _components(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
  """(the two levels' double count sigma_e^2 / (S N), the seed level's variance s^2 / S of the seed means,
  its df S - 1); zeros for one seed.

  The seed level's per-seed means and the example level's per-example means both carry the (seed x example)
  cell variance sigma_e^2 / (S N): the sum of the two levels counts it twice (Owen 2007, Sec. 3).
  """
  s, n = x.shape[-2:]
  if s < 2:
    zero = np.zeros(x.shape[:-2])
    return zero, zero, 0
  return cell_variance(x) / (s * n), x.mean(-1).var(-1, ddof=1) / s, s - 1


def _t_quantile(q: float, df: np.ndarray) -> np.ndarray:
  return np.where(np.isinf(df), _scipy_stats.norm.ppf(q), _scipy_stats.t.ppf(q, np.where(np.isinf(df), 1, df)))


def _t_sf(z: np.ndarray, df: np.ndarray) -> np.ndarray:
  return np.where(np.isinf(df), _scipy_stats.norm.sf(z), _scipy_stats.t.sf(z, np.where(np.isinf(df), 1, df)))


def compare(a: Any, b: Any = None, *, paired: bool | None = None, level: float = LEVEL,
            resamples: int = RESAMPLES, seed: int = 0) -> Comparison:
  """mean(b) - mean(a) with a hierarchical-bootstrap interval and p-value (mean(a) alone when b is None).

  Args:
    a: [..., S_a, N_a] per-example scores of arm a, one row per training seed ([N_a]: one seed). Leading axes
      are independent experiments (for example contrasts), resampled with the same draws.
    b: [..., S_b, N_b] scores of arm b, or None (a one-arm estimate: the effect is mean(a)).
    paired: whether both arms scored the same examples in the same order; None: when N_a == N_b.
    level: the interval's level in (0, 1).
    resamples: bootstrap replicates R (>= 100).
    seed: NumPy seed of the resampling (the same seed gives the same interval).

  Returns:
    `Comparison`; fields are floats for 2-D inputs, arrays of the batch shape otherwise.

  Raises:
    ValueError: empty or non-finite scores, level outside (0, 1), resamples < 100, paired with unequal N.

  References:
    Efron & Tibshirani (1993), Ch. 6 and 12-13 (bootstrap standard error, the standard and t intervals);
    Satterthwaite (1946) (the degrees of freedom of a sum of variance components).
  """
  checks.in_range('level', level, 0.0, 1.0, low_open=True, high_open=True)
  a, b, paired, resamples, seed = _setup(a, b, paired, resamples, seed)
  reps = _replicates(a, b, paired, resamples, seed)
  effect = a.mean((-2, -1)) if b is None else b.mean((-2, -1)) - a.mean((-2, -1))
  parts = [_components(a)] + ([] if b is None else [_components(b)])
  # The two levels both carry the (seed x example) cell variance: remove one count, but never more than the seed
  # level itself carried (with 2-3 seeds its estimate can fall below the cell share by chance; removing the full
  # share then ate the example level's variance too and left se = 0).
  var = np.maximum(reps.var(-1, ddof=1) - sum(np.minimum(d, v) for d, v, _ in parts), 0.0)
  se = np.sqrt(var)
  # Welch-Satterthwaite: seed components with S - 1 df each, the rest (examples) with N - 1.
  seed_var = sum(v for _, v, _ in parts)
  n_min = a.shape[-1] if b is None else min(a.shape[-1], b.shape[-1])
  example_var = np.maximum(var - seed_var, 0.0)
  denom = sum(v ** 2 / d for _, v, d in parts if d > 0) + example_var ** 2 / max(n_min - 1, 1)
  with np.errstate(divide='ignore', invalid='ignore'):
    df = np.where(denom > 0, np.maximum(var, seed_var) ** 2 / np.where(denom > 0, denom, 1), np.inf)
  df = np.where(df > 1e6, np.inf, np.maximum(df, 1.0))
  half = _t_quantile(0.5 + level / 2, df) * se
  with np.errstate(divide='ignore', invalid='ignore'):
    z = np.where(se > 0, np.abs(effect) / np.where(se > 0, se, 1), np.where(effect == 0, 0.0, np.inf))
  p = np.minimum(1.0, 2 * _t_sf(z, df))
  scalar = lambda v: float(v) if np.ndim(v) == 0 else np.asarray(v)
  return Comparison(effect=scalar(effect), low=scalar(effect - half), high=scalar(effect + half), se=scalar(se),
                    df=scalar(df), p_value=scalar(p), level=level, seeds=(a.shape[-2], 0 if b is None else b.shape[-2]),
                    n=(a.shape[-1], 0 if b is None else b.shape[-1]), paired=paired, replicates=reps)


def percentile_interval(replicates: Any, level: float = LEVEL) -> tuple[Any, Any]:
  """The percentile interval of bootstrap replicates [..., R]: their (1 - level)/2 and (1 + level)/2 quantiles
  (NumPy's default linear interpolation). Efron & Tibshirani (1993), Ch. 13."""
  checks.in_range('level', level, 0.0, 1.0, low_open=True, high_open=True)
  reps = np.asarray(replicates, np.float64)
  low, high = np.percentile(reps, [50 * (1 - level), 50 * (1 + level)], axis=-1)
  return low, high


def holm(p_values: Sequence[float]) -> np.ndarray:
  """Holm's step-down adjusted p-values (family-wise error control over one report's claims).

  With p_(1) <= ... <= p_(m) the sorted p-values, the adjusted p_(k) is max_{j <= k} min(1, (m - j + 1) p_(j));
  rejecting the claims whose adjusted p is below alpha keeps the family-wise error rate at most alpha.

  Args:
    p_values: [m] p-values in [0, 1].

  Returns:
    [m] adjusted p-values, in the input order.

  References:
    S. Holm (1979), Scand. J. Statist. 6, 65-70.
  """
  p = np.asarray(p_values, np.float64).reshape(-1)
  checks.all_in_range('p_values', p, 0.0, 1.0)
  m = p.size
  order = np.argsort(p, kind='stable')
  stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
  out = np.empty(m)
  out[order] = stepped
  return out


class Equivalence(NamedTuple):
  """TOST of |effect| < margin.

  Attributes:
    p_value: max of the two one-sided p-values (reject "not equivalent" when below alpha).
    low, high: the (1 - 2 alpha) interval (inside (-margin, margin) exactly when p_value < alpha).
    margin: the stated margin m > 0.
    equivalent: p_value < alpha.
  """
  p_value: Any
  low: Any
  high: Any
  margin: float
  equivalent: Any


def tost(comparison: Comparison, margin: float, *, alpha: float = ALPHA) -> Equivalence:
  """Two one-sided tests (Schuirmann 1987) of -margin < effect < margin on a `compare` result.

  Args:
    comparison: the `Comparison` of the two arms (its se and df are used).
    margin: the equivalence margin m > 0, in the effect's units; state it with the claim.
    alpha: the level of each one-sided test.

  Returns:
    `Equivalence`.

  References:
    D. J. Schuirmann (1987), J. Pharmacokinet. Biopharm. 15, 657-680.
  """
  checks.in_range('margin', margin, 0.0, low_open=True)
  checks.in_range('alpha', alpha, 0.0, 0.5, low_open=True, high_open=True)
  e, se, df = (np.asarray(v, np.float64) for v in (comparison.effect, comparison.se, comparison.df))
  with np.errstate(divide='ignore', invalid='ignore'):
    safe = np.where(se > 0, se, 1.0)
    z_low = np.where(se > 0, (e + margin) / safe, np.where(e > -margin, np.inf, -np.inf))
    z_high = np.where(se > 0, (margin - e) / safe, np.where(e < margin, np.inf, -np.inf))
  p = np.maximum(_t_sf(z_low, df), _t_sf(z_high, df))
  half = _t_quantile(1 - alpha, df) * se
  scalar = lambda v: float(v) if np.ndim(v) == 0 else np.asarray(v)
  return Equivalence(scalar(p), scalar(e - half), scalar(e + half), float(margin), scalar(p < alpha)
                     if np.ndim(p) else bool(p < alpha))


@dataclasses.dataclass(frozen=True)
class Claim:
  """One claim of a report and the comparison that tests it.

  Attributes:
    text: the claim, in the paper's words.
    comparison: its `Comparison` (the effect is signed: mean(b) - mean(a)).
    direction: +1 (the claim says effect > 0), -1 (effect < 0) or 0 (no effect: a TOST with `margin`).
    margin: the equivalence margin of a direction-0 claim, in the effect's units.
  """
  text: str
  comparison: Comparison
  direction: int = 1
  margin: float | None = None


class Verdict(NamedTuple):
  """A claim's verdict, with what a reader needs to judge it.

  Attributes:
    claim: the claim's text.
    verdict: one of `VERDICTS` (with the margin filled in for an equivalence).
    effect, low, high: the effect and its `level` interval.
    p_value: the claim's own p-value (two-sided test; TOST's for a no-effect claim).
    p_holm: Holm-adjusted over the report's claims.
    seeds: (S_a, S_b); n: (N_a, N_b).
    procedure: a one-line description of the test.
  """
  claim: str
  verdict: str
  effect: float
  low: float
  high: float
  p_value: float
  p_holm: float
  seeds: tuple[int, int]
  n: tuple[int, int]
  procedure: str

  def as_row(self) -> dict[str, Any]:
    """A JSON-serialisable dict (what eval reports store and `eval.report` gathers)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._asdict().items()}


def assess(claims: Sequence[Claim], *, alpha: float = ALPHA, smoke: bool = False) -> list[Verdict]:
  """The verdicts of one report's claims, Holm-corrected across them.

  A directional claim (direction +-1) is `supported` when its Holm-adjusted two-sided p-value is below alpha and
  the effect has the claimed sign, `contradicted` when it is below alpha with the other sign, else `not
  separated`. A no-effect claim (direction 0, margin m) is `equivalent within ±m` when its Holm-adjusted TOST
  p-value is below alpha, `contradicted` when the two-sided test separates the effect from 0 (unadjusted: the
  conservative side for a no-effect claim), else `not separated`. With smoke=True every verdict is `not assessed
  (smoke run)` (the numbers are still reported).

  Args:
    claims: the report's `Claim`s (scalar comparisons).
    alpha: the family-wise error rate.
    smoke: a --quick run.

  Returns:
    One `Verdict` per claim, in order.

  References:
    Holm (1979); Schuirmann (1987).
  """
  checks.in_range('alpha', alpha, 0.0, 0.5, low_open=True, high_open=True)
  ps, tosts = [], []
  for k, c in enumerate(claims):
    checks.one_of(f'claims[{k}].direction', c.direction, (-1, 0, 1))
    if np.ndim(c.comparison.effect):
      checks.fail(f'claims[{k}].comparison', c.comparison.effect, 'a scalar comparison (one experiment)')
    if c.direction == 0:
      if c.margin is None:
        checks.fail(f'claims[{k}].margin', None, 'a margin > 0 for a no-effect claim (direction 0)')
      t = tost(c.comparison, c.margin, alpha=alpha)
      tosts.append(t)
      ps.append(t.p_value)
    else:
      tosts.append(None)
      ps.append(c.comparison.p_value)
  adjusted = holm(ps) if ps else np.zeros(0)
  out = []
  for c, t, p, q in zip(claims, tosts, ps, adjusted):
    cmp = c.comparison
    if smoke:
      word = SMOKE
    elif c.direction == 0:
      word = equivalent(c.margin) if q < alpha else CONTRADICTED if cmp.p_value < alpha else NOT_SEPARATED
    elif q < alpha:
      word = SUPPORTED if np.sign(cmp.effect) == c.direction else CONTRADICTED
    else:
      word = NOT_SEPARATED
    kind = ('paired' if cmp.paired else 'unpaired') if cmp.seeds[1] else 'one-arm'
    test = (f'TOST ±{c.margin:g}' if c.direction == 0 else 'two-sided t on the bootstrap se')
    procedure = (f'{kind} hierarchical bootstrap (seeds, then examples; {len(cmp.replicates)} replicates), '
                 f'{test}, df {float(cmp.df):.3g}, Holm over {len(claims)} claim(s), alpha {alpha:g}')
    out.append(Verdict(c.text, word, float(cmp.effect), float(cmp.low), float(cmp.high), float(p), float(q),
                       tuple(cmp.seeds), tuple(cmp.n), procedure))
  return out


def count(verdicts: Sequence[Verdict]) -> str:
  """A headline: '2 supported, 1 not separated' (verdict words in `VERDICTS` order, then the rest)."""
  words = [v.verdict for v in verdicts]
  seen = sorted(set(words), key=lambda w: (next((k for k, x in enumerate(VERDICTS) if w.startswith(x[:10])), 9), w))
  return ', '.join(f'{words.count(w)} {w}' for w in seen) or 'no claims'
