"""eval.robustness: its masking checks and verdicts against hand-made numbers, its argument errors, and a --quick
run end to end (smoke ConvNeXt seeds 0, 1 against a smoke NSDE, trained through the shared loop) plus a null
comparison (ConvNeXt seeds 0, 1 against ConvNeXt seeds 2, 3) whose every claim must come out `not separated`."""
from __future__ import annotations

import json
import shutil

import ml_collections
import numpy as np
import pytest

from eval import robustness as rb
from eval import scaffold
from srjax import attack, stats


def test_bands():
  np.testing.assert_array_equal(rb.bands([-10.0, -0.1, 0.0, 9.99, 10.0, 20.0]), [0, 0, 1, 1, 2, 2])


def _bernoulli(rng, p, s=3, n=400):
  return (rng.uniform(size=(s, n)) < p).astype(float)


def test_rise_flags_on_hand_made_curves():
  rng = np.random.default_rng(0)
  eps = (0.5, 1.0, 2.0, 8.0)
  # A clean curve: each example's robustness can only be lost as eps grows, and it ends at 0.
  start = _bernoulli(rng, 0.8)
  keep = [start]
  for p in (0.6, 0.3, 0.0):
    keep.append(keep[-1] * _bernoulli(rng, p / 0.8 if p else 0.0))
  assert rb.rise_flags(eps, keep) == []
  # A curve that rises from eps 1 to eps 2 (0.5 -> 0.8): flagged, with the eps pair named.
  rising = [_bernoulli(rng, 0.8), _bernoulli(rng, 0.5), _bernoulli(rng, 0.8), np.zeros((3, 400))]
  flags = rb.rise_flags(eps, rising)
  assert len(flags) == 1 and 'rises from eps 1 to 2' in flags[0]
  # A rise within the Monte Carlo error (one example of 1,200 more at the next eps) is not flagged.
  flat = np.zeros((3, 400))
  flat[:, :200] = 1
  up = flat.copy()
  up[0, 300] = 1
  assert rb.rise_flags((1.0, 2.0), [flat, up], near_zero=1.0) == []
  # A curve that stays high at the large eps: flagged; near 0 within 2 SE of 5%: not.
  assert 'not about 0' in rb.rise_flags((1.0, 8.0), [flat, flat * 0.0 + (rng.uniform(size=flat.shape) < 0.3)])[0]
  low = np.zeros((3, 400))
  low[:, :24] = 1          # 6%: within 5% + 2 SE (2 x 0.7%)
  assert rb.rise_flags((1.0, 8.0), [flat, low]) == []


def test_blackbox_flags_on_hand_made_numbers():
  rng = np.random.default_rng(1)
  white = _bernoulli(rng, 0.5)
  assert rb.blackbox_flags(white, {'Square': white, 'transfer': np.maximum(white, _bernoulli(rng, 0.5))}, 1.0) == []
  beaten = white * _bernoulli(rng, 0.5)    # half of the white-box survivors fall to the black-box attack
  flags = rb.blackbox_flags(white, {'Square': beaten}, 2.0)
  assert len(flags) == 1 and flags[0].startswith('Square at eps 2')
  one_less = white.copy()
  one_less[np.unravel_index(np.argmax(white), white.shape)] = 0   # one example of 1,200: within the noise
  assert rb.blackbox_flags(white, {'Square': one_less}, 2.0) == []


def _arm(rng, clean, noise, robust, stability, s=3, n=400):
  return {'clean': _bernoulli(rng, clean, s, n), 'noise': _bernoulli(rng, noise, s, n),
          'robust_l2': _bernoulli(rng, robust, s, n), 'robust_linf': np.zeros((s, 0)),
          'stability': np.full((s, 40), stability) + rng.normal(0, 0.01, (s, 40)),
          'stability_tunnel': np.full((s, 40), stability) + rng.normal(0, 0.01, (s, 40)),
          'abc': rng.uniform(0.4, 0.6, (s, 40)), 'abc_correct': np.ones((s, 40))}


def test_verdicts_follow_the_numbers():
  rng = np.random.default_rng(2)
  a = _arm(rng, clean=0.9, noise=0.3, robust=0.6, stability=0.5)
  b = _arm(rng, clean=0.6, noise=0.8, robust=0.2, stability=0.5)
  v = {x.claim.split(' (')[0]: x for x in rb.verdicts(a, b)}
  assert 'more robust to AutoAttack Linf' not in v          # no Linf eps: not measured, not a claim
  assert v['lower clean accuracy'].verdict == stats.SUPPORTED
  assert v['more robust to Gaussian noise'].verdict == stats.SUPPORTED
  assert v['more robust to Gaussian noise'].effect == pytest.approx(b['noise'].mean() - a['noise'].mean())
  assert v['more robust to AutoAttack L2'].verdict == stats.CONTRADICTED
  assert v['more stable attributions'].verdict == stats.NOT_SEPARATED
  # ABC compares only the examples every model of both arms gets right: here the first 10.
  b['abc_correct'][1, 10:] = 0
  b['abc'][:, :10] += 0.3
  abc = next(x for x in rb.verdicts(a, b) if x.claim.startswith('higher ABC'))
  assert abc.n == (10, 10) and abc.effect == pytest.approx(b['abc'][:, :10].mean() - a['abc'][:, :10].mean())
  # Arm B's robustness, supported in the numbers, reads "possibly masked" when B failed a check for that norm;
  # A's failures do not touch a claim that favours B.
  a2 = _arm(rng, clean=0.9, noise=0.3, robust=0.2, stability=0.5)
  b2 = _arm(rng, clean=0.9, noise=0.3, robust=0.7, stability=0.5)
  robust = lambda **kw: next(x for x in rb.verdicts(a2, b2, **kw) if x.claim.startswith('more robust to AutoAttack'))
  assert robust().verdict == stats.SUPPORTED
  assert robust(masked_a={'L2': ['rises']}).verdict == stats.SUPPORTED
  assert robust(masked_b={'L2': ['rises']}).verdict == rb.MASKED
  assert robust(masked_b={'Linf': ['rises']}).verdict == stats.SUPPORTED
  assert all(x.verdict == stats.SMOKE for x in rb.verdicts(a2, b2, masked_b={'L2': ['r']}, smoke=True))


def test_verdicts_are_holm_corrected_across_the_claims():
  # Every claim sees the same moderate effect, p ~ 0.019 alone: below 0.05, but Holm over 6 claims lifts it.
  r = np.random.default_rng(1)
  a = np.stack([(r.uniform(size=400) < 0.5) for _ in range(3)]).astype(float)
  b = np.stack([(r.uniform(size=400) < 0.56) for _ in range(3)]).astype(float)
  p = stats.compare(a, b, paired=True).p_value
  assert 0.05 / 6 < p < 0.05
  arm = lambda x: {'clean': x, 'noise': x, 'robust_l2': x, 'robust_linf': x, 'stability': x, 'stability_tunnel': x,
                   'abc': x[:, :0], 'abc_correct': x[:, :0]}
  v = rb.verdicts(arm(a), arm(b))
  assert len(v) == 6 and all(x.p_value == pytest.approx(p) for x in v)
  assert all(x.verdict == stats.NOT_SEPARATED for x in v), [x.verdict for x in v]


def test_merge_logs_by_hand():
  log = lambda acc, sec: tuple(attack.AttackLog(n, k, a, s) for n, k, a, s in
                               zip(('clean', 'apgd-ce'), (8, 6), acc, sec))
  merged = rb.merge_logs([log((0.75, 0.5), (1.0, 2.0)), log((0.5, 0.25), (0.5, 1.0))], [8, 4])
  assert merged == [['clean', 16, pytest.approx((0.75 * 8 + 0.5 * 4) / 12), 1.5],
                    ['apgd-ce', 12, pytest.approx((0.5 * 8 + 0.25 * 4) / 12), 3.0]]


def test_argument_errors_are_one_line(tmp_path):
  cases = [(['--arm-a', str(tmp_path)], '--arm-b'),
           (['--arm-a', str(tmp_path / 'a'), '--arm-b', str(tmp_path / 'b')], 'no checkpoint'),
           (['--workdir', str(tmp_path)], 'no checkpoint'),
           (['--quick', '--paper'], 'exclude')]
  for argv, words in cases:
    with pytest.raises(SystemExit) as info:
      rb.main(argv + ['--out', str(tmp_path / 'out')])
    assert words in str(info.value) and '\n' not in str(info.value), (argv, info.value)
  with pytest.raises(SystemExit, match='--arm-a is empty'):
    rb.load_arms([], [str(tmp_path)])
  with pytest.raises(SystemExit, match='--arm-b .*holds no checkpoint'):
    rb.load_model(str(tmp_path), '--arm-b')
  data = lambda size, seed: ml_collections.ConfigDict({'data': {'size': size, 'num_examples': 400, 'seed': seed}})
  rb.check_same_data([data(16, 0)], [data(16, 1), data(16, 2)])     # seeds may differ
  with pytest.raises(SystemExit) as info:
    rb.check_same_data([data(16, 0)], [data(16, 1), data(32, 2)])
  assert "--arm-b workdir 1 has data config fields ['size']" in str(info.value) and '\n' not in str(info.value)


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
  """Smoke runs trained through the shared loop: the ConvNeXt (arm A, seeds 0 and 1) and the NSDE (arm B, seed 0,
  one seed to keep the test cheap), evaluated with --quick."""
  out = tmp_path_factory.mktemp('robustness') / 'out'
  arm_a = rb.train_runs(str(out), 'convnext', (0, 1), quick=True)
  arm_b = rb.train_runs(str(out), 'nsde', (0,), quick=True)
  path = rb.main(['--quick', '--arm-a', *arm_a, '--arm-b', *arm_b, '--out', str(out)])
  return out, path


@pytest.mark.slow
def test_quick_end_to_end(quick_run):
  """The report against the stored per-example rows; every verdict reads 'not assessed'; a rerun recomputes
  nothing."""
  out, path = quick_run
  text = open(path).read()
  for name in ('noise.png', 'robust.png', 'attribution.png'):
    assert (out / name).stat().st_size > 1000 and f'![{name}]({name})' in text
  rows = {}
  with open(out / 'rows.jsonl') as f:
    for line in f:
      record = json.loads(line)
      run, name = record['key'].split('|')[0], record['key'].split('|')[4]
      rows.setdefault(run.rsplit('/', 1)[-1], {})[name] = record['row']
  assert set(rows) == {'convnext-s0', 'convnext-s1', 'nsde-s0'}
  settings = rb.Settings(**rb.QUICK)
  # The NSDE has the masking checks' black-box rows; the ConvNeXt (whose 'standard' AutoAttack includes Square)
  # does not. Clean accuracy covers the whole test split (60 smoke spectrograms), the attack subset n_attack.
  assert 'square-L2=0.5' in rows['nsde-s0'] and 'transfer-L2=0.5' in rows['nsde-s0']
  assert 'square-L2=0.5' not in rows['convnext-s0']
  assert len(rows['nsde-s0']['clean']['correct']) == 60 and len(rows['nsde-s0']['aa-L2=0.5']['correct']) == 8
  assert rows['nsde-s0']['aa-L2=0.5']['version'] == 'rand' and rows['convnext-s0']['aa-L2=0.5']['version'] == \
      'standard'
  assert [e[0] for e in rows['convnext-s0']['aa-L2=0.5']['log']] == ['clean', 'apgd-ce', 'apgd-t', 'fab-t', 'square']
  assert rows['nsde-s0']['abc']['draws'] == 2     # the smoke config's deployed model.test_draws
  for run in rows.values():   # AutoAttack's last log line is the robust accuracy it returned
    for e in rb.attack_grid(settings, 'L2'):
      r = run[f'aa-L2={e:g}']
      assert r['log'][-1][2] == pytest.approx(np.mean(r['correct']))
  # The deterministic ConvNeXt: the attack never turns a wrong clean prediction into a right one.
  for run in ('convnext-s0', 'convnext-s1'):
    clean = np.asarray(rows[run]['clean']['correct'][:8])
    assert np.all(np.asarray(rows[run]['aa-L2=0.5']['correct']) <= clean)
  # The AutoAttack log is in the report; the verdicts come from the rows ([seeds, examples], arm B - arm A).
  assert '## AutoAttack logs' in text and 'apgd-dlr' in text
  record = json.load(open(out / 'verdicts.json'))
  clean = next(v for v in record['verdicts'] if v['claim'].startswith('lower clean accuracy'))
  a = np.asarray([rows[f'convnext-s{s}']['clean']['correct'] for s in (0, 1)], float)
  b = np.asarray([rows['nsde-s0']['clean']['correct']], float)
  assert clean['effect'] == pytest.approx(b.mean() - a.mean()) and clean['seeds'] == [2, 1]
  assert clean['n'] == [60, 60]
  # A smoke run decides no claim: the banner opens the report and every verdict reads 'not assessed'.
  assert stats.SMOKE_BANNER in text.split('\n## ')[0] and record['quick']
  assert record['verdicts'] and all(v['verdict'] == stats.SMOKE for v in record['verdicts'])
  # A rerun with no workdirs trains the default arms (--seeds 1: runs/convnext-s0 and runs/nsde-s0), finds them
  # trained and every row measured: nothing is recomputed.
  before = open(out / 'rows.jsonl').read()
  text = open(rb.main(['--quick', '--seeds', '1', '--out', str(out)])).read()
  assert 'Verdicts: arm B (nsde, 1 seed) against arm A (convnext, 1 seed)' in text
  assert open(out / 'rows.jsonl').read() == before
  # --workdir still works (the notebook's call): ConvNeXt runs form arm A, the others arm B; one seed each.
  old = out.parent / 'old'
  old.mkdir()
  shutil.copy(out / 'rows.jsonl', old / 'rows.jsonl')
  text = open(rb.main(['--quick', '--workdir', str(out / 'runs' / 'nsde-s0'), '--workdir',
                       str(out / 'runs' / 'convnext-s0'), '--out', str(old)])).read()
  assert 'Verdicts: arm B (nsde, 1 seed) against arm A (convnext, 1 seed)' in text
  assert open(old / 'rows.jsonl').read() == before   # the same runs: every row reused


@pytest.mark.slow
def test_null_comparison_is_not_separated(quick_run, tmp_path):
  """The same config in both arms (ConvNeXt seeds 0, 1 against seeds 2, 3), judged as a full run would be (not a
  smoke verdict): noise between training seeds must not be called an effect."""
  out, _ = quick_run
  extra = rb.train_runs(str(out), 'convnext', (2, 3), quick=True)
  null_out = tmp_path / 'null'
  null_out.mkdir()
  shutil.copy(out / 'rows.jsonl', null_out / 'rows.jsonl')   # seeds 0 and 1 are measured already
  arm_a = [str(out / 'runs' / f'convnext-s{s}') for s in (0, 1)]
  models_a, models_b, results, settings, _ = rb.evaluate(arm_a, extra, rb.Settings(**rb.QUICK), str(null_out))
  assert [m.kind for m in models_a + models_b] == ['convnext'] * 4
  verdicts, _, _ = rb.judge(models_a, models_b, results, settings, smoke=False)
  assert len(verdicts) >= 5
  assert all(v.verdict == stats.NOT_SEPARATED for v in verdicts), [(v.claim, v.verdict) for v in verdicts]
  # The arms differ in their numbers (the check is not vacuous): some effect is not exactly 0.
  assert any(v.effect != 0 for v in verdicts)


def test_each_measurement_is_a_value_with_a_unique_name_and_the_models_get_theirs():
  """`plan` gives every measurement once (unique row names); `row_name` finds each by its group, norm and level;
  a deterministic model gets no black-box check, a stochastic one without a transfer source no transfer."""
  s = rb.Settings()
  plan = rb.plan(s)
  names = [m.name for m in plan]
  assert len(set(names)) == len(names)
  for m in plan:
    assert rb.row_name(s, m.group, m.norm, m.level) == m.name
  assert [m.level for m in plan if m.group == 'autoattack' and m.norm == 'L2'] == list(rb.attack_grid(s, 'L2'))
  with pytest.raises(KeyError):
    rb.row_name(s, 'autoattack', 'L2', 3.0)
  det = rb.Model(name='c', kind='convnext', stochastic=False, trained=None, step=1)
  sto = rb.Model(name='n', kind='nsde', stochastic=True, trained=None, step=1)
  groups = lambda ms: sorted({m.group for m in ms})
  assert 'square' not in groups(rb.measurements(s, det)) and 'transfer' not in groups(rb.measurements(s, det, det))
  assert 'square' in groups(rb.measurements(s, sto)) and 'transfer' not in groups(rb.measurements(s, sto))
  assert len(rb.measurements(s, sto, det)) == len(plan)
