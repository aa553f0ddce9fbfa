"""train/state_checkpoint.py in process: a checkpoint of another dtype or shape is a CheckpointError, left untouched."""
from __future__ import annotations

import hashlib
import os

import jax.numpy as jnp
import numpy as np
import pytest

from train import state_checkpoint


def _tree_digest(folder: str) -> str:
  digest = hashlib.sha256()
  for dirpath, _, files in sorted(os.walk(folder)):
    for name in sorted(files):
      path = os.path.join(dirpath, name)
      digest.update(path.encode())
      with open(path, 'rb') as f:
        digest.update(f.read())
  return digest.hexdigest()


def _state(kernel_dtype=jnp.float32, kernel_shape=(3, 2)):
  return {'step': jnp.zeros((), jnp.int32),
          'params': {'dense': {'kernel': jnp.arange(np.prod(kernel_shape), dtype=kernel_dtype).reshape(kernel_shape),
                               'bias': jnp.ones((2,), jnp.float32)}}}


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('ckpt'))
  mngr = state_checkpoint.manager(workdir, keep=2)
  state_checkpoint.save(mngr, 5, _state())
  mngr.wait_until_finished()
  mngr.close()
  return workdir


def test_matching_state_restores_exactly(saved):
  restored, step = state_checkpoint.restore_latest(state_checkpoint.manager(saved, keep=2), _state())
  assert step == 5
  np.testing.assert_array_equal(restored['params']['dense']['kernel'], np.arange(6).reshape(3, 2))


@pytest.mark.parametrize('target, needle', [
    (_state(kernel_dtype=jnp.bfloat16), r'params/dense/kernel: saved float32\[3, 2\] vs expected bfloat16\[3, 2\]'),
    (_state(kernel_dtype=jnp.int32), r'params/dense/kernel: saved float32\[3, 2\] vs expected int32\[3, 2\]'),
    (_state(kernel_shape=(2, 3)), r'params/dense/kernel: saved float32\[3, 2\] vs expected float32\[2, 3\]'),
])
def test_other_dtype_or_shape_is_an_error_and_left_untouched(saved, target, needle):
  before = _tree_digest(saved)
  with pytest.raises(state_checkpoint.CheckpointError, match=needle):
    state_checkpoint.restore_latest(state_checkpoint.manager(saved, keep=2), target)
  assert _tree_digest(saved) == before


def test_other_tree_names_the_missing_and_extra_leaves(saved):
  target = _state()
  target['params']['other'] = {'kernel': jnp.zeros((1,))}
  del target['params']['dense']['bias']
  with pytest.raises(state_checkpoint.CheckpointError) as info:
    state_checkpoint.restore_latest(state_checkpoint.manager(saved, keep=2), target)
  assert 'params/dense/bias: in the checkpoint, not in this config' in str(info.value)
  assert 'params/other/kernel: expected float32[1], missing from the checkpoint' in str(info.value)
