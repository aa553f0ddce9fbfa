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


def _agg(mean_curves, draws_std=0.0):
  """An Aggregate from per-seed mean curves [S, C, L] (std over draws `draws_std`), as eval.sr_mnist builds it."""
  from srjax import sweep
  mean_curves = np.asarray(mean_curves, np.float32)
  levels = np.linspace(0, 0.3, mean_curves.shape[2]).astype(np.float32)
  contrasts = np.linspace(1, 0.1, mean_curves.shape[1]).astype(np.float32)
  sums = [sweep.summarize(sweep.SRCurves(m[..., None], m, np.full_like(m, draws_std), contrasts, levels))
          for m in mean_curves]
  pick = lambda f: np.stack([getattr(x, f) for x in sums])
  return sr_mnist.Aggregate(mean_curves, pick('optimal_level'), pick('gain'), pick('peak_accuracy'),
                            pick('zero_noise_accuracy'), pick('bell'), contrasts, levels)


def test_claims_follow_the_measurements():
  bell = [[[0.9, 0.8, 0.7, 0.6], [0.3, 0.5, 0.4, 0.3], [0.1, 0.2, 0.4, 0.3]]] * 3   # optimum grows as t falls
  flat = [[[0.9, 0.8, 0.7, 0.6], [0.3, 0.3, 0.2, 0.1], [0.2, 0.2, 0.1, 0.1]]] * 3
  text, holds = sr_mnist.claim_bell(_agg(bell), _agg(flat), 'bell')
  assert holds and 'NOT' not in text
  assert sr_mnist.claim_bell(_agg(flat), _agg(bell), 'bell')[1] is False
  assert sr_mnist.claim_bell(_agg(bell), _agg(bell), 'bell')[1] is False
  assert sr_mnist.claim_optimal(_agg(bell), 'optimal')[1] is True
  shrinking = [[[0.9, 0.8, 0.7, 0.6], [0.1, 0.2, 0.4, 0.3], [0.3, 0.5, 0.4, 0.3]]] * 3
  assert sr_mnist.claim_optimal(_agg(shrinking), 'optimal')[1] is False
  better = (np.asarray(bell) + 0.1).tolist()
  noisy_seeds = lambda curves, shift: [np.asarray(c) + shift * k for k, c in enumerate(curves)]
  sel = np.array([False, True, True])
  assert sr_mnist.claim_seq({1: _agg(bell), 5: _agg(bell)}, sel)[1] is True
  assert sr_mnist.claim_seq({1: _agg(bell), 5: _agg(better)}, sel)[1] is False
  assert sr_mnist.claim_seq({1: _agg(noisy_seeds(bell, 0.05)), 5: _agg(noisy_seeds(better, -0.05))}, sel)[1] is True


@pytest.mark.slow
def test_quick_end_to_end_and_resume(tmp_path, monkeypatch):
  out = str(tmp_path / 'out')
  path = sr_mnist.main(['--quick', '--out', out])
  text = open(path).read()
  assert 'python -m eval.sr_mnist --quick' in text and '## The paper\'s claims' in text
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
