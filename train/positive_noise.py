"""Trains a ResNet or ViT with latent noise injected into one layer (positive noise, NoisyNN) through the shared loop.

  python -m train.positive_noise --config configs/positive_noise.py --workdir /tmp/pn_resnet

The model files are used as they are; `srjax.inject` rewrites one layer's input while the loss and the evaluation
run. `eval/positive_noise.py` builds this task for its comparison, ablations and batch-composition audit.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from srjax import inject
from train import cli, loop
from train.classifier import classification_task, load_data
from train.srt_classifier import build_model, variables_of


def noise_of(config: ml_collections.ConfigDict) -> inject.Noise:
  """The config's `srjax.inject.Noise` (kind, strength, layer, axis)."""
  n = config.noise
  return inject.Noise(kind=n.kind, strength=float(n.strength), layer=n.layer, axis=n.axis)


def has_batch_norm(config: ml_collections.ConfigDict) -> bool:
  return config.model == 'resnet' and config.resnet.norm == 'batch'


def logits_fn(model: Any, config: ml_collections.ConfigDict, params: Any, model_state: Any, x: jax.Array, *,
              train: bool, noise: inject.Noise, key: jax.Array | None) -> tuple[jax.Array, Any]:
  """(logits [B, K], new model_state) of `model` with `noise` injected (kind 'none' for the plain model).

  Args:
    model: the ResNet or ViT of `build_model`.
    config: the run's config.
    params, model_state: the loop's state ({} or {'batch_stats'}).
    x: images [B, H, W, C].
    train: BatchNorm in training mode (statistics updated) or inference mode.
    noise: what to inject.
    key: PRNG key for the random kinds.
  """
  bn = has_batch_norm(config)
  variables = variables_of(params, model_state) if bn else {'params': params}
  if bn and train:
    return inject.apply(model, variables, x, noise=noise, key=key, train=True, mutable=['batch_stats'])
  return inject.apply(model, variables, x, noise=noise, key=key), model_state


def build_task(config: ml_collections.ConfigDict) -> loop.Task:
  """The loop task: cross-entropy of the noise-injected model (noise.train) on shuffled training batches;
  evaluation on the test split in its stored order, with the noise when noise.test (random kinds draw from a
  fixed key, the same for every batch)."""
  train_set = load_data(config, 'train')
  test_set = load_data(config, 'test')
  model = build_model(config, train_set.num_classes, train_set.images.shape[1:])
  spec = noise_of(config)
  inject.resolve_layer(model, spec.layer)
  plain = inject.Noise(kind='none', strength=0.0)
  train_noise = spec if config.noise.train else plain
  test_noise = spec if config.noise.test else plain
  eval_key = jax.random.key(config.seed + 1)

  def init(rng):
    v = model.init(rng, jnp.zeros((1,) + train_set.images.shape[1:], jnp.float32))
    return v['params'], ({'batch_stats': v['batch_stats']} if has_batch_norm(config) else {})

  def task_logits(params, model_state, images, rng, train):
    return logits_fn(model, config, params, model_state, images, train=train,
                     noise=train_noise if train else test_noise, key=rng if train else eval_key)

  return classification_task(config, train_set, test_set, init, task_logits)


if __name__ == '__main__':
  cli.main(build_task)
