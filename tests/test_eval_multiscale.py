"""End-to-end test of `python -m eval.multiscale --quick`, plus its resume and ordering logic."""
from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest

from eval import multiscale as ms
from eval import scaffold
from srjax import stats


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp('multiscale')
  result = ms.main(['--quick', '--out', str(out)])
  return out, result


def _tables(text: str) -> list[list[list[str]]]:
  """Every Markdown table in text, as lists of cell rows (header and separator dropped)."""
  tables, current = [], None
  for line in text.splitlines():
    if line.startswith('|'):
      cells = [c.strip() for c in line.strip().strip('|').split('|')]
      if current is None:
        current = []
      elif not set(line) <= set('|-'):
        current.append(cells)
    elif current is not None:
      tables.append(current)
      current = None
  if current is not None:
    tables.append(current)
  return tables


def _num(cell: str) -> float:
  return float(cell.rstrip('†'))


def test_quick_run_files_and_tables(quick_run):
  out, result = quick_run
  s = result['settings']
  names = set(os.listdir(out))
  assert {'rows.jsonl', 'results.md', 'fig3_fisher.png'} <= names
  stems = {'correct': ('fig5_sine_recovered', 'fig6_sinusoid2d_recovered', 'fig7_benchmarks_1d', 'fig8_images',
                       'fig_amse_vs_sigma', 'fig9_levels'),
           'quirks': ('fig_amse_vs_sigma', 'fig9_levels')}  # --quick: recovered signals for one mode only
  for mode, mode_stems in stems.items():
    for stem in mode_stems:
      path = out / f'{stem}_{mode}.png'
      assert path.exists() and path.stat().st_size > 1000, path
  assert '![fig9_levels_quirks.png](fig9_levels_quirks.png)' in (out / 'results.md').read_text()
  text = (out / 'results.md').read_text()
  tables = _tables(text)
  # Per mode: Table I (6 rows), Table II (10 rows), orderings (6 rows), levels (3 rows).
  t1 = [t for t in tables if len(t) == 6 and len(t[0]) == 12]
  t2 = [t for t in tables if len(t) == 10 and len(t[0]) == 11]
  assert len(t1) == 2 and len(t2) == 2
  for table in t1:
    for row in table:
      values = [_num(c) for c in row[2:]]
      assert all(math.isfinite(v) for v in values), row
      assert _num(row[3]) >= 0 and _num(row[6]) >= 0
      assert s.sigmas[0] - 1e-9 <= _num(row[2]) <= s.sigmas[-1] + 1e-9
  for table in t2:
    for row in table:
      assert all(math.isfinite(_num(c)) for c in row[1:9]), row
  # Paper numbers are transcribed next to ours: Table I sine/double data column reads 2.0713 / 0.0325.
  sine_double = [r for r in t1[0] if r[0] == 'sine (1D)' and r[1] == 'double'][0]
  assert sine_double[8:10] == ['2.0713', '0.0325']
  assert re.search(r'Tables I \+ II \(2 mode\(s\), 48 rows computed', text)
  # Every row claim of both modes goes to verdicts.json, in the smoke vocabulary, with its interval and seeds.
  record = json.loads((out / 'verdicts.json').read_text())
  assert record['quick'] and record['module'] == 'eval.multiscale' and record['seconds'] > 0
  verdicts = record['verdicts']
  assert len(verdicts) == 96 == len(result['verdicts'])
  assert {v['verdict'] for v in verdicts} == {stats.SMOKE}
  assert all(v['seeds'] == [s.noise_seeds, 0] and v['low'] <= v['effect'] <= v['high'] for v in verdicts)
  assert all('Holm over 96 claim(s)' in v['procedure'] for v in verdicts)
  assert sum(v['claim'].startswith('correct estimators: ') for v in verdicts) == 48


def test_rows_consistent_with_amse_surfaces(quick_run):
  out, result = quick_run
  rows = scaffold.RowStore(str(out / 'rows.jsonl')).rows()
  s = result['settings']
  assert len(rows) == 2 * (24 + len(s.fig9_levels))
  for row in rows:
    for det in ms.DETECTORS:
      surface = np.asarray(row['amse'][det])
      assert surface.shape == (len(s.sigmas), len(row['bandwidths']))
      assert np.all(np.isfinite(surface)) and np.all(surface >= 0)
      sigma, h, amse = row['best'][det]
      i, j = np.unravel_index(np.argmin(surface), surface.shape)  # the reported best is the surface's minimum
      assert amse == pytest.approx(surface[i, j], rel=1e-5, abs=1e-8)
      assert sigma == pytest.approx(row['sigmas'][i]) and h == pytest.approx(row['bandwidths'][j])


def test_resume_skips_finished_rows_and_survives_a_torn_line(quick_run, tmp_path):
  out, _ = quick_run
  target = tmp_path / 'resume'
  target.mkdir()
  lines = (out / 'rows.jsonl').read_text().splitlines()
  # Keep every row but cut the last one in half, as a crash mid-write would.
  (target / 'rows.jsonl').write_text('\n'.join(lines[:-1]) + '\n' + lines[-1][:40])
  torn_key = json.loads(lines[-1])['key']
  result = ms.main(['--quick', '--out', str(target), '--no-figures', '--correct-only'])
  text = (target / 'results.md').read_text()
  assert '24 resumed from rows.jsonl' in text and '0 rows computed' in text
  reloaded = scaffold.RowStore(str(target / 'rows.jsonl'))
  assert torn_key not in reloaded  # the torn line is ignored, not mis-parsed
  assert len(reloaded) == len(lines) - 1
  assert result['table_seconds'] < 5


def _fake_rows(s, best_fn):
  rows = {}
  for job in ms.table_jobs(s):
    for mode in ms.MODES:
      best = {d: best_fn(job, d) for d in ms.DETECTORS}
      rows[job.key(mode, s.digest())] = {'best': best, 'sigmas': list(s.sigmas), 'bandwidths': [1.0],
                                         'best_seeds': {d: [[best[d][0] * (1 + 0.01 * (k - 2)), 1.0,
                                                             best[d][2] * (1 + 0.01 * (k - 2))] for k in range(5)]
                                                        for d in ms.DETECTORS}}
  return rows


def test_orderings_logic():
  s = ms.make_settings(True)

  def paper_like(job, det):  # double best, wavelet needs less noise and gives a lower AMSE
    amse = {'sub': 0.3, 'sup': 0.2, 'double': 0.1}[det] / (2 if job.domain == 'wavelet' else 1)
    return [1.0 if job.domain == 'wavelet' else 2.0, 1.0, amse]

  items = ms.orderings(_fake_rows(s, paper_like), 'correct', s)
  assert all(held == total for _, held, total, _ in items)

  def sup_wins_on_doppler(job, det):
    amse = {'sub': 0.3, 'sup': 0.05 if job.name == 'doppler' else 0.2, 'double': 0.1}[det]
    return [2.0, 1.0, amse * (2 if job.domain == 'wavelet' else 1)]

  items = {claim: (held, total, details)
           for claim, held, total, details in ms.orderings(_fake_rows(s, sup_wins_on_doppler), 'quirks', s)}
  held, total, details = items['Table II: double beats sub and sup (AMSE)']
  assert (held, total) == (18, 20) and 'doppler/data' in details and 'doppler/wavelet' in details
  assert items['Table I: multiscale gives a lower AMSE, double'][:2] == (0, 2)
  assert items['Table II: multiscale needs less noise (sigma* ms < sigma* data), double'][:2] == (0, 10)

  def within_seed_noise(job, det):   # double ahead on average, but not beyond the seeds' spread
    return [2.0, 1.0, {'sub': 0.3, 'sup': 0.2, 'double': 0.1}[det]]
  rows = _fake_rows(s, within_seed_noise)
  for row in rows.values():       # double's per-seed AMSE swings around the others': no interval excludes 0
    row['best_seeds']['double'] = [[2.0, 1.0, a] for a in (0.05, 0.4, 0.1, 0.35, 0.02)]
  items = {claim: held for claim, held, _, _ in ms.orderings(rows, 'correct', s)}
  assert items['Table I: double beats sub and sup (AMSE)'] == 0


def _rows_from_seeds(s, per_seed):
  """Rows for every (job, mode) whose best_seeds[det] are per_seed(job, det, mode) -> [(sigma, amse)] per seed."""
  rows = {}
  for job in ms.table_jobs(s):
    for mode in ms.MODES:
      seeds = {d: [[sig, 1.0, amse] for sig, amse in per_seed(job, d, mode)] for d in ms.DETECTORS}
      rows[job.key(mode, s.digest())] = {'best': {d: v[0] for d, v in seeds.items()}, 'sigmas': list(s.sigmas),
                                         'bandwidths': [1.0], 'best_seeds': seeds}
  return rows


def test_null_rows_are_not_separated_and_holm_spans_the_report():
  """Detectors and domains equal in truth (per-seed noise only): every row claim is 'not separated'."""
  s = ms.make_settings(True)
  rng = np.random.default_rng(0)
  draws = {}

  def null(job, det, mode):   # sub and sup share their draws, so min(sub, sup) - double is a symmetric null
    key = (job.name, job.domain, mode, 'sub' if det == 'sup' else det)
    if key not in draws:
      draws[key] = list(zip(rng.normal(1.5, 0.3, 5), rng.normal(0.1, 0.02, 5)))
    return draws[key]
  verdicts, items = ms.assess(_rows_from_seeds(s, null), ms.MODES, s)
  assert len(verdicts) == 96 and {v.verdict for v in verdicts} == {stats.NOT_SEPARATED}
  assert all(held == 0 for mode in ms.MODES for _, held, _, _ in items[mode])
  np.testing.assert_allclose([v.p_holm for v in verdicts], stats.holm([v.p_value for v in verdicts]))


def test_a_row_counts_only_when_supported_after_holm():
  s = ms.make_settings(True)
  moderate = [0.1, 0.2, 0.15, 0.05, 0.25]   # interval excludes 0 unadjusted (p ~ 0.012), not after Holm over 48

  def design(job, det, mode):
    if job.domain == 'wavelet' or det != 'double':
      return [(2.0, 0.3)] * 5
    if job.name == 'doppler':            # the double detector is worse on Doppler (data): contradicted
      return [(2.0, 0.5 + 0.01 * k) for k in range(5)]
    if job.name == 'blip':
      return [(2.0, 0.3 - m) for m in moderate]
    return [(2.0, 0.1 + 0.001 * k) for k in range(5)]   # far ahead: supported
  verdicts, items = ms.assess(_rows_from_seeds(s, design), ('correct',), s)
  by_claim = {v.claim: v for v in verdicts}
  blip = by_claim['correct estimators: Table II: double beats sub and sup (AMSE): blip/data '
                  '(min(sub, sup) - double AMSE)']
  assert blip.effect == pytest.approx(0.15) and blip.low > 0 and blip.p_value < 0.05
  assert blip.verdict == stats.NOT_SEPARATED and blip.p_holm >= 0.05
  doppler = by_claim['correct estimators: Table II: double beats sub and sup (AMSE): doppler/data '
                     '(min(sub, sup) - double AMSE)']
  assert doppler.effect < 0 and doppler.verdict == stats.CONTRADICTED
  held = {claim: (h, t, details) for claim, h, t, details in items['correct']}
  h, t, details = held['Table II: double beats sub and sup (AMSE)']
  # 20 rows: the 10 wavelet rows tie (0 difference), blip and doppler (data) fail, the other 8 data rows hold.
  assert (h, t) == (8, 20) and 'blip/data' in details and 'doppler/data' in details and 'contradicted' in details
  smoke, _ = ms.assess(_rows_from_seeds(s, design), ('correct',), s, smoke=True)
  assert {v.verdict for v in smoke} == {stats.SMOKE} and [v.effect for v in smoke] == [v.effect for v in verdicts]


def test_bad_arguments():
  with pytest.raises(SystemExit):
    ms.parse_args(['--n-trials', '0'])
  with pytest.raises(SystemExit):
    ms.parse_args(['--reference-quirks', '--correct-only'])
