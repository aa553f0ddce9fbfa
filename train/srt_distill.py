"""Self-distillation of SRT features (Lao et al., Sec. 3.2, Eq. 6) through the shared loop.

  python -m train.srt_distill --config configs/srt_distill.py --workdir /tmp/srt_distill

    min_w  sum_{x in D} || phi_w(x) - SRT(x, w_0) ||                                      (Eq. 6)

phi_w is the ViT's last-block token map (after the final LayerNorm, CLS dropped) and SRT(x, w_0) the mean over
the (2d+1)^2 shifts of the frozen original network w_0, at token resolution (`srjax.srt(..., output='token')`).
No labels are used: D is the (unlabelled) training images. The student starts from w_0. The targets are
computed inside the loss from the frozen copy, which the loop carries as `model_state['teacher']` (never
updated), under `stop_gradient`. The teacher w_0 itself is the `configs/srt_classifier.py` ViT, trained first
with the shared loop on the labelled subset (reloaded from `config.teacher_workdir` when it is there).

Loss options: 'mse' (mean over tokens and channels of the squared difference, the usual feature-distillation
loss) or 'norm' (Eq. 6 literally: the L2 norm of the whole difference map per image, averaged over the batch).
"""
from __future__ import annotations

import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from srjax import checks
from srjax.data.batches import batch_indices
from srjax.models import vit
from srjax.srt_lib import srt
from train import cli, loop, srt_classifier
from train.batches import eval_batches
from train.classifier import load_data
from train.optim import make_optimizer

LOSSES = ('mse', 'norm')


def train_teacher(config: ml_collections.ConfigDict) -> tuple[vit.ViT, Any]:
  """Trains the ViT w_0 with the shared loop (`loop.run` resumes or reloads config.teacher_workdir).

  Args:
    config: a `configs/srt_distill.py` config; `teacher` is the `configs/srt_classifier.py` ViT config and
      `teacher_workdir` its folder ('' trains in a temporary folder, deleted afterwards).

  Returns:
    (model, its 'params' collection as host arrays).

  Raises:
    ValueError: config.teacher.model is not 'vit'.
  """
  teacher_config = config.teacher
  checks.one_of('config.teacher.model', teacher_config.model, ('vit',))
  task = srt_classifier.build_task(teacher_config)
  with tempfile.TemporaryDirectory(prefix='srt_teacher_') as tmp:
    state = loop.run(teacher_config, config.teacher_workdir or tmp, task)
  train_set = load_data(teacher_config, 'train')
  model = srt_classifier.build_model(teacher_config, train_set.num_classes, train_set.images.shape[1:])
  return model, jax.device_get(state.params)


def distill_loss_fn(config: ml_collections.ConfigDict, model: vit.ViT):
  """The Eq. 6 objective at token resolution.

  Args:
    config: a `configs/srt_distill.py` config (loss, d, chunk_size).
    model: the teacher's (and student's) ViT.

  Returns:
    `fn(student params, teacher params, images [B, H, W, C]) -> (per-image loss [B], metrics)`.

  Raises:
    ValueError: an unknown config.loss, or config.d outside [0, patch size) (token-resolution SRT needs shifts
      smaller than the patch size).

  References:
    Lao et al., Sec. 3.2, Eq. 6.
  """
  checks.one_of('config.loss', config.loss, LOSSES)
  checks.integer('config.d', config.d, 0, model.patch_size - 1)
  feature = srt_classifier.feature_fn(model)
  chunk = config.chunk_size or None

  def per_image(diff):
    if config.loss == 'mse':
      return jnp.mean(jnp.square(diff), axis=(1, 2, 3))
    return jnp.sqrt(jnp.sum(jnp.square(diff), axis=(1, 2, 3)))

  def fn(params, teacher, images):
    target = jax.lax.stop_gradient(srt(feature, teacher, images, d=config.d, output='token', aggregate='mean',
                                       chunk_size=chunk))
    student = feature(params, images)
    single = jax.lax.stop_gradient(feature(teacher, images))
    per = per_image(student - target)
    return per, {'teacher_gap': per_image(single - target), 'target_norm': jnp.sqrt(jnp.mean(jnp.square(target)))}
  return fn


def build_task(config: ml_collections.ConfigDict) -> loop.Task:
  """The shared loop's task for Eq. 6: the student (initialised at w_0) regresses the frozen teacher's SRT tokens.

  Args:
    config: a `configs/srt_distill.py` config.

  Returns:
    `loop.Task` whose model_state carries the frozen teacher params; training reads images only (no labels),
    evaluation reports the test-set distillation loss and the teacher gap (the loss of w_0).

  Raises:
    ValueError: see `train_teacher` and `distill_loss_fn`; augment_shift < 0.

  References:
    Lao et al., Sec. 3.2, Eq. 6.
  """
  model, teacher = train_teacher(config)
  train_set = load_data(config.teacher, 'train')
  test_set = load_data(config.teacher, 'test')
  fn = distill_loss_fn(config, model)
  checks.integer('config.augment_shift', config.augment_shift, 0)

  def init(rng):
    del rng  # the student starts from w_0
    return teacher, {'teacher': teacher}

  def loss(params, model_state, batch, rng):
    images = srt_classifier.random_translate(rng, batch['image'], config.augment_shift)
    per, extra = fn(params, model_state['teacher'], images)
    return jnp.mean(per), ({'teacher_gap': jnp.mean(extra['teacher_gap']), 'target_norm': extra['target_norm']},
                           model_state)

  def evaluate(params, model_state, batch):
    per, extra = fn(params, model_state['teacher'], batch['image'])
    m = batch['mask']
    weight = jnp.maximum(m.sum(), 1.0)
    return {'loss': jnp.sum(per * m) / weight, 'teacher_gap': jnp.sum(extra['teacher_gap'] * m) / weight,
            'weight': m.sum()}

  def train_batch(step, process_index, process_count):
    idx = batch_indices(step, config.batch_size, len(train_set), seed=config.seed,
                        process_index=process_index, process_count=process_count)
    return {'image': train_set.images[idx]}  # no labels (Eq. 6 is label-free)

  return loop.Task(init=init, loss=loss, train_batch=train_batch,
                   optimizer=make_optimizer(config.optim, config.num_steps),
                   evaluate=evaluate,
                   eval_batches=lambda pi, pc: eval_batches(test_set, config.eval_batch_size, pi, pc))


if __name__ == '__main__':
  cli.main(build_task)
