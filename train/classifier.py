"""A small MLP/CNN classifier on the embedded MNIST subset (or sklearn digits, or TFDS), through the shared loop.

  python -m train.classifier --config configs/classifier.py --workdir /tmp/clf
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import ml_collections
import optax

from srjax import data as srdata
from srjax.models import classifier
from train import cli, loop
from train.batches import eval_batches, labelled_batches, masked_metrics
from train.optim import make_optimizer


def load_data(config: ml_collections.ConfigDict, split: str) -> srdata.Dataset:
  """The config's dataset split (embedded sources shuffle deterministically with config.seed)."""
  if config.data.source == 'tfds':
    return srdata.load('tfds', split, name=config.data.tfds_name, data_dir=config.data.tfds_dir)
  kwargs = {'num_examples': config.data.num_examples} if 'num_examples' in config.data else {}
  return srdata.load(config.data.source, split, test_fraction=config.data.test_fraction, seed=config.seed,
                     **kwargs)


def classification_task(config: ml_collections.ConfigDict, train_set: srdata.Dataset, test_set: srdata.Dataset,
                        init: Callable, logits_fn: Callable) -> loop.Task:
  """The loop's Task for a labelled image classifier trained with cross-entropy (shared by the entry points).

  Args:
    config: the entry point's config (batch sizes, optimizer, seed, schedule).
    train_set: the training split.
    test_set: the split evaluated every `config.eval_every` steps (masked, padded batches).
    init: rng -> (params, model_state).
    logits_fn: (params, model_state, images [B, H, W, C], rng, train) -> (logits [B, K], new model_state); rng is
      the step's key in training and None in evaluation.

  Returns:
    The `loop.Task` (training metrics 'loss' and 'accuracy'; evaluation `masked_metrics`).
  """
  def loss(params, model_state, batch, rng):
    logits, new_state = logits_fn(params, model_state, batch['image'], rng, True)
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return xent, ({'accuracy': accuracy}, dict(new_state))

  def evaluate(params, model_state, batch):
    logits, _ = logits_fn(params, model_state, batch['image'], None, False)
    return masked_metrics(logits, batch['label'], batch['mask'])

  return loop.Task(init=init, loss=loss, train_batch=labelled_batches(train_set, config),
                   optimizer=make_optimizer(config.optim, config.num_steps), evaluate=evaluate,
                   eval_batches=lambda pi, pc: eval_batches(test_set, config.eval_batch_size, pi, pc))


def build_task(config: ml_collections.ConfigDict) -> loop.Task:
  """The loop's Task for `configs/classifier.py`: an MLP or CNN (`config.model`) trained with cross-entropy.

  Args:
    config: a `configs/classifier.py` config (data source, model name, optimizer, batch sizes).

  Returns:
    The `loop.Task`: params initialised from the key, no model state, deterministic batches of the config's
    source, and masked accuracy/loss on its test split.
  """
  train_set = load_data(config, 'train')
  test_set = load_data(config, 'test')
  model = classifier.build(config.model, train_set.num_classes)

  def init(rng):
    return model.init(rng, jnp.zeros((1,) + train_set.images.shape[1:], jnp.float32))['params'], {}

  def logits_fn(params, model_state, images, rng, train):
    del rng, train
    return model.apply({'params': params}, images), model_state

  return classification_task(config, train_set, test_set, init, logits_fn)


if __name__ == '__main__':
  cli.main(build_task)
