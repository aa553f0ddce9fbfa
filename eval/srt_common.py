"""Helpers shared by the SRT eval scripts: the backbone trained (or reloaded) through the eval scaffold, batched
apply, and nearest / bilinear upsampling of feature maps."""
from __future__ import annotations

import dataclasses
import tempfile
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import common as config_common
from configs import srt_classifier as classifier_config
from eval import scaffold
from srjax import checks
from srjax import data as srdata
from srjax.data.batches import map_batches
from train import metrics, srt_classifier


@dataclasses.dataclass
class Backbone:
  """A trained classifier: the module, its trained params / model_state, and the data splits it used."""
  model: Any
  params: Any
  model_state: Any
  train_set: srdata.Dataset
  test_set: srdata.Dataset
  config: ml_collections.ConfigDict
  test_accuracy: float

  @property
  def variables(self) -> dict[str, Any]:
    """The variables dict {'params', **model_state} every srjax apply_fn takes (see `srjax.models`)."""
    return srt_classifier.variables_of(self.params, self.model_state)


def classifier_config_for(preset: str | None,
                          overrides: dict[str, Any] | Sequence[str] | None = None,
                          more: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """`configs/srt_classifier.py` with a preset, then dotted overrides (`configs.common.override`).

  Args:
    preset: a preset name of `configs/srt_classifier.py`, or None.
    overrides: {'field.path': value} or 'field.path=value' strings.
    more: further 'field.path=value' strings applied after (the scaffold's --set).

  Returns:
    The locked config.
  """
  config = classifier_config.get_config(preset)
  config_common.override(config, overrides or {})
  return config_common.override(config, list(more))


def train_backbone(config: ml_collections.ConfigDict, workdir: str | None = None) -> Backbone:
  """Trains `train.srt_classifier`'s task with the shared loop, or reloads a finished run in `workdir`.

  Args:
    config: a `configs/srt_classifier.py` config.
    workdir: checkpoint folder (a partial run resumes, a finished one is reloaded); None trains in a temporary
      folder that is removed afterwards.

  Returns:
    The trained `Backbone` (host NumPy arrays), with the test accuracy the loop logged at the last step.
  """
  with tempfile.TemporaryDirectory(prefix='srt_backbone_') as tmp:
    run = scaffold.train_or_reload(srt_classifier.build_task, config, workdir or tmp)
    acc = float(metrics.last_eval(workdir or tmp, run.step)['accuracy'])
  train_set = srt_classifier.load_data(config, 'train')
  test_set = srt_classifier.load_data(config, 'test')
  model = srt_classifier.build_model(config, train_set.num_classes, train_set.images.shape[1:])
  return Backbone(model, run.params, run.model_state, train_set, test_set, config, acc)


def batched(fn: Callable[[np.ndarray], Any], x: np.ndarray, batch_size: int) -> Any:
  """Applies `fn` to consecutive slices of x (the last one zero-padded to `batch_size`, so one compile) and
  concatenates the results along axis 0."""
  return map_batches(lambda chunk, i: fn(chunk), (x,), batch_size)


def pixel_upsample(f: jax.Array, size: tuple[int, int], method: str) -> jax.Array:
  """[B, h, w, C] -> [B, H, W, C] by 'nearest' (block replication, the SRT d=0 map) or 'bilinear'
  (jax.image.resize 'linear', half-pixel centres)."""
  b, h, w, c = f.shape
  if method == 'nearest':
    py, px = size[0] // h, size[1] // w
    return jnp.repeat(jnp.repeat(f, py, axis=1), px, axis=2)
  if method == 'bilinear':
    return jax.image.resize(f, (b, size[0], size[1], c), 'linear')
  checks.fail('method', method, "'nearest' or 'bilinear'")
