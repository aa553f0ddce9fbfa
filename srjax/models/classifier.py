"""Small image classifiers for the shared loop's smoke runs and the SR / positive-noise experiments."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from srjax import checks


class MLP(nn.Module):
  """A ReLU multilayer perceptron on flattened images.

  Input [B, H, W, C] float32; output logits [B, num_classes].
  """
  num_classes: int = 10
  hidden: Sequence[int] = (256, 128)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)


class CNN(nn.Module):
  """Two 3x3 conv + ReLU + 2x2 average-pool stages, then a dense head on the flattened map.

  Input [B, H, W, C] float32; output logits [B, num_classes]. `features(x)` returns the last
  feature map [B, H/4, W/4, widths[-1]].
  """
  num_classes: int = 10
  widths: Sequence[int] = (16, 32)

  def setup(self):
    self.convs = [nn.Conv(w, (3, 3)) for w in self.widths]
    self.head = nn.Dense(self.num_classes)

  def features(self, x: jax.Array) -> jax.Array:
    for conv in self.convs:
      x = nn.avg_pool(nn.relu(conv(x)), (2, 2), strides=(2, 2))
    return x

  def __call__(self, x: jax.Array) -> jax.Array:
    features = self.features(x)
    return self.head(features.reshape(features.shape[0], -1))


MODELS = {'mlp': MLP, 'cnn': CNN}


def build(name: str, num_classes: int, **kwargs) -> nn.Module:
  """Returns the classifier `name` ('mlp' or 'cnn')."""
  return MODELS[checks.one_of('model name', name, MODELS)](num_classes=num_classes, **kwargs)
