"""Fields every training config shares: the loop's schedule, checkpoints, optimizer and data source."""
from __future__ import annotations

import ml_collections


def loop_config() -> ml_collections.ConfigDict:
  """Returns the shared-loop defaults (unlocked, so the caller can add its own fields before locking)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_steps = 500
  config.batch_size = 64          # global batch; must divide by the number of devices
  config.log_every = 25           # pull metrics to the host at least this often (capped at 32)
  config.eval_every = 250
  config.checkpoint_every = 100
  config.keep = 3

  config.optim = ml_collections.ConfigDict()
  config.optim.name = 'adam'      # adam | adamw | sgd
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 0
  config.optim.schedule = 'constant'  # constant | cosine
  config.optim.weight_decay = 0.0
  config.optim.momentum = 0.9     # sgd only
  config.optim.grad_clip = 0.0    # global-norm clip; 0 disables

  config.data = ml_collections.ConfigDict()
  config.data.source = 'mnist'    # embedded default; 'tfds' reads data.tfds_name from data.tfds_dir
  config.data.tfds_name = 'mnist'
  config.data.tfds_dir = ''
  config.data.test_fraction = 0.2
  return config


def presets(config: ml_collections.ConfigDict, arg: str | None,
            table: dict[str, dict[str, object]]) -> ml_collections.ConfigDict:
  """Applies the preset `arg` (a key of `table`, whose values map dotted field names to values) and locks.

  Raises:
    ValueError: `arg` names no preset.
  """
  if arg:
    if arg not in table:
      raise ValueError(f'config preset {arg!r} is unknown; accepted: {", ".join(sorted(table))}')
    for dotted, value in table[arg].items():
      target = config
      *parents, leaf = dotted.split('.')
      for name in parents:
        target = target[name]
      target[leaf] = value
  config.lock()
  return config
