"""eval.srt_classify's verdicts: the row is chosen on a validation half and every row is judged on the other
half with Holm's correction (synthetic per-image correctness; the end-to-end run is in test_eval_srt.py)."""
from __future__ import annotations

import numpy as np

from eval import srt_classify


def _rows(single, others, seed):
  rows = [{'method': 'single', 'd': 0, 'correct': single}]
  rows += [{'method': m, 'd': d, 'correct': ok} for (m, d), ok in others.items()]
  return rows


def test_choice_on_validation_and_verdicts_on_test():
  rng = np.random.default_rng(0)
  n = 2000
  val, test = srt_classify.split_halves(n)
  assert len(np.intersect1d(val, test)) == 0 and len(val) + len(test) == n
  per_seed = []
  for seed in range(3):
    single = rng.uniform(size=n) < 0.8
    flip = lambda p: np.where(rng.uniform(size=n) < p, ~single, single)
    helps = single | (rng.uniform(size=n) < 0.4)          # fixes ~40% of the errors, breaks none
    # 'lucky' helps on the validation half only: chosen there, but no better on the test half.
    lucky = single.copy()
    lucky[val] = True
    per_seed.append(_rows(single, {('SRT (exclude)', 1): lucky, ('SRT (exclude)', 2): flip(0.05),
                                   ('logits TTA', 1): helps}, seed))
  verdicts, chosen, sentence = srt_classify.judge(per_seed)
  by = {v.claim.split(':')[0]: v for v in verdicts}
  assert chosen == 'SRT (exclude) d=1'                    # chosen on the validation half ...
  assert by[chosen].verdict == 'not separated' and abs(by[chosen].effect) < 1e-12   # ... judged on the test half
  assert by['logits TTA d=1'].verdict == 'supported'
  assert by['SRT (exclude) d=2'].verdict == 'contradicted'       # flips 4% right->wrong, 1% wrong->right
  assert all(v.n == (len(test), len(test)) and v.seeds == (3, 3) for v in verdicts)
  assert all(v.p_holm >= v.p_value for v in verdicts) and chosen in sentence
  smoke, _, _ = srt_classify.judge(per_seed, quick=True)
  assert {v.verdict for v in smoke} == {'not assessed (smoke run)'}
