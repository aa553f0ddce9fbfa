"""SR in classifiers: the paper's LSTM (or a CNN / MLP) on MNIST with a no-signal class, through the shared loop.

  python -m train.lstm_sr --config configs/lstm_sr.py --workdir /tmp/lstm_sr
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from srjax import checks
from srjax import data as srdata
from srjax import sweep
from srjax.data.no_signal import with_no_signal
from srjax.models import classifier, lstm
from srjax.models.apply_fn import ModuleApply
from train import batches
from train import classifier as clf
from train import cli, loop
from train.optim import make_optimizer

MODEL_KINDS = ('lstm', 'cnn', 'mlp')
TRAIN_NOISES = ('none',) + sweep.NOISES


def build_model(model: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """The classifier of `config.model`: the paper's LSTM, or the CNN / MLP of `srjax.models.classifier`.

  Raises:
    ValueError: unknown model.kind.
  """
  kind = checks.one_of('model.kind', model.kind, MODEL_KINDS)
  if kind == 'lstm':
    return lstm.LSTMClassifier(num_classes=num_classes, units=model.units, seq_len=model.seq_len,
                               activation=model.activation, gate_activation=model.gate_activation,
                               unit_forget_bias=model.unit_forget_bias)
  if kind == 'cnn':
    return classifier.CNN(num_classes=num_classes, widths=tuple(model.cnn_widths))
  return classifier.MLP(num_classes=num_classes, hidden=tuple(model.mlp_hidden))


def repeats(model: ml_collections.ConfigDict) -> int | None:
  """Presentations of each image that get their own noise: seq_len for the LSTM, None for the CNN / MLP
  (the `repeats` argument of `srjax.sweep.sr_curves`)."""
  return model.seq_len if model.kind == 'lstm' else None


def apply_fn(config: ml_collections.ConfigDict, num_classes: int) -> ModuleApply:
  """The hashable apply_fn(variables, x) -> logits of the config's model."""
  return ModuleApply(build_model(config.model, num_classes))


def load_data(config: ml_collections.ConfigDict, split: str) -> srdata.Dataset:
  """The config's split, with the no-signal class appended when `config.data.no_signal`."""
  dataset = clf.load_data(config, split)
  if config.data.no_signal:
    dataset = with_no_signal(dataset, config.data.no_signal_ratio)
  return dataset


def build_task(config: ml_collections.ConfigDict) -> loop.Task:
  """The loop's task: clean (or, with `train_noise`, noisy) cross-entropy training of the config's model.

  Training noise (the paper's open question, Sec. 4): each image gets a level s ~ U(0, train_noise.level) and
  the input clip(x + s * u, 0, 1) with u a `srjax.sweep.standard_noise` draw, independent per presentation for
  the LSTM, as in the sweep.
  """
  checks.one_of('train_noise.kind', config.train_noise.kind, TRAIN_NOISES)
  checks.in_range('train_noise.level', config.train_noise.level, 0.0, 1.0)
  train_set = load_data(config, 'train')
  test_set = load_data(config, 'test')
  model = build_model(config.model, train_set.num_classes)
  steps = repeats(config.model)

  def init(rng):
    return model.init(rng, jnp.zeros((1,) + train_set.images.shape[1:], jnp.float32))['params'], {}

  def noisy(images, rng):
    if config.train_noise.kind == 'none':
      return images
    shape = images.shape if steps is None else (images.shape[0], steps) + images.shape[1:]
    level_key, noise_key = jax.random.split(rng)
    level = jax.random.uniform(level_key, (images.shape[0],) + (1,) * (len(shape) - 1)) * config.train_noise.level
    u = sweep.standard_noise(noise_key, shape, config.train_noise.kind)
    x = images if steps is None else images[:, None]
    return sweep.perturb(x, u, 1.0, level)

  def loss(params, model_state, batch, rng):
    logits = model.apply({'params': params}, noisy(batch['image'], rng))
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return xent, ({'accuracy': accuracy}, model_state)

  def evaluate(params, model_state, batch):
    del model_state
    return batches.masked_metrics(model.apply({'params': params}, batch['image']), batch['label'], batch['mask'])

  return loop.Task(init=init, loss=loss, train_batch=batches.labelled_batches(train_set, config),
                   optimizer=make_optimizer(config.optim, config.num_steps), evaluate=evaluate,
                   eval_batches=lambda pi, pc: batches.eval_batches(test_set, config.eval_batch_size, pi, pc))


if __name__ == '__main__':
  cli.main(build_task)
