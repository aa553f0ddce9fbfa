"""Trains the backbones of the SRT experiments (a small ViT or a CIFAR-style ResNet) through the shared loop.

  python -m train.srt_classifier --config configs/srt_classifier.py --workdir /tmp/srt_vit

The eval scripts (`eval/srt_classify.py`, `eval/srt_segmentation.py`, `eval/srt_visualize.py`) train or reload
this task through `eval.scaffold.train_or_reload`; the self-distillation entry point (`train/srt_distill.py`)
trains it as its teacher with `loop.run`.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from srjax import checks
from srjax import data as srdata
from srjax import srt_lib
from srjax.models import resnet, vit
from train import cli, loop
from train.classifier import classification_task, load_data

MODELS = ('vit', 'resnet')


def build_model(config: ml_collections.ConfigDict, num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
  """The config's backbone: `vit.ViT` (no CLS position embedding; posemb grid from the image size) or a ResNet.

  Args:
    config: a `configs/srt_classifier.py` config.
    num_classes: logits.
    image_shape: (H, W, C) of the training images.

  Returns:
    The linen module (untrained).

  Raises:
    ValueError: an unknown config.model, or a patch size that does not divide the image size.
  """
  checks.one_of('config.model', config.model, MODELS)
  if config.model == 'vit':
    p = config.vit.patch_size
    if image_shape[0] % p or image_shape[1] % p:
      checks.fail('config.vit.patch_size', p, f'a divisor of the image size {tuple(image_shape[:2])}')
    return vit.ViT(num_classes=num_classes, patch_size=p, width=config.vit.width, depth=config.vit.depth,
                   mlp_dim=config.vit.mlp_dim, num_heads=config.vit.num_heads,
                   posemb_grid=(image_shape[0] // p, image_shape[1] // p))
  return resnet.cifar_resnet(config.resnet.depth, num_classes, width=config.resnet.width, norm=config.resnet.norm)


def variables_of(params: Any, model_state: Any) -> dict[str, Any]:
  """The linen variables dict {'params', **model_state} (the loop keeps the two apart; the models take both)."""
  return {'params': params, **model_state}


def feature_fn(model: nn.Module) -> Callable[[Any, jax.Array], jax.Array]:
  """Hashable apply_fn for the last feature map before the head (ViT: last block after LayerNorm, no CLS).

  Its first argument is the variables dict (`variables_of(params, model_state)`), as for every srjax model; a
  ViT also takes its bare params (see `srjax.models`). It declares its stride (patch size or stage stride).
  """
  return vit.features(model, -1) if isinstance(model, vit.ViT) else resnet.features(model, -1)


def random_translate(rng: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
  """Shifts each image by an independent integer offset in [-max_shift, max_shift]^2, zero fill.

  Args:
    rng: PRNG key.
    images: [B, H, W, C].
    max_shift: largest shift in pixels (static int >= 0).

  Returns:
    [B, H, W, C], out[b, y, x] = images[b, y - dy_b, x - dx_b] (0 outside), via `srjax.srt_lib.shift`.
  """
  if max_shift == 0:
    return images
  offs = jax.random.randint(rng, (images.shape[0], 2), -max_shift, max_shift + 1)
  return srt_lib.shift(images, offs, 'zeros', max_shift=max_shift)


def build_task(config: ml_collections.ConfigDict) -> loop.Task:
  """The shared loop's task for an SRT backbone: cross-entropy on randomly translated labelled images.

  Args:
    config: a `configs/srt_classifier.py` config (model vit or resnet; augment_shift >= 0 pixels).

  Returns:
    `loop.Task` with params and, for a BatchNorm ResNet, model_state {'batch_stats': ...}; evaluation reports
    the test accuracy.

  Raises:
    ValueError: an unknown config.model, a patch size not dividing the image, or augment_shift < 0.
  """
  train_set: srdata.Dataset = load_data(config, 'train')
  test_set: srdata.Dataset = load_data(config, 'test')
  model = build_model(config, train_set.num_classes, train_set.images.shape[1:])
  has_bn = config.model == 'resnet' and config.resnet.norm == 'batch'
  checks.integer('config.augment_shift', config.augment_shift, 0)

  def init(rng):
    v = model.init(rng, jnp.zeros((1,) + train_set.images.shape[1:], jnp.float32))
    return v['params'], ({'batch_stats': v['batch_stats']} if has_bn else {})

  def logits_fn(params, model_state, x, rng, train):
    if train:
      x = random_translate(rng, x, config.augment_shift)
    if has_bn:
      if train:
        return model.apply(variables_of(params, model_state), x, train=True, mutable=['batch_stats'])
      return model.apply(variables_of(params, model_state), x), model_state
    return model.apply({'params': params}, x), model_state

  return classification_task(config, train_set, test_set, init, logits_fn)


if __name__ == '__main__':
  cli.main(build_task)
