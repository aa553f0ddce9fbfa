"""train.nsde: the :smoke preset trains both kinds through the shared loop and reloads with load_trained."""
from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

from configs import common
from configs import spectro as spectro_config
from train import metrics
from train import nsde as train_nsde


@pytest.mark.slow
@pytest.mark.parametrize('kind', train_nsde.KINDS)
def test_smoke_trains_through_the_loop_and_reloads(kind, tmp_path, monkeypatch):
  monkeypatch.setenv('SRJAX_CACHE_DIR', str(tmp_path / 'cache'))
  config = spectro_config.get_config('smoke')
  common.override(config, {'model.kind': kind})
  workdir = str(tmp_path / kind)
  trained = train_nsde.train(config, workdir)
  assert trained.step == config.num_steps
  assert [r['step'] for r in metrics.read(workdir, 'eval')] == [config.num_steps]
  line = train_nsde.finish(config, workdir, 12.0)
  assert 'test accuracy' in line and 'wall 12 s' in line and workdir in line
  record = metrics.read(workdir, 'test')[-1]
  assert 0.0 <= record['accuracy'] <= 1.0 and record['examples'] == len(trained.test_set)

  reloaded = train_nsde.load_trained(workdir)           # from the workdir's config.json alone
  assert reloaded.config.model.kind == kind and reloaded.config.is_locked
  chex.assert_trees_all_equal(reloaded.variables, trained.variables)
  x = reloaded.test_set.images[:4]
  assert reloaded.test_set.extras['snr_db'].shape == (len(reloaded.test_set),)
  a = reloaded.apply_fn(reloaded.variables, x, jax.random.key(0))
  b = reloaded.apply_fn(reloaded.variables, x, jax.random.key(1))
  chex.assert_shape(a, (4, 8))
  assert (kind == 'convnext') == bool(np.allclose(a, b))  # the ConvNeXt ignores rng, the NSDE's noise is on
  probs = reloaded.predict(reloaded.variables, x, jax.random.key(0))
  np.testing.assert_allclose(np.sum(probs, -1), 1.0, atol=1e-5)


def test_missing_checkpoint_and_bad_options_are_one_line_errors(tmp_path):
  config = spectro_config.get_config('smoke')
  with pytest.raises(FileNotFoundError, match='config.json'):
    train_nsde.load_trained(str(tmp_path))
  train_nsde.save_config(config, str(tmp_path))
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
