"""The smoke-run rules of eval.scaffold's reports and `python -m eval.report`, on small synthetic verdicts."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from eval import report, scaffold
from srjax import stats
from tests.conftest import ROOT


def _verdicts(smoke):
  rng = np.random.default_rng(0)
  a = rng.uniform(size=(3, 300)) < 0.6
  claims = [stats.Claim('noise helps', stats.compare(a, rng.uniform(size=(3, 300)) < 0.8)),
            stats.Claim('length has no effect', stats.compare(a, a.copy()), direction=0, margin=0.05)]
  return stats.assess(claims, smoke=smoke)


def test_quick_report_has_the_banner_and_never_says_reproduced(tmp_path):
  out = str(tmp_path / 'quick')
  path = scaffold.write_results(out, 'Demo', ['## Claims', scaffold.verdict_table(_verdicts(True))],
                                module='eval.demo', argv=['--quick'], quick=True, verdicts=_verdicts(True))
  text = open(path).read()
  assert text.splitlines()[0] == f'> **{stats.SMOKE_BANNER}**'
  assert 'reproduced' not in text.lower() and text.count(stats.SMOKE) == 2
  with pytest.raises(ValueError, match='^sections: got .*reproduced'):
    scaffold.write_results(out, 'Demo', ['claim: REPRODUCED'], module='eval.demo', quick=True)
  with pytest.raises(ValueError, match='^verdicts: got'):
    scaffold.write_results(out, 'Demo', [], module='eval.demo', quick=True, verdicts=_verdicts(False))
  full = scaffold.write_results(str(tmp_path / 'full'), 'Demo', [], module='eval.demo', verdicts=_verdicts(False))
  assert stats.SMOKE_BANNER not in open(full).read()


def test_results_md_is_regenerated_from_the_stored_verdicts(tmp_path, capsys):
  results = tmp_path / 'results'
  scaffold.write_results(str(results / 'a_full'), 'Full eval', [], module='eval.full', argv=['--seeds', '3'],
                         verdicts=_verdicts(False), figures=['fig.png'], seconds=125.0)
  scaffold.write_results(str(results / 'b_quick'), 'Quick eval', [], module='eval.quick', argv=['--quick'],
                         quick=True, verdicts=_verdicts(True))
  out = str(tmp_path / 'RESULTS.md')
  assert report.main(['--results', str(results), '--out', out]) == out
  assert capsys.readouterr().out.strip().endswith('1 supported, 1 equivalent within ±0.05')
  text = open(out).read()
  stored = json.load(open(results / 'a_full' / 'verdicts.json'))
  for v in stored['verdicts']:                        # every stored claim, verdict and interval is in the table
    assert f'| {v["claim"]} | {v["verdict"]} | {v["effect"]:+.4f} [{v["low"]:+.4f}, {v["high"]:+.4f}]' in text
  assert '`python -m eval.full --seeds 3`' in text and '2.1 min of measured compute' in text
  assert '[fig.png](results/a_full/fig.png)' in text
  missing = text[text.index('Not in this report'):].split('\n')[0]   # every real eval lacks a full run here
  assert all(f'`python -m {m}`' in missing for m in report.EVALS) and 'eval.full' not in missing
  smoke_part = text[text.index('## Smoke runs'):]
  assert stats.SMOKE_BANNER in smoke_part and 'not assessed (smoke run)' in smoke_part
  assert 'reproduced' not in text.lower()
  # Generated, not edited: a hand edit is overwritten by the same bytes from the rows.
  with open(out, 'a') as f:
    f.write('hand edit\n')
  report.main(['--results', str(results), '--out', out])
  assert open(out).read() == text
  # A changed stored verdict changes the report.
  stored['verdicts'][0]['verdict'] = 'contradicted'
  with open(results / 'a_full' / 'verdicts.json', 'w') as f:
    json.dump(stored, f)
  report.main(['--results', str(results), '--out', out])
  assert '| noise helps | contradicted |' in open(out).read()
  assert os.path.exists(out)


def test_the_committed_results_md_is_generated_from_the_committed_verdicts():
  """RESULTS.md at the top level is `python -m eval.report`'s output over the committed results/*/verdicts.json:
  regenerating it gives the same bytes, so nobody edited it by hand, and it lists only full runs."""
  committed = os.path.join(ROOT, 'RESULTS.md')
  records = report.gather(os.path.join(ROOT, 'results'))
  assert records and not any(r.get('quick') for r in records)
  with open(committed) as f:
    assert report.render(records, committed) == f.read()
  for r in records:                                   # every figure the report links is committed beside it
    for figure in r.get('figures', []):
      assert os.path.getsize(os.path.join(r['folder'], figure)) > 1000, (r['folder'], figure)
