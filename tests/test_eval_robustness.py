"""eval.robustness: its summaries against hand computations, its measurements against invariants on toy models,
and the --quick run end to end (training the smoke NSDE and ConvNeXt through the shared loop)."""
from __future__ import annotations

import json
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from eval import robustness as rb
from srjax import stats
from eval import scaffold

N, K = 12, 3


def _toy_apply(variables, x, rng):
  logits = x.reshape(x.shape[0], -1) @ variables['params']['w']
  return logits + variables['params']['sigma'] * jax.random.normal(rng, logits.shape)


def _toy_predict(variables, x, rng):
  return jax.vmap(lambda k: jax.nn.softmax(_toy_apply(variables, x, k)))(jax.random.split(rng, 2)).mean(0)


def _toy_model(kind, w, sigma):
  trained = types.SimpleNamespace(config=ml_collections.ConfigDict({'model': {'kind': kind}}),
                                  apply_fn=_toy_apply, predict=_toy_predict,
                                  variables={'params': {'w': jnp.asarray(w), 'sigma': jnp.float32(sigma)}})
  return rb.Model(name=kind, kind=kind, stochastic=kind != 'convnext', trained=trained, step=1)


@pytest.fixture(scope='module')
def toy():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(N, 4, 4, 1)).astype(np.float32)
  w = rng.normal(size=(16, K)).astype(np.float32)
  y = np.argmax(x.reshape(N, -1) @ w, -1).astype(np.int32)
  y[:3] = (y[:3] + 1) % K                                  # three clean errors
  models = [_toy_model('nsde', w, 0.2), _toy_model('convnext', w, 0.0)]
  settings = rb.Settings(n_test=N, n_attr=8, batch=8, noise=(0.0, 0.1), l2_eps=(0.0, 1.0), linf_eps=(0.0,),
                         apgd_steps=3, eot=1, draws=1, ig_steps=4, ig_chunk=4, stability_samples=2, abc_samples=4)
  # eot = draws = 1: both toys share one apply_fn and the same static options, so they share every compiled
  # function (EOT itself is tested in test_attack.py).
  return dict(x=x, y=y, w=w, models=models, settings=settings)


def test_bands():
  np.testing.assert_array_equal(rb.bands([-10.0, -0.1, 0.0, 9.99, 10.0, 20.0]), [0, 0, 1, 1, 2, 2])


def test_bootstrap_diff():
  a = np.array([1.0, 0.0, 1.0, 1.0])
  b = np.array([0.0, 0.0, 1.0, 0.0])
  diff, lo, hi = rb.bootstrap_diff(a, b, paired=True)
  assert diff == pytest.approx(0.5)
  assert 0.0 <= lo < diff < hi <= 1.0  # paired differences are 1, 0, 0, 1: resampled means lie in [0, 1]
  assert rb.bootstrap_diff(a, a, paired=True) == (0.0, 0.0, 0.0)


def test_verdicts_follow_the_numbers():
  rng = np.random.default_rng(1)
  n = 400
  ones, zeros = np.ones(n), np.zeros(n)
  better = {'clean': (rng.uniform(size=n) < 0.85).astype(float), 'noise': ones, 'apgd_l2': ones, 'apgd_linf': zeros,
            'stability': np.full(n, 0.1), 'abc_correct': np.full(50, 0.9)}
  worse = {'clean': (rng.uniform(size=n) < 0.90).astype(float), 'noise': zeros, 'apgd_l2': zeros,
           'apgd_linf': ones, 'stability': np.full(n, 0.1), 'abc_correct': np.full(60, 0.5)}
  rows = {r['claim'].split(' (')[0]: r for r in rb.verdicts(better, worse, paired=True)}
  assert rows['more robust to Gaussian noise']['verdict'] == 'held'
  assert rows['more robust to APGD-CE L2']['verdict'] == 'held'
  assert rows['more robust to APGD-CE Linf']['verdict'] == 'did not hold'
  assert rows['more stable attributions']['verdict'] == 'did not hold'   # equal: no improvement
  assert rows['higher ABC on correct predictions']['verdict'] == 'held'
  assert rows['higher ABC on correct predictions']['NSDE - ConvNeXt'] == pytest.approx(0.4)
  clean = rows['slightly lower clean accuracy']
  assert clean['NSDE - ConvNeXt'] == pytest.approx(better['clean'].mean() - worse['clean'].mean())
  assert clean['verdict'].startswith('held') == (clean['NSDE - ConvNeXt'] < 0)


def test_measurements_on_toy_models(toy, tmp_path):
  s = toy['settings']
  store = scaffold.RowStore(str(tmp_path / 'rows.jsonl'))
  results = rb.evaluate_models(toy['models'], toy['x'], toy['y'], s, store, 'toy')
  for m in toy['models']:
    r = results[m.name]
    clean = np.asarray(r['clean']['correct'])
    # The deterministic toy's clean accuracy by hand; the stochastic one errs on the three wrong labels at least.
    if m.kind == 'convnext':
      pred = np.argmax(toy['x'].reshape(N, -1) @ toy['w'], -1)
      np.testing.assert_array_equal(clean, pred == toy['y'])
    assert not clean[:3].any()
    # Zero-size perturbations change nothing: noise 0 and eps 0 give the clean accuracy (deterministic model).
    if m.kind == 'convnext':
      for name in ('noise=0', 'apgd-L2=0', 'apgd-Linf=0'):
        np.testing.assert_array_equal(r[name]['correct'], clean)
    # An attack can only lower the accuracy of the deterministic model.
    if m.kind == 'convnext':
      assert np.all(np.asarray(r['apgd-L2=1']['correct']) <= clean)
    assert len(r['stability']['relative_l2']) == s.n_attr and len(r['abc']['score']) == s.n_attr
    assert all(0.0 <= v <= 1.0 for v in r['abc']['score'])
  # Every row is stored: a second pass recomputes nothing and returns the same rows.
  assert len(store) == 2 * len(rb.measurements(s))
  again = rb.evaluate_models(toy['models'], toy['x'], toy['y'], s, scaffold.RowStore(str(tmp_path / 'rows.jsonl')),
                             'toy')
  assert again == results
  table, _ = rb.band_table(results, toy['models'], s, rb.bands(np.linspace(-10, 20, N)))
  assert table.count('\n') == 1 + 2 * 4  # header rule + (all + 3 bands) per model


def test_workdir_without_checkpoint_is_a_one_line_error(tmp_path):
  with pytest.raises(SystemExit) as info:
    rb.main(['--workdir', str(tmp_path), '--out', str(tmp_path / 'out')])
  message = str(info.value)
  assert 'no checkpoint' in message and '\n' not in message


@pytest.mark.slow
def test_quick_end_to_end(tmp_path):
  """Trains the smoke NSDE and ConvNeXt through the shared loop, evaluates both, and checks the report against
  the stored per-example rows; a rerun recomputes nothing."""
  out = tmp_path / 'out'
  path = rb.main(['--quick', '--out', str(out)])
  text = open(path).read()
  for name in ('noise.png', 'apgd.png', 'attribution.png'):
    assert (out / name).stat().st_size > 1000 and f'![{name}]({name})' in text
  store = scaffold.RowStore(str(out / 'rows.jsonl'))
  settings = rb.Settings(**rb.QUICK)
  assert len(store) == 2 * len(rb.measurements(settings))
  rows = {}
  with open(out / 'rows.jsonl') as f:
    for line in f:
      key = json.loads(line)['key']
      rows.setdefault(key.split(' ')[0], {})[key.split('|')[-1]] = store.get(key)
  assert set(rows) == {'nsde', 'convnext'}
  # The deterministic ConvNeXt: an attack never turns a wrong clean prediction into a right one.
  clean = np.asarray(rows['convnext']['clean']['correct'])
  for e in settings.l2_eps:
    assert np.all(np.asarray(rows['convnext'][f'apgd-L2={e:g}']['correct']) <= clean)
  # The verdict table is computed from those rows.
  table = text.split("## Which of the paper's claims held")[1].split('\n## ')[0]
  line = next(l for l in table.splitlines() if l.startswith('| slightly lower clean accuracy'))
  cells = [c.strip() for c in line.strip('|').split('|')]
  assert float(cells[1]) == pytest.approx(np.mean(rows['nsde']['clean']['correct']), abs=1e-4)
  assert float(cells[2]) == pytest.approx(clean.mean(), abs=1e-4)
  diff, lo, hi = rb.bootstrap_diff(np.asarray(rows['nsde']['clean']['correct'], float), clean.astype(float), True)
  assert cells[4] == f'[{lo:.4f}, {hi:.4f}]'
  assert sum(l.startswith('| ') for l in table.splitlines()) == 1 + len(rb.CLAIMS)  # header + one per claim
  # A smoke run decides no claim: the banner opens the report and every verdict reads 'not assessed'.
  assert stats.SMOKE_BANNER in text.split('\n## ')[0] and 'reproduced' not in text.lower()
  claim_rows = [l for l in table.splitlines() if l.startswith('| ') and not l.startswith('| claim')]
  assert len(claim_rows) == len(rb.CLAIMS)
  assert all(l.strip().strip('|').split('|')[-1].strip() == stats.SMOKE for l in claim_rows), claim_rows
  # A rerun finds every row and every trained run: nothing is recomputed.
  before = open(out / 'rows.jsonl').read()
  rb.main(['--quick', '--out', str(out)])
  assert open(out / 'rows.jsonl').read() == before


def test_bootstrap_interval_is_numpy_percentile_of_the_same_resamples():
  """The 95% interval is the 2.5th and 97.5th percentile of the resampled mean differences, with the resamples
  drawn as documented (default_rng(seed).integers, paired: one index set; unpaired: a's then b's)."""
  rng = np.random.default_rng(3)
  a, b = rng.normal(0.3, 1.0, 40), rng.normal(0.0, 1.0, 40)
  for paired in (True, False):
    n, seed = 500, 7
    draw = np.random.default_rng(seed)
    if paired:
      idx = draw.integers(0, a.size, size=(n, a.size))
      diffs = a[idx].mean(1) - b[idx].mean(1)
    else:
      ia = draw.integers(0, a.size, size=(n, a.size))
      ib = draw.integers(0, b.size, size=(n, b.size))
      diffs = a[ia].mean(1) - b[ib].mean(1)
    diff, lo, hi = rb.bootstrap_diff(a, b, paired, n=n, seed=seed)
    assert diff == pytest.approx(a.mean() - b.mean())
    np.testing.assert_allclose([lo, hi], np.percentile(diffs, [2.5, 97.5]), rtol=1e-12)
    # A 90% interval is measurably narrower: the test above would catch it.
    assert hi - lo > 1.1 * np.subtract(*np.percentile(diffs, [95, 5]))
