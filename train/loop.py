"""The one training engine shared by every entry point.

`run(config, workdir, task)` builds a mesh over all devices (batch split on axis 'data', params and optimizer
state replicated), jit-compiles a train step that donates the state, resumes from the latest orbax checkpoint in
`workdir`, saves every `config.checkpoint_every` steps and at the end, evaluates every `config.eval_every`
steps, and appends metrics to `workdir/metrics.jsonl` with a tqdm bar. The same code runs on one CPU, on
simulated CPU devices, on a GPU, on a TPU slice and on several hosts (see `train/distributed.py`).

Determinism: the root key is `jax.random.key(config.seed)`, each step folds in the step number, and the task's
batches are a pure function of the step, so a resumed run ends with exactly the params of an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Iterable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from srjax import checks
from train import checkpoint
from train.metrics import MetricsWriter

Params = Any
ModelState = Any
Batch = dict[str, np.ndarray]

MAX_QUEUED_STEPS = 32  # CPU collectives hang when ~50+ steps are queued without a host sync.


@dataclasses.dataclass(frozen=True)
class Task:
  """What an entry point gives the loop.

  Attributes:
    init: rng -> (params, model_state); model_state is {} for models without mutable state.
    loss: (params, model_state, batch, rng) -> (scalar loss, (metrics dict of scalars, new model_state)).
    train_batch: (step, process_index, process_count) -> this process's shard of the global batch: a dict of
      NumPy arrays whose leading dim is config.batch_size // process_count. A pure function of step.
    optimizer: the optax transformation.
    evaluate: (params, model_state, batch) -> dict of per-batch mean metrics; a 'weight' entry, if present,
      weights the batch in the average (use it for padded batches).
    eval_batches: (process_index, process_count) -> iterable of batches, each with a leading dim divisible by
      the local device count.
  """
  init: Callable[[jax.Array], tuple[Params, ModelState]]
  loss: Callable[[Params, ModelState, Batch, jax.Array], tuple[jax.Array, tuple[dict, ModelState]]]
  train_batch: Callable[[int, int, int], Batch]
  optimizer: optax.GradientTransformation
  evaluate: Callable[[Params, ModelState, Batch], dict] | None = None
  eval_batches: Callable[[int, int], Iterable[Batch]] | None = None


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Params
  opt_state: Any
  model_state: ModelState


def make_mesh() -> jax.sharding.Mesh:
  """A 1D mesh over every device of every process, axis 'data'.

  The axis is `Auto`: XLA propagates shardings inside the step, so model code written for one device (a class
  token concatenated to batch-sharded patches, SRT's shifted copies) runs unchanged. With JAX's newer default,
  `Explicit` axes, such code raises ShardingTypeError unless every op spells out its sharding.
  """
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def shard_batch(batch: Batch, sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles the global batch from each process's local shard (leading axis split on 'data')."""
  local_devices = jax.local_device_count()
  for key, value in batch.items():
    if np.shape(value)[0] % local_devices:
      raise ValueError(f'batch[{key!r}] has {np.shape(value)[0]} examples on this process, not divisible by its '
                       f'{local_devices} devices: use a batch size (or eval_batch_size) that is a multiple of '
                       f'{jax.device_count()}')
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def init_state(task: Task, rng: jax.Array, replicated: NamedSharding) -> TrainState:
  """Initial params, optimizer state and model state, replicated over the mesh."""
  def init(rng):
    params, model_state = task.init(rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=task.optimizer.init(params), model_state=model_state)
  return jax.jit(init, out_shardings=replicated)(rng)


def make_train_step(task: Task, train_rng: jax.Array, mesh: jax.sharding.Mesh):
  """The jitted step (state, batch) -> (state, metrics): state replicated and donated, batch split on 'data'."""
  replicated = NamedSharding(mesh, P())

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(train_rng, state.step)
    grad_fn = jax.value_and_grad(task.loss, has_aux=True)
    (loss, (metrics, model_state)), grads = grad_fn(state.params, state.model_state, batch, rng)
    updates, opt_state = task.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state)
    return new_state, {'loss': loss, **metrics}

  return jax.jit(train_step, in_shardings=(replicated, NamedSharding(mesh, P('data'))),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def _validate(config: ml_collections.ConfigDict) -> None:
  for name in ('num_steps', 'batch_size', 'log_every', 'eval_every', 'checkpoint_every', 'keep'):
    checks.integer(f'config.{name}', config[name], 1)
  if config.batch_size % jax.device_count():
    checks.fail('config.batch_size', config.batch_size, f'a multiple of the device count {jax.device_count()}')


def _mean_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
  weights = np.asarray([float(r.get('weight', 1.0)) for r in records])
  keys = [k for k in records[0] if k != 'weight']
  total = max(weights.sum(), 1e-12)
  return {k: float(np.sum([float(r[k]) * w for r, w in zip(records, weights)]) / total) for k in keys}


def run(config: ml_collections.ConfigDict, workdir: str, task: Task) -> TrainState:
  """Trains `task` for `config.num_steps` steps in `workdir`, resuming from its latest checkpoint.

  Args:
    config: a ConfigDict with the fields of `configs.common.loop_config()`.
    workdir: folder for checkpoints/ and metrics.jsonl; shared by all processes.
    task: the model, loss, data and optimizer.

  Returns:
    The final TrainState (replicated arrays).
  """
  _validate(config)
  os.makedirs(workdir, exist_ok=True)
  mesh = make_mesh()
  replicated = NamedSharding(mesh, P())
  data_sharding = NamedSharding(mesh, P('data'))
  root = jax.random.key(config.seed)
  init_rng, train_rng = jax.random.split(root)

  state = init_state(task, init_rng, replicated)
  mngr = checkpoint.manager(workdir, keep=config.keep)
  restored = checkpoint.restore_latest(mngr, state)
  start = 0
  if restored is not None:
    state, start = restored
  writer = MetricsWriter(workdir, start)

  train_step = make_train_step(task, train_rng, mesh)
  eval_step = None
  if task.evaluate is not None and task.eval_batches is not None:
    eval_step = jax.jit(task.evaluate, in_shardings=(replicated, replicated, data_sharding),
                        out_shardings=replicated)

  def evaluate(step: int) -> None:
    if eval_step is None:
      return
    records = [jax.device_get(eval_step(state.params, state.model_state, shard_batch(b, data_sharding)))
               for b in task.eval_batches(jax.process_index(), jax.process_count())]
    if records:
      writer.write({'step': step, 'split': 'eval', **_mean_metrics(records)})

  sync_every = min(config.log_every, MAX_QUEUED_STEPS)
  pending: list[dict[str, jax.Array]] = []
  bar = tqdm(total=config.num_steps, initial=start, desc='train', dynamic_ncols=True,
             disable=jax.process_index() != 0, mininterval=1.0)
  window_start, window_step = time.perf_counter(), start
  for step in range(start, config.num_steps):
    batch = task.train_batch(step, jax.process_index(), jax.process_count())
    state, metrics = train_step(state, shard_batch(batch, data_sharding))
    pending.append(metrics)
    done = step + 1
    if done % sync_every == 0 or done == config.num_steps:
      host = _mean_metrics(jax.device_get(pending))  # the host sync
      pending.clear()
      now = time.perf_counter()
      steps_per_sec = (done - window_step) / max(now - window_start, 1e-9)
      window_start, window_step = now, done
      writer.write({'step': done, 'split': 'train', **host, 'steps_per_sec': steps_per_sec})
      bar.set_postfix(loss=f'{host["loss"]:.4f}', refresh=False)
    bar.update(1)
    if done % config.eval_every == 0 or done == config.num_steps:
      evaluate(done)
    if done % config.checkpoint_every == 0 or done == config.num_steps:
      checkpoint.save(mngr, done, state)
  bar.close()
  if start >= config.num_steps and mngr.latest_step() != config.num_steps:
    checkpoint.save(mngr, int(state.step), state)
  mngr.wait_until_finished()
  mngr.close()
  return state
