"""A workdir belongs to one run: refused mismatched resumes, non-finite runs stopped before anything is saved, and
inputs the ConvNeXt would crop refused before any data is generated (the per-kind default workdirs of the main
job are tested in tests/test_train_nsde.py)."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import classifier as classifier_config
from configs import common
from configs import spectro as spectro_config
from srjax.models import convnext
from tests.conftest import tree_digest
from train import loop, state_checkpoint
from train import nsde as train_nsde


def _probe_task(config, *, learning_rate):
  """One scalar fitted to zero (the loop's smallest real task); its optimizer has the given learning rate."""
  def loss(params, model_state, batch, rng):
    del rng
    return jnp.mean(jnp.square(params['w'] + batch['x'])), ({}, model_state)

  return loop.Task(init=lambda rng: ({'w': jnp.ones(())}, {}), loss=loss,
                   train_batch=lambda step, pi, pc: {'x': np.zeros(config.batch_size // pc, np.float32)},
                   optimizer=optax.sgd(learning_rate))


def _probe_config(**fields):
  config = classifier_config.get_config('smoke')
  common.override(config, {'num_steps': 6, 'batch_size': 2, 'log_every': 4, 'eval_every': 100,
                           'checkpoint_every': 3, **fields})
  return config


def test_a_diverging_run_stops_at_its_first_bad_step_and_saves_nothing_non_finite(tmp_path):
  workdir = str(tmp_path / 'run')
  config = _probe_config()
  loop.run(config, workdir, _probe_task(config, learning_rate=0.1))       # steps 1-6, checkpoints at 3 and 6
  more = _probe_config(num_steps=12)                                      # extend (constant schedule)
  with pytest.raises(loop.NonFiniteError, match=r'^step 7: non-finite'):
    loop.run(more, workdir, _probe_task(more, learning_rate=float('nan')))
  state, step = state_checkpoint.load_numpy(workdir)
  assert step == 6 and np.isfinite(state['params']['w'])                  # the last good checkpoint is the latest
  assert all(np.isfinite(r['loss']) for r in _records(workdir))


def test_a_nan_learning_rate_from_the_first_step_is_refused(tmp_path):
  workdir = str(tmp_path / 'nan')
  config = _probe_config()
  with pytest.raises(loop.NonFiniteError, match=r'^step 1: non-finite'):
    loop.run(config, workdir, _probe_task(config, learning_rate=float('nan')))
  assert not os.path.isdir(os.path.join(workdir, 'checkpoints')) or not os.listdir(os.path.join(workdir, 'checkpoints'))


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['split'] == 'train']


def test_resume_accepts_bookkeeping_changes_and_refuses_the_rest(tmp_path):
  workdir = str(tmp_path / 'run')
  config = _probe_config()
  loop.run(config, workdir, _probe_task(config, learning_rate=0.1))
  ok = _probe_config(log_every=2, checkpoint_every=2, keep=5, num_steps=8)   # all in RESUMABLE_FIELDS
  loop.run(ok, workdir, _probe_task(ok, learning_rate=0.1))
  assert state_checkpoint.load_numpy(workdir)[1] == 8
  before = tree_digest(workdir)
  for field, value in (('seed', 1), ('optim.learning_rate', 0.5), ('data.source', 'digits'), ('batch_size', 4)):
    bad = _probe_config(log_every=2, checkpoint_every=2, keep=5, num_steps=8, **{field: value})
    with pytest.raises(loop.ConfigMismatchError, match=rf'{field}: stored .*, given {value!r}') as info:
      loop.run(bad, workdir, _probe_task(bad, learning_rate=0.1))
    assert '\n' not in str(info.value)
  cosine = _probe_config(log_every=2, checkpoint_every=2, keep=5, num_steps=8, **{'optim.schedule': 'cosine'})
  with pytest.raises(loop.ConfigMismatchError, match='optim.schedule'):
    loop.run(cosine, workdir, _probe_task(cosine, learning_rate=0.1))
  assert tree_digest(workdir) == before


def test_num_steps_is_fixed_under_a_cosine_schedule(tmp_path):
  config = _probe_config(**{'optim.schedule': 'cosine'})
  loop.save_config(config, str(tmp_path))
  loop.check_resume(_probe_config(**{'optim.schedule': 'cosine', 'log_every': 1}), str(tmp_path))
  with pytest.raises(loop.ConfigMismatchError, match='num_steps: stored 6, given 9'):
    loop.check_resume(_probe_config(**{'optim.schedule': 'cosine', 'num_steps': 9}), str(tmp_path))


def test_a_size_the_convnext_would_crop_is_refused_before_any_data_is_generated(tmp_path, monkeypatch):
  cache = tmp_path / 'cache'
  monkeypatch.setenv('SRJAX_CACHE_DIR', str(cache))
  config = spectro_config.get_config('smoke')          # 'micro': stem 2, 2 stages -> multiples of 4
  common.override(config, {'data.size': 18})
  with pytest.raises(ValueError, match=r'multiples of stem_patch \* 2\^\(stages - 1\) = 4'):
    train_nsde.build_task(config)
  assert not cache.exists() or not any(cache.iterdir())
  model = convnext.build('micro', 3, stem_patch=2)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
  with pytest.raises(ValueError, match=r"x: got \(2, 18, 16, 1\)"):
    model.apply(variables, jnp.zeros((2, 18, 16, 1)))
  with pytest.raises(ValueError, match='channels-last'):
    model.apply(variables, jnp.zeros((2, 1, 16, 16)))   # NCHW: 1 and 16 are not both multiples of 4
