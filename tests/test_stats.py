"""srjax.stats calibrated on simulated experiments (vectorised NumPy), and its pieces against closed forms.

The simulation: each arm is S training seeds x N test examples of 0/1 correctness. Example i has a difficulty
z_i ~ N(1.5, 1.5^2) on the logit scale (shared by both arms: they score the same examples), seed j an offset
u_j ~ N(0, sd_seed^2), and correct_ji ~ Bernoulli(sigmoid(z_i + u_j + shift)), with shift = 0 in arm a and the
effect in arm b. Accuracy is about 0.77; sd_seed 0.1 is a seed-to-seed spread of ~1.5 accuracy points.
"""
from __future__ import annotations

import numpy as np
import pytest

from srjax import stats

SIMS = 1000            # simulated experiments for each null


def simulate(sims, seeds, n, sd_seed, shift=0.0, seed=0):
  rng = np.random.default_rng(seed)
  z = rng.normal(1.5, 1.5, (sims, 1, n))

  def arm(offset):
    p = 1 / (1 + np.exp(-(z + rng.normal(0, sd_seed, (sims, seeds, 1)) + offset)))
    return (rng.uniform(size=p.shape) < p).astype(np.float64)
  return arm(0.0), arm(shift)


def bound(rate=0.05, sims=SIMS):
  """The largest false-positive rate consistent with `rate` over `sims` experiments (3 Monte Carlo sd)."""
  return rate + 3 * np.sqrt(rate * (1 - rate) / sims)


def separated(c):
  return (c.low > 0) | (c.high < 0)


@pytest.mark.parametrize('seeds,n,sd_seed', [(3, 1000, 0.1), (3, 1000, 0.0), (1, 1000, 0.0)])
def test_null_comparison_is_rarely_separated(seeds, n, sd_seed):
  a, b = simulate(SIMS, seeds, n, sd_seed, seed=seeds + 10 * int(sd_seed > 0))
  c = stats.compare(a, b, resamples=1000)
  rate = separated(c).mean()
  assert rate <= bound(), rate
  np.testing.assert_array_equal(separated(c), c.p_value < 0.05)      # interval and p-value agree


def test_power_for_the_stated_effect():
  """3 seeds per arm, 1,000 paired examples, seed sd ~1.5 points: a 6.5-point gain is found >= 80% of the time."""
  a, b = simulate(400, 3, 1000, 0.1, shift=0.5, seed=3)
  c = stats.compare(a, b, resamples=1000)
  assert 0.06 < np.mean(c.effect) < 0.07
  assert np.mean(c.low > 0) >= 0.8, np.mean(c.low > 0)


def test_holm_keeps_the_familywise_rate_over_four_null_claims():
  a, b = simulate(SIMS, 3, 400, 0.1, seed=7)
  c = stats.compare(a, b, resamples=1000)
  p = c.p_value.reshape(250, 4)                                        # 250 reports of 4 claims each
  adjusted = np.stack([stats.holm(row) for row in p])
  assert np.mean((adjusted < 0.05).any(1)) <= bound(sims=250)
  assert np.mean((p < 0.05).any(1)) > 0.1                              # uncorrected: well above 5%


def test_holm_matches_the_step_down_by_hand():
  p = [0.01, 0.04, 0.03, 0.2]
  # sorted 0.01, 0.03, 0.04, 0.2 -> 0.04, 0.09, 0.09 (running max of 0.08), 0.2
  np.testing.assert_allclose(stats.holm(p), [0.04, 0.09, 0.09, 0.2])
  with pytest.raises(ValueError, match='^p_values: got'):
    stats.holm([0.5, 1.5])


def test_tost_at_the_margin_rarely_claims_equivalence_and_finds_it_at_zero():
  margin = 0.06     # the stated margin of the 3-seed design
  # True effect exactly at the margin: about 5.0 points (logit shift 0.37 at ~77% accuracy); measure it.
  a, b = simulate(SIMS, 3, 1000, 0.1, shift=0.37, seed=11)
  c = stats.compare(a, b, resamples=1000)
  true_effect = np.mean(c.effect)
  eq = stats.tost(c, margin=true_effect)
  assert np.mean(eq.equivalent) <= bound(), np.mean(eq.equivalent)
  a, b = simulate(400, 3, 1000, 0.1, seed=12)
  eq = stats.tost(stats.compare(a, b, resamples=1000), margin=margin)
  assert np.mean(eq.equivalent) >= 0.8
  np.testing.assert_array_equal(eq.equivalent, (eq.low > -margin) & (eq.high < margin))


def test_percentile_interval_is_numpys_percentile_of_the_same_resamples():
  rng = np.random.default_rng(0)
  a = rng.uniform(size=(1, 50))
  b = a + rng.normal(0.1, 0.2, (1, 50))
  reps = stats.hierarchical_bootstrap(a, b, resamples=500, seed=3)
  # The documented draw: example counts from default_rng(seed), shared by the paired arms; one seed per arm.
  r = np.random.default_rng(3)
  idx = r.integers(0, 50, (500, 50))
  want = (b[0] - a[0])[idx].mean(1)
  np.testing.assert_allclose(reps, want, atol=1e-12)
  low, high = stats.percentile_interval(reps, 0.95)
  np.testing.assert_allclose([low, high], np.percentile(want, [2.5, 97.5]), atol=1e-12)


def test_seed_level_is_rescaled_to_the_unbiased_variance():
  # Constant over examples: only the seed level varies; the bootstrap variance tends to s^2 / S (ddof 1).
  x = np.array([[0.2] * 5, [0.5] * 5, [0.9] * 5])
  reps = stats.hierarchical_bootstrap(x, resamples=20000, seed=1)
  np.testing.assert_allclose(reps.var(), np.var([0.2, 0.5, 0.9], ddof=1) / 3, rtol=0.05)


def test_assess_speaks_the_vocabulary_and_corrects():
  rng = np.random.default_rng(1)
  arm = lambda p: rng.uniform(size=(5, 1000)) < p
  a = arm(0.7)
  claims = [stats.Claim('b helps', stats.compare(a, arm(0.9))), stats.Claim('b helps', stats.compare(a, arm(0.5))),
            stats.Claim('no effect', stats.compare(a, a.copy()), direction=0, margin=0.05),
            stats.Claim('b hurts', stats.compare(a, arm(0.7)), direction=-1)]
  got = stats.assess(claims)
  assert [v.verdict for v in got] == ['supported', 'contradicted', 'equivalent within ±0.05', 'not separated']
  assert all(v.p_holm >= v.p_value for v in got)
  assert {v.verdict for v in stats.assess(claims, smoke=True)} == {stats.SMOKE}
  assert stats.count(got) == '1 supported, 1 not separated, 1 contradicted, 1 equivalent within ±0.05'
  with pytest.raises(ValueError, match=r'^claims\[0\].margin: got None'):
    stats.assess([stats.Claim('x', claims[0].comparison, direction=0)])


def test_argument_errors_name_the_argument():
  with pytest.raises(ValueError, match='^a: got'):
    stats.compare(np.zeros((2, 0)))
  with pytest.raises(ValueError, match='^level: got'):
    stats.compare(np.zeros((2, 3)), level=1.0)
  with pytest.raises(ValueError, match='^paired: got True'):
    stats.compare(np.zeros((2, 3)), np.zeros((2, 4)), paired=True)
  with pytest.raises(ValueError, match='^b: got nan'):
    stats.compare(np.zeros((2, 3)), np.full((2, 3), np.nan))


def test_two_seeds_agreeing_by_chance_keep_the_example_level_variance():
  """Regression (a null comparison of smoke models in eval.robustness): each arm's two seeds happen to have equal
  accuracy, so the seed level's variance estimate is 0, below the (seed x example) share the double-count
  correction removes; removing all of it used to leave se = 0 and call a 7.5-point difference on 60 examples
  certain. The example level's variance must stay: se at least that of the paired per-example differences."""
  rng = np.random.default_rng(0)
  n = 60
  a = np.zeros((2, n))
  a[0, rng.choice(n, 5, replace=False)] = 1
  a[1, rng.choice(n, 5, replace=False)] = 1
  b = np.zeros((2, n))
  b[0, rng.choice(n, 9, replace=False)] = 1
  b[1, rng.choice(n, 9, replace=False)] = 1
  c = stats.compare(a, b, paired=True)
  floor = np.sqrt((b.mean(0) - a.mean(0)).var(ddof=1) / n) * 0.85   # bootstrap (N-1)/N and Monte Carlo slack
  assert c.effect == pytest.approx(4 / 60) and c.se >= floor > 0
  assert c.p_value > 0.05
