"""train.nsde: the README's two commands (at smoke size) give two runs in two workdirs, a mismatched resume is
refused, and each finished run reloads with load_trained."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from configs import common
from configs import spectro as spectro_config
from tests.conftest import ROOT, TEST_XLA_FLAGS, tree_digest
from train import loop, metrics, state_checkpoint
from train import nsde as train_nsde


def _main_job(cwd, *args: str) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_NUM_CPU_DEVICES')}
  env.update(JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, SRJAX_CACHE_DIR=str(cwd / 'cache'), XLA_FLAGS=TEST_XLA_FLAGS)
  return subprocess.run([sys.executable, '-m', 'train.nsde', '--config', os.path.join(ROOT, 'configs/spectro.py:smoke'),
                         *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope='module')
def readme_runs(tmp_path_factory):
  """The README's NSDE command, then its ConvNeXt baseline command, one after the other (at smoke size)."""
  cwd = tmp_path_factory.mktemp('main_job')
  procs = {'nsde': _main_job(cwd), 'convnext': _main_job(cwd, '--config.model.kind=convnext')}
  for proc in procs.values():
    assert proc.returncode == 0, proc.stderr[-3000:]
  return cwd, procs


@pytest.mark.slow
def test_the_readme_commands_give_two_runs_in_two_workdirs(readme_runs):
  cwd, procs = readme_runs
  for kind, proc in procs.items():
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(f'train.nsde {kind} ') and os.path.join('workdirs', kind) in last, last
    assert 'test accuracy' in last and 'wall' in last
    assert 'Metadata file does not exist' not in proc.stderr            # a normal run prints no orbax warning
    workdir = cwd / 'workdirs' / kind
    assert loop.read_config(str(workdir)).model.kind == kind
    with open(workdir / 'test_metrics.json') as f:
      test_record = json.load(f)
    assert 0.0 <= test_record['accuracy'] <= 1.0 and metrics.read(str(workdir), 'test')[-1] == test_record
  # Two trainings: the baseline did not resume the NSDE's checkpoint.
  a, _ = state_checkpoint.load_numpy(str(cwd / 'workdirs' / 'nsde'))
  b, _ = state_checkpoint.load_numpy(str(cwd / 'workdirs' / 'convnext'))
  assert int(a['step']) == int(b['step']) == 4
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a['params']), jax.tree.leaves(b['params'])))


@pytest.mark.slow
def test_a_mismatched_resume_is_one_line_and_changes_nothing(readme_runs):
  cwd, _ = readme_runs
  before = tree_digest(cwd / 'workdirs' / 'nsde')
  wrong = _main_job(cwd, '--config.model.kind=convnext', '--workdir', 'workdirs/nsde')
  assert wrong.returncode == 1
  message = wrong.stderr.strip().splitlines()[-1]
  assert "model.kind: stored 'nsde', given 'convnext'" in message and 'Traceback' not in wrong.stderr, message
  assert tree_digest(cwd / 'workdirs' / 'nsde') == before


@pytest.mark.slow
@pytest.mark.parametrize('kind', train_nsde.KINDS)
def test_a_finished_run_reloads_from_its_workdir(readme_runs, kind):
  cwd, _ = readme_runs
  workdir = str(cwd / 'workdirs' / kind)
  reloaded = train_nsde.load_trained(workdir)           # from the workdir's config.json alone
  assert reloaded.config.model.kind == kind and reloaded.config.is_locked and reloaded.step == 4
  assert [r['step'] for r in metrics.read(workdir, 'eval')] == [4]
  x = reloaded.test_set.images[:4]
  assert reloaded.test_set.extras['snr_db'].shape == (len(reloaded.test_set),)
  a = reloaded.apply_fn(reloaded.variables, x, jax.random.key(0))
  b = reloaded.apply_fn(reloaded.variables, x, jax.random.key(1))
  chex.assert_shape(a, (4, 8))
  assert (kind == 'convnext') == bool(np.allclose(a, b))  # the ConvNeXt ignores rng, the NSDE's noise is on
  probs = reloaded.predict(reloaded.variables, x, jax.random.key(0))
  np.testing.assert_allclose(np.sum(probs, -1), 1.0, atol=1e-5)
  # The CLI's test record (computed from the state the loop returned) is what test_metrics computes from the
  # reloaded run, and train() on the finished run is the same run: same params, same single test record.
  again = train_nsde.test_metrics(reloaded)
  record = metrics.read(workdir, 'test')[-1]
  assert again['accuracy'] == record['accuracy'] and again['loss'] == pytest.approx(record['loss'], rel=1e-6)
  twin = train_nsde.train(reloaded.config, workdir)
  assert twin.step == reloaded.step and len(metrics.read(workdir, 'test')) == 1
  for a, b in zip(jax.tree.leaves(twin.variables), jax.tree.leaves(reloaded.variables)):
    np.testing.assert_array_equal(a, b)


def test_missing_checkpoint_and_bad_options_are_one_line_errors(tmp_path):
  config = spectro_config.get_config('smoke')
  with pytest.raises(FileNotFoundError, match='config.json'):
    train_nsde.load_trained(str(tmp_path))
  loop.save_config(config, str(tmp_path))
  with pytest.raises(FileNotFoundError, match='holds no checkpoint') as info:
    train_nsde.load_trained(str(tmp_path))
  assert '\n' not in str(info.value) and str(tmp_path) in str(info.value)
  for field, value, name in (('model.sigma', -0.5, 'sigma'), ('model.kind', 'vit', 'model.kind'),
                             ('model.noise', 'attribution', 'model.noise'), ('model.solver', 'rk4', 'solver')):
    bad = spectro_config.get_config('smoke')
    common.override(bad, {field: value})
    with pytest.raises(ValueError, match=name):
      train_nsde.build_model(bad, 8)


def test_tfds_source_reads_a_prepared_dataset(tmp_path):
  from tests import tfds_tiny  # pylint: disable=g-import-not-at-top
  name = tfds_tiny.prepare(str(tmp_path / 'tfds'))
  config = spectro_config.get_config('smoke')
  common.override(config, {'data.source': 'tfds', 'data.tfds_name': name, 'data.tfds_dir': str(tmp_path / 'tfds')})
  train_set, val_set = train_nsde.load_data(config, 'train'), train_nsde.load_data(config, 'val')
  images, labels = tfds_tiny.examples('test')
  order = np.lexsort(images.reshape(len(images), -1).T)   # TFDS shuffles on write: compare as sets of rows
  got = (val_set.images * 255).round().astype(np.uint8)
  got_order = np.lexsort(got.reshape(len(got), -1).T)
  np.testing.assert_array_equal(got[got_order], images[order])
  np.testing.assert_array_equal(val_set.labels[got_order], labels[order])
  assert len(train_set) == 64 and np.isnan(val_set.extras['snr_db']).all()
