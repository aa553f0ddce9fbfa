"""Tests for train/srt_distill.py (Eq. 6 self-distillation): the loss is the distance of the student's single
pass to the frozen teacher's SRT features, it starts at the teacher gap, a few loop steps reduce it, no labels
are read, and the config presets and validation work (directly through build_task + loop.run, the path the
CLI takes)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import srt_distill as distill_config
from srjax.srt_lib import srt
from train import loop, srt_classifier, srt_distill
from train import metrics as train_metrics


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  config = distill_config.get_config('smoke')
  with config.unlocked():
    config.teacher_workdir = str(tmp_path_factory.mktemp('teacher'))
  return config


@pytest.fixture(scope='module')
def task(smoke):
  return srt_distill.build_task(smoke)


def test_loss_is_eq6_against_srt_of_frozen_teacher(smoke, task):
  params, state = task.init(jax.random.key(0))
  batch = task.train_batch(0, 0, 1)
  assert set(batch) == {'image'}  # label-free
  model = srt_classifier.build_model(smoke.teacher, 10, batch['image'].shape[1:])
  feature = jax.jit(srt_classifier.feature_fn(model))
  task_loss = jax.jit(task.loss)
  # Perturb the student so it differs from the teacher.
  student = jax.tree_util.tree_map(lambda a: a * 1.01, params)
  loss, (metrics, new_state) = task_loss(student, state, batch, jax.random.key(1))
  target = srt(feature, state['teacher'], batch['image'], d=smoke.d, output='token')
  ref = np.mean((np.asarray(feature(student, batch['image'])) - np.asarray(target)) ** 2)
  np.testing.assert_allclose(loss, ref, rtol=1e-5)
  gap = np.mean((np.asarray(feature(state['teacher'], batch['image'])) - np.asarray(target)) ** 2)
  np.testing.assert_allclose(metrics['teacher_gap'], gap, rtol=1e-5)
  chex.assert_trees_all_equal(new_state, state)  # the frozen teacher is passed through unchanged
  # At initialisation the student is w_0, so the loss equals the teacher gap (> 0: SRT != single pass).
  loss0, (m0, _) = task_loss(params, state, batch, jax.random.key(1))
  np.testing.assert_allclose(loss0, m0['teacher_gap'], rtol=1e-6)
  assert float(loss0) > 0
  # Gradients flow to the student only (the targets are constants).
  grads = jax.jit(jax.grad(lambda p: task.loss(p, state, batch, jax.random.key(1))[0]))(student)
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(grads))


def test_a_few_loop_steps_reduce_the_distillation_loss(smoke, task, tmp_path):
  state = loop.run(smoke, str(tmp_path), task)
  assert int(state.step) == smoke.num_steps
  records = train_metrics.read(str(tmp_path))
  final = records[-1]
  assert final['split'] == 'eval' and final['step'] == smoke.num_steps
  # On the test images: 'teacher_gap' is the loss of the teacher's single pass, i.e. of the student at step 0
  # (it starts from w_0); after a few steps the student is closer to the SRT targets.
  assert final['loss'] < 0.9 * final['teacher_gap'], final
  train = [r for r in records if r['split'] == 'train']
  assert train[-1]['loss'] < train[0]['loss'], train


def test_config_validation(smoke):
  model = srt_classifier.build_model(smoke.teacher, 10, (28, 28, 1))
  with smoke.unlocked():
    bad = smoke.copy_and_resolve_references()
  with bad.unlocked():
    bad.d = 4
  with pytest.raises(ValueError, match=r'config.d: got 4; accepted: an integer in \[0, 3\]'):
    srt_distill.distill_loss_fn(bad, model)
  with bad.unlocked():
    bad.d, bad.loss = 1, 'l1'
  with pytest.raises(ValueError, match="config.loss: got 'l1'; accepted: one of"):
    srt_distill.distill_loss_fn(bad, model)
