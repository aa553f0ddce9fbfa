"""The no-signal class, the lstm_sr task's model kinds, the claim checks of eval.sr_mnist, and its --quick run."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from configs import lstm_sr as lstm_sr_config
from eval import scaffold
from eval import sr_mnist
from srjax import stats
from srjax.data.dataset import Dataset
from srjax.data.no_signal import with_no_signal
from train import lstm_sr


def test_no_signal_class_appends_blanks_with_their_own_label():
  rng = np.random.default_rng(0)
  ds = Dataset(rng.uniform(0.1, 1, (37, 4, 4, 1)).astype(np.float32), rng.integers(0, 10, 37).astype(np.int32), 10)
  out = with_no_signal(ds, 0.1)
  assert len(out) == 37 + 4 and out.num_classes == 11
  np.testing.assert_array_equal(out.images[:37], ds.images)
  np.testing.assert_array_equal(out.labels[37:], [10] * 4)
  assert not out.images[37:].any() and out.images[:37].min() > 0
  with pytest.raises(ValueError, match='^ratio: got'):
    with_no_signal(ds, 1.5)


@pytest.mark.parametrize('kind', ['lstm', 'cnn', 'mlp'])
def test_model_kinds(kind):
  config = common.override(lstm_sr_config.get_config(), {'model.kind': kind})
  model = lstm_sr.build_model(config.model, 11)
  x = jnp.zeros((2, 28, 28, 1))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  assert jax.jit(model.apply)(variables, x).shape == (2, 11)
  assert lstm_sr.repeats(config.model) == (config.model.seq_len if kind == 'lstm' else None)


def test_task_rejects_unknown_training_noise():
  config = common.override(lstm_sr_config.get_config(), {'train_noise.kind': 'pink'})
  with pytest.raises(ValueError, match='^train_noise.kind: got'):
    lstm_sr.build_task(config)


def _agg(p_curves, seeds=3, n=400, draws=2, seed=0):
  """An Aggregate of simulated sweeps: image i at contrast c, level l is correct with probability
  p_curves[c][l] (independently per seed, draw and image), through sr_mnist.from_curves."""
  from srjax import sweep
  rng = np.random.default_rng(seed)
  p = np.asarray(p_curves, np.float64)
  contrasts = np.array([1.0, 0.4, 0.25, 0.2][:p.shape[0]], np.float32)
  levels = np.linspace(0, 0.3, p.shape[1]).astype(np.float32)
  curves = []
  for _ in range(seeds):
    correct = rng.uniform(size=p.shape + (draws, n)) < p[..., None, None]
    acc = correct.mean(-1).astype(np.float32)
    curves.append(sweep.SRCurves(acc, acc.mean(-1), acc.std(-1), contrasts, levels, correct))
  return sr_mnist.from_curves(curves)


BELL = [[0.9, 0.8, 0.7, 0.6], [0.3, 0.5, 0.4, 0.3], [0.2, 0.35, 0.5, 0.3]]   # optimum grows as t falls
FLAT = [[0.9, 0.8, 0.7, 0.6], [0.3, 0.3, 0.2, 0.1], [0.2, 0.2, 0.1, 0.1]]


def test_claims_follow_the_measurements():
  words = lambda claims: [v.verdict for v in stats.assess(claims)]
  assert words(sr_mnist.bell_claims(_agg(BELL), _agg(FLAT, seed=1, seeds=5, n=1500), 'x')) == [
      'supported', 'equivalent within ±0.03']
  flat_with, bell_without = words(sr_mnist.bell_claims(_agg(FLAT), _agg(BELL, seed=1), 'x'))
  assert flat_with != 'supported' and bell_without == 'contradicted'
  assert words([sr_mnist.optimal_claim(_agg(BELL), 'optimal')]) == ['supported']
  shrinking = [BELL[0], BELL[2], BELL[1]]
  assert words([sr_mnist.optimal_claim(_agg(shrinking), 'optimal')]) == ['contradicted']
  same = sr_mnist.seq_claims({1: _agg(BELL, seeds=5, n=1000), 5: _agg(BELL, seeds=5, n=1000, seed=2)})
  assert words(same) == ['equivalent within ±0.03']
  better = (np.asarray(BELL) + 0.1).tolist()
  assert words(sr_mnist.seq_claims({1: _agg(BELL), 5: _agg(better, seed=2)})) == ['contradicted']


def test_flat_curves_are_not_separated_under_the_null():
  """Flat in truth at every contrast, 3 seeds: the bell claim is not supported (one realisation, fixed seed;
  srjax.sweep and srjax.stats carry the calibration tests)."""
  flat = [[0.5] * 6] * 3
  verdicts = stats.assess(sr_mnist.bell_claims(_agg(flat, seed=4), None, 'x'))
  assert verdicts[0].verdict == 'not separated'
  assert verdicts[0].low < 0 < verdicts[0].high


def test_packed_correctness_round_trips():
  correct = np.random.default_rng(0).uniform(size=(2, 3, 2, 37)) < 0.5
  np.testing.assert_array_equal(sr_mnist.unpack(sr_mnist.pack(correct)), correct)


@pytest.mark.slow
def test_quick_end_to_end_and_resume(tmp_path, monkeypatch):
  out = str(tmp_path / 'out')
  path = sr_mnist.main(['--quick', '--out', out])
  text = open(path).read()
  assert 'python -m eval.sr_mnist --quick' in text and '## The paper\'s claims' in text
  assert text.startswith(f'> **{stats.SMOKE_BANNER}**') and 'reproduced' not in text.lower()
  assert 'not assessed (smoke run)' in text and os.path.exists(os.path.join(out, 'verdicts.json'))
  for name in ('fig2_uniform', 'fig3_gaussian', 'fig4_no_signal', 'fig5_seq_len', 'fig_models',
               'fig_trained_noise', 'fig_shared_noise'):
    assert os.path.getsize(os.path.join(out, f'{name}.png')) > 1000, name
  store = scaffold.RowStore(os.path.join(out, 'rows.jsonl'))
  keys = {f'{r["variant"]}/{r["noise"]}/{r["shared"]}' for r in store.rows()}
  assert keys == {'lstm/uniform/False', 'lstm/rectified_gaussian/False', 'lstm/uniform/True',
                  'no_signal_off/uniform/False', 'no_signal_off/uniform/True', 'seq1/uniform/False',
                  'noisy/uniform/False'}
  for row in store.rows():
    acc = np.asarray(row['accuracy'])
    assert acc.shape == (3, 3, 1) and np.all((acc >= 0) & (acc <= 1))
  # A rerun trains nothing and sweeps nothing: every row is in the store.
  def refuse(*args, **kwargs):
    raise AssertionError('a finished run was retrained')
  monkeypatch.setattr(sr_mnist.scaffold, 'train_or_reload', refuse)
  monkeypatch.setattr(sr_mnist.sweep, 'sr_curves', refuse)
  assert sr_mnist.main(['--quick', '--out', out]) == path
