"""The main job: the NSDE ConvNeXt (or its ConvNeXt baseline) on the synthetic EM-waveform spectrograms.

  python -m train.nsde --config configs/spectro.py [--config.model.kind=convnext] [--workdir DIR]

The default workdir is `workdirs/<model.kind>` (`workdirs/nsde`, `workdirs/convnext`).

Trains through the shared loop (`train/loop.py`), evaluating on the validation split every `eval_every` steps.
When it finishes it evaluates the test split (the NSDE's softmax averaged over `model.test_draws` draws), appends
a {'split': 'test'} record to `metrics.jsonl`, writes `test_metrics.json`, and prints one summary line. The
config is stored as `config.json` in the workdir, so `load_trained(workdir)` rebuilds the model of any workdir
this entry point (or `train`) wrote.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from srjax import checks
from srjax import data as srdata
from srjax import nsde
from srjax.data import spectro
from srjax.models import convnext
from srjax.models.apply_fn import takes_key
from train import cli, loop, state_checkpoint
from train import metrics as metrics_file
from train.batches import eval_batches, labelled_batches, masked_metrics
from train.optim import make_optimizer

KINDS = nsde.KINDS
TEST_FILE = 'test_metrics.json'


def load_data(config: ml_collections.ConfigDict, split: str) -> srdata.Dataset:
  """The config's 'train', 'val' or 'test' split: the synthetic spectrograms, or a prepared TFDS dataset.

  The TFDS path (data.source='tfds') reads data.tfds_name from data.tfds_dir with `srjax.data.tfds.load`;
  'val' and 'test' read the TFDS splits data.tfds_val_split and data.tfds_test_split. TFDS data carries no SNR,
  so extras['snr_db'] is NaN there.
  """
  d = config.data
  if d.source == 'tfds':
    tfds_split = {'train': 'train', 'val': d.tfds_val_split, 'test': d.tfds_test_split}[
        checks.one_of('split', split, ('train', 'val', 'test'))]
    ds = srdata.load('tfds', tfds_split, name=d.tfds_name, data_dir=d.tfds_dir)
    return dataclasses.replace(ds, extras={'snr_db': np.full(len(ds), np.nan, np.float32), **ds.extras})
  checks.one_of('data.source', d.source, ('spectro', 'tfds'))
  return spectro.load(split, num_examples=d.num_examples, test_fraction=d.test_fraction,
                      val_fraction=d.val_fraction, seed=config.seed, size=d.size, snr_db=(d.snr_low, d.snr_high))


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> convnext.ConvNeXt:
  """The config's ConvNeXt (the NSDE shares its params; its SDE is `nsde.from_config(config.model)`).

  Raises:
    ValueError: unknown model.kind, variant, depthwise, noise, solver or path; sigma < 0; noise 'attribution'
      (training has no per-example map).
  """
  m = config.model
  sde = nsde.from_config(m)
  if sde is not None and sde.noise.needs_map:
    checks.fail('model.noise', m.noise, "'brownian' or 'smoothed' for training ('attribution' needs a "
                'per-example map: pass one to srjax.nsde.apply at evaluation)')
  checks.integer('model.test_draws', m.test_draws, 1)
  return convnext.build(m.variant, num_classes, stem_patch=m.stem_patch, layer_scale_init=m.layer_scale_init,
                        drop_path_rate=m.drop_path_rate, depthwise=m.depthwise, input_mean=m.input_mean,
                        input_std=m.input_std)


def make_apply(config: ml_collections.ConfigDict, model: convnext.ConvNeXt, *, train: bool = False) -> Callable:
  """Hashable `(variables, x, key) -> logits` for one noise draw (`nsde.apply_fn_of`: the ConvNeXt, `sde` None,
  is `deterministic` unless `train` turns its stochastic depth on)."""
  return nsde.apply_fn_of(model, nsde.from_config(config.model), train=train)


def make_predict(config: ml_collections.ConfigDict, apply_fn: Callable) -> nsde.Predict:
  """Hashable `(variables, x, key) -> mean softmax over config.model.test_draws draws` (one draw for a
  deterministic model: more would repeat the same logits)."""
  return nsde.Predict(apply_fn, draws=int(config.model.test_draws) if takes_key(apply_fn) else 1)


def make_evaluate(predict: nsde.Predict, seed: int) -> Callable:
  """The loop's `Task.evaluate`: masked accuracy and loss (the negative log of the mean softmax over the
  test-time draws) of one batch; the draws come from key(seed + 1), the same for every batch and evaluation."""
  key = jax.random.key(seed + 1)

  def evaluate(params, model_state, batch):
    del model_state
    probs = predict({'params': params}, batch['image'], key)
    return masked_metrics(jnp.log(probs + 1e-12), batch['label'], batch['mask'])
  return evaluate


def build_task(config: ml_collections.ConfigDict) -> loop.Task:
  """The loop's Task: cross-entropy of one noise draw per step (noise on in training), validation metrics of
  the mean softmax over the test-time draws."""
  if config.data.source == 'spectro':   # refuse a size the model would crop before generating any data
    build_model(config, 1).check_input((1, config.data.size, config.data.size, 1))
  train_set = load_data(config, 'train')
  val_set = load_data(config, 'val')
  model = build_model(config, train_set.num_classes)
  train_apply = make_apply(config, model, train=True)
  predict = make_predict(config, make_apply(config, model))

  def init(rng):
    return model.init(rng, jnp.zeros((1,) + train_set.images.shape[1:], jnp.float32))['params'], {}

  def loss(params, model_state, batch, rng):
    noise_rng, _ = jax.random.split(rng)   # the NSDE's draw of earlier versions (bitwise resume of old runs)
    logits = train_apply({'params': params}, batch['image'], noise_rng)
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return xent, ({'accuracy': accuracy}, model_state)

  return loop.Task(init=init, loss=loss, train_batch=labelled_batches(train_set, config),
                   optimizer=make_optimizer(config.optim, config.num_steps),
                   evaluate=make_evaluate(predict, int(config.seed)),
                   eval_batches=lambda pi, pc: eval_batches(val_set, config.eval_batch_size, pi, pc))


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained run, ready for evaluation.

  Attributes:
    config: the run's (locked) ConfigDict.
    model: the `ConvNeXt` (the NSDE shares its params).
    variables: {'params': ...} of host NumPy arrays.
    apply_fn: hashable `(variables, x, rng) -> [B, K] logits` for one noise draw (the ConvNeXt ignores rng).
    predict: hashable `(variables, x, rng) -> [B, K]` softmax averaged over config.model.test_draws draws
      (one for the ConvNeXt).
    test_set: the test split, with extras['snr_db'] (NaN for TFDS data).
    step: the checkpoint's step.
  """
  config: ml_collections.ConfigDict
  model: convnext.ConvNeXt
  variables: dict[str, Any]
  apply_fn: Callable
  predict: Callable
  test_set: srdata.Dataset
  step: int


def default_workdir(config: ml_collections.ConfigDict) -> str:
  """`workdirs/<model.kind>`: the NSDE and its ConvNeXt baseline never share a default workdir."""
  return os.path.join('workdirs', str(config.model.kind))


def _trained(config: ml_collections.ConfigDict, params: Any, step: int) -> Trained:
  test_set = load_data(config, 'test')
  model = build_model(config, test_set.num_classes)
  apply_fn = make_apply(config, model)
  return Trained(config=config, model=model, variables={'params': params}, apply_fn=apply_fn,
                 predict=make_predict(config, apply_fn), test_set=test_set, step=int(step))


def load_trained(workdir: str, config: ml_collections.ConfigDict | None = None) -> Trained:
  """Reloads the latest checkpoint of a `python -m train.nsde` workdir (for evaluating a stored run).

  Args:
    workdir: the run's workdir.
    config: its config; default the workdir's config.json.

  Returns:
    A `Trained`.

  Raises:
    FileNotFoundError: the workdir holds no checkpoint (or no config.json and no config was given).
  """
  config = loop.read_config(workdir) if config is None else config
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory) or not any(n.isdigit() for n in os.listdir(directory)):
    raise FileNotFoundError(f'{workdir} holds no checkpoint (no {directory}/<step>): train it first with '
                            f'python -m train.nsde --config configs/spectro.py --workdir {workdir}')
  tree, step = state_checkpoint.load_numpy(workdir)
  return _trained(config, tree['params'], step)


def test_metrics(trained: Trained) -> dict[str, float]:
  """Accuracy and loss (negative log of the mean softmax over the test-time draws) on the test split: the
  loop's evaluation (`loop.evaluate`, the validation's `make_evaluate`) on padded, masked batches of
  config.eval_batch_size."""
  config = trained.config
  batches = eval_batches(trained.test_set, int(config.eval_batch_size), jax.process_index(), jax.process_count())
  means = loop.evaluate(make_evaluate(trained.predict, int(config.seed)), trained.variables['params'], {}, batches)
  return {'accuracy': means['accuracy'], 'loss': means['loss'], 'examples': len(trained.test_set)}


def _train_and_test(config: ml_collections.ConfigDict, workdir: str) -> tuple[Trained, dict[str, Any]]:
  start = time.perf_counter()
  state = loop.run(config, workdir, build_task(config))
  seconds = time.perf_counter() - start
  trained = _trained(config, jax.device_get(state.params), int(state.step))
  path = os.path.join(workdir, TEST_FILE)
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    if previous.get('step') == trained.step:
      return trained, previous
  record = {'step': trained.step, 'split': 'test', **test_metrics(trained), 'train_seconds': seconds}
  if jax.process_index() == 0:
    metrics_file.MetricsWriter(workdir, trained.step).write(record)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(record, f, indent=2)
    os.replace(tmp, path)
  return trained, record


def train(config: ml_collections.ConfigDict, workdir: str) -> Trained:
  """The main job, as the command line runs it: trains (or resumes, or reuses a finished run) with the shared
  loop, which stores the config in the workdir and refuses a workdir holding another config's run; then
  evaluates the test split with the state the loop returns and records it (a {'split': 'test'} line in
  metrics.jsonl and test_metrics.json; a finished run whose record is for this step keeps it).

  Returns:
    The trained run.
  """
  return _train_and_test(config, workdir)[0]


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
  """`train`, then the command line's summary line (test accuracy and loss, wall time, where the files are)."""
  start = time.perf_counter()
  trained, record = _train_and_test(config, workdir)
  seconds = time.perf_counter() - start
  return (f'train.nsde {config.model.kind} ({config.model.variant}): test accuracy {record["accuracy"]:.4f}, '
          f'test loss {record["loss"]:.4f} on {record["examples"]} examples at step {trained.step}; wall '
          f'{seconds:.0f} s; checkpoints {os.path.join(workdir, "checkpoints")}, metrics '
          f'{os.path.join(workdir, "metrics.jsonl")}')


if __name__ == '__main__':
  cli.main(build_task, run=run, default_workdir=default_workdir)
