"""The one training engine shared by every entry point.

`run(config, workdir, task)` builds a mesh over all devices (batch split on axis 'data', params and optimizer
state replicated), jit-compiles a train step that donates the state, resumes from the latest orbax checkpoint in
`workdir`, saves every `config.checkpoint_every` steps and at the end, evaluates every `config.eval_every`
steps, and appends metrics to `workdir/metrics.jsonl` with a tqdm bar. The same code runs on one CPU, on
simulated CPU devices, on a GPU, on a TPU slice and on several hosts (see `train/distributed.py`).

A workdir belongs to one config: `run` stores the config as `workdir/config.json`, and a later run in the same
workdir must match it in every field except `RESUMABLE_FIELDS` (checked before anything in the workdir is
touched; `ConfigMismatchError` names the fields). A non-finite loss, gradient norm or update stops the run at the
host sync that sees it (`NonFiniteError`, naming the step) before anything non-finite is saved.

Determinism: the root key is `jax.random.key(config.seed)`, each step folds in the step number, and the task's
batches are a pure function of the step, so a resumed run ends with exactly the params of an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
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
from srjax.sweep import make_mesh  # the one mesh of the library, the loop and the evals
from train import state_checkpoint
from train.metrics import MetricsWriter

Params = Any
ModelState = Any
Batch = dict[str, np.ndarray]

MAX_QUEUED_STEPS = 32  # CPU collectives hang when ~50+ steps are queued without a host sync.
CONFIG_FILE = 'config.json'
# Fields that may differ between a run and the run it resumes: bookkeeping that changes neither the model, the
# data nor the optimisation. `num_steps` may grow or shrink only with a constant learning-rate schedule (a cosine
# schedule is a function of num_steps, so changing it would change the optimisation of the steps already run).
RESUMABLE_FIELDS = ('num_steps', 'log_every', 'eval_every', 'checkpoint_every', 'keep', 'eval_batch_size')


class ConfigMismatchError(ValueError):
  """The workdir holds a run whose stored config differs from the new one in a field that matters."""


class NonFiniteError(FloatingPointError):
  """A training step produced a non-finite loss, gradient norm or parameter update."""


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


def _flat(tree: Any, prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes `workdir/config.json` atomically (process 0 only); returns its path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  if jax.process_index() == 0:
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
      f.write(config.to_json(indent=2))
    os.replace(tmp, path)
  return path


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The locked config stored in `workdir/config.json` by `run`.

  Raises:
    FileNotFoundError: the workdir holds no config.json.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{workdir} holds no {CONFIG_FILE}: it was not written by a train.<name> entry point')
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  config.lock()
  return config


def check_resume(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses to resume a workdir whose stored config differs from `config` outside `RESUMABLE_FIELDS`.

  Reads `workdir/config.json` when it exists and writes nothing, so a refused run leaves the workdir exactly as
  it was.

  Raises:
    ConfigMismatchError: one line naming each differing field with its stored and its new value.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    stored = _flat(json.load(f))
  new = _flat(json.loads(config.to_json()))
  missing = object()
  names = sorted(set(stored) | set(new))
  fixed = [n for n in names if n not in RESUMABLE_FIELDS or (n == 'num_steps' and new.get('optim.schedule',
                                                                                       'constant') != 'constant')]
  diffs = [n for n in fixed if stored.get(n, missing) != new.get(n, missing)]
  if not diffs:
    return
  show = lambda v: 'absent' if v is missing else repr(v)
  detail = '; '.join(f'{n}: stored {show(stored.get(n, missing))}, given {show(new.get(n, missing))}' for n in diffs)
  raise ConfigMismatchError(
      f'{workdir} holds a run with an incompatible config ({detail}); nothing was changed. Resume it with its own config '
      f'(only {", ".join(RESUMABLE_FIELDS)} may change, num_steps only with a constant schedule) or pass another '
      '--workdir.')


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
    grad_norm = optax.tree.norm(grads)
    # One flag per step, checked on the host at each sync: a NaN learning rate gives finite grads but NaN updates.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(updates))
    return new_state, {'loss': loss, 'grad_norm': grad_norm, **metrics, 'finite': finite}

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


def _evaluate_batches(eval_step: Callable, params: Params, model_state: ModelState, batches: Iterable[Batch],
                      data_sharding: NamedSharding) -> dict[str, float]:
  records = [jax.device_get(eval_step(params, model_state, shard_batch(b, data_sharding))) for b in batches]
  return _mean_metrics(records) if records else {}


def evaluate(evaluate_fn: Callable, params: Params, model_state: ModelState,
             batches: Iterable[Batch]) -> dict[str, float]:
  """The loop's evaluation on other batches (e.g. a test split after training).

  Args:
    evaluate_fn: a `Task.evaluate`, (params, model_state, batch) -> metrics with an optional 'weight'.
    params, model_state: the state to evaluate (e.g. of the `TrainState` that `run` returns).
    batches: this process's host batches (`train.batches.eval_batches`: padded, with a mask).

  Returns:
    The metrics averaged over the batches with their weights (the examples they hold); {} for no batch.
  """
  mesh = make_mesh()
  data_sharding = NamedSharding(mesh, P('data'))
  replicated = NamedSharding(mesh, P())
  eval_step = jax.jit(evaluate_fn, in_shardings=(replicated, replicated, data_sharding), out_shardings=replicated)
  params, model_state = jax.device_put((params, model_state), replicated)
  return _evaluate_batches(eval_step, params, model_state, batches, data_sharding)


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
  check_resume(config, workdir)
  save_config(config, workdir)
  mesh = make_mesh()
  replicated = NamedSharding(mesh, P())
  data_sharding = NamedSharding(mesh, P('data'))
  root = jax.random.key(config.seed)
  init_rng, train_rng = jax.random.split(root)

  state = init_state(task, init_rng, replicated)
  mngr = state_checkpoint.manager(workdir, keep=config.keep)
  restored = state_checkpoint.restore_latest(mngr, state)
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
    means = _evaluate_batches(eval_step, state.params, state.model_state,
                              task.eval_batches(jax.process_index(), jax.process_count()), data_sharding)
    if means:
      writer.write({'step': step, 'split': 'eval', **means})

  sync_every = min(config.log_every, MAX_QUEUED_STEPS)
  pending: list[dict[str, jax.Array]] = []
  bar = tqdm(total=config.num_steps, initial=start, desc='train', dynamic_ncols=True,
             disable=jax.process_index() != 0, mininterval=1.0)
  window = [time.perf_counter(), start]

  def sync(done: int) -> None:
    """Pulls the queued metrics to the host, stops on a non-finite step, and logs their mean."""
    if not pending:
      return
    host = jax.device_get(pending)
    first = done - len(pending) + 1
    for i, record in enumerate(host):
      if not bool(record.pop('finite')):
        bar.close()
        raise NonFiniteError(
            f'step {first + i}: non-finite training (loss {float(record["loss"])}, gradient norm '
            f'{float(record["grad_norm"])}); stopped before saving it, the latest checkpoint in {workdir} is '
            f'still the last good one (check the learning rate and the data)')
    pending.clear()
    means = _mean_metrics(host)
    now = time.perf_counter()
    steps_per_sec = (done - window[1]) / max(now - window[0], 1e-9)
    window[:] = [now, done]
    writer.write({'step': done, 'split': 'train', **means, 'steps_per_sec': steps_per_sec})
    bar.set_postfix(loss=f'{means["loss"]:.4f}', refresh=False)

  for step in range(start, config.num_steps):
    batch = task.train_batch(step, jax.process_index(), jax.process_count())
    state, metrics = train_step(state, shard_batch(batch, data_sharding))
    pending.append(metrics)
    done = step + 1
    evaluating = done % config.eval_every == 0 or done == config.num_steps
    saving = done % config.checkpoint_every == 0 or done == config.num_steps
    if done % sync_every == 0 or evaluating or saving:
      sync(done)   # every state that is evaluated or saved has been checked first
    bar.update(1)
    if evaluating:
      evaluate(done)
    if saving:
      state_checkpoint.save(mngr, done, state)
  bar.close()
  if start >= config.num_steps and mngr.latest_step() != config.num_steps:
    state_checkpoint.save(mngr, int(state.step), state)
  mngr.wait_until_finished()
  mngr.close()
  return state
