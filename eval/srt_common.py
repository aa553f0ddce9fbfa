"""Helpers shared by the SRT eval scripts: train (or resume) a backbone with the shared loop, batched apply,
and Markdown/PNG output."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import srt_classifier as classifier_config
from srjax import data as srdata
from train import loop, srt_classifier


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
    """What the ResNet apply_fns take ({'params', **model_state})."""
    return srt_classifier.variables_of(self.params, self.model_state)

  @property
  def feature_params(self) -> Any:
    """The first argument of `srt_classifier.feature_fn(model)`: ViT -> params, ResNet -> variables."""
    return self.params if self.config.model == 'vit' else self.variables


def classifier_config_for(preset: str | None, overrides: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
  """`configs/srt_classifier.py` with a preset and field overrides (dotted names)."""
  config = classifier_config.get_config(preset)
  with config.unlocked():
    for dotted, value in (overrides or {}).items():
      target = config
      *parents, leaf = dotted.split('.')
      for name in parents:
        target = target[name]
      target[leaf] = value
  return config


def train_backbone(config: ml_collections.ConfigDict, workdir: str | None = None) -> Backbone:
  """Trains `train.srt_classifier`'s task with the shared loop (or resumes/reloads it from `workdir`).

  Args:
    config: an `configs/srt_classifier.py` config.
    workdir: checkpoint folder; an existing finished run is reloaded without training. None trains in a
      temporary folder that is removed afterwards.

  Returns:
    The trained `Backbone` (host NumPy arrays).
  """
  task = srt_classifier.build_task(config)
  tmp = None
  if workdir is None:
    tmp = workdir = tempfile.mkdtemp(prefix='srt_backbone_')
  try:
    state = loop.run(config, workdir, task)
    acc = final_eval_accuracy(workdir, config.num_steps)
  finally:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)
  train_set = srt_classifier.load_data(config, 'train')
  test_set = srt_classifier.load_data(config, 'test')
  model = srt_classifier.build_model(config, train_set.num_classes, train_set.images.shape[1:])
  return Backbone(model, jax.device_get(state.params), jax.device_get(state.model_state), train_set, test_set,
                  config, acc)


def final_eval_accuracy(workdir: str, step: int) -> float:
  """The test accuracy the loop logged at `step` (it always evaluates at the last step) in metrics.jsonl."""
  path = os.path.join(workdir, 'metrics.jsonl')
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  evals = [r for r in records if r.get('split') == 'eval' and r['step'] == step]
  if not evals:
    raise ValueError(f'{path} has no eval record at step {step}')
  return float(evals[-1]['accuracy'])


def batched(fn: Callable[[np.ndarray], Any], x: np.ndarray, batch_size: int) -> Any:
  """Applies `fn` to consecutive slices of x (the last one zero-padded to `batch_size`, so one compile) and
  concatenates the results along axis 0."""
  outs = []
  n = len(x)
  for start in range(0, n, batch_size):
    chunk = x[start:start + batch_size]
    k = len(chunk)
    if k < batch_size:
      chunk = np.concatenate([chunk, np.zeros((batch_size - k,) + chunk.shape[1:], chunk.dtype)])
    outs.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:k], fn(chunk)))
  return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *outs)


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
  def fmt(v):
    if isinstance(v, float):
      return f'{v:.4f}'
    return str(v)
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  lines += ['| ' + ' | '.join(fmt(r.get(c, '')) for c in columns) + ' |' for r in rows]
  return '\n'.join(lines)


def command_line(module: str, argv: list[str] | None) -> str:
  """'Command: `python -m <module> <args>`' for results.md (argv None means the process's own arguments)."""
  args = sys.argv[1:] if argv is None else list(argv)
  return f'Command: `python -m {module} {" ".join(args)}`'.rstrip()


def prepare_out(out: str) -> str:
  os.makedirs(out, exist_ok=True)
  return out


def pixel_upsample(f: jax.Array, size: tuple[int, int], method: str) -> jax.Array:
  """[B, h, w, C] -> [B, H, W, C] by 'nearest' (block replication, the SRT d=0 map) or 'bilinear'
  (jax.image.resize 'linear', half-pixel centres)."""
  b, h, w, c = f.shape
  if method == 'nearest':
    py, px = size[0] // h, size[1] // w
    return jnp.repeat(jnp.repeat(f, py, axis=1), px, axis=2)
  if method == 'bilinear':
    return jax.image.resize(f, (b, size[0], size[1], c), 'linear')
  raise ValueError(f"method must be 'nearest' or 'bilinear', got {method!r}")
