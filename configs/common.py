"""Fields every training config shares: the loop's schedule, checkpoints, optimizer and data source."""
from __future__ import annotations

import ast
from typing import Any, Mapping, Sequence

import ml_collections

from srjax import checks


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


def override(config: ml_collections.ConfigDict,
             overrides: Mapping[str, Any] | Sequence[str]) -> ml_collections.ConfigDict:
  """Sets dotted fields of `config` in place and returns it (the one place overrides are applied).

  Args:
    config: the config (locked or not; an unknown field is an error either way).
    overrides: {'data.source': 'tfds', ...}, or strings 'data.source=tfds' whose values are parsed as Python
      literals ('10', '1e-3', 'True', "(1, 2)") and otherwise kept as strings.

  Returns:
    `config`.

  Raises:
    ValueError: a string without '=', or a field the config does not have.
  """
  if not isinstance(overrides, Mapping):
    pairs = {}
    for item in overrides:
      if '=' not in item:
        checks.fail('override', item, "'field.path=value'")
      dotted, text = item.split('=', 1)
      try:
        pairs[dotted.strip()] = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        pairs[dotted.strip()] = text
    overrides = pairs
  with config.unlocked():
    for dotted, value in overrides.items():
      target = config
      *parents, leaf = dotted.split('.')
      for name in parents:
        if not isinstance(target, ml_collections.ConfigDict) or name not in target:
          checks.fail('override', dotted, 'a field of the config')
        target = target[name]
      if not isinstance(target, ml_collections.ConfigDict) or leaf not in target:
        checks.fail('override', dotted, 'a field of the config')
      target[leaf] = value
  return config


class PresetQuery(str):
  """An empty preset argument that records the preset table: `get_config(q)` returns the default config and
  leaves `q.table` (preset name -> {dotted field: value}); `--help` lists the presets with it."""
  table: dict[str, dict[str, object]]

  def __new__(cls):
    query = super().__new__(cls, '')
    query.table = {}
    return query


def presets(config: ml_collections.ConfigDict, arg: str | None,
            table: dict[str, dict[str, object]]) -> ml_collections.ConfigDict:
  """Applies the preset `arg` (a key of `table`, whose values map dotted field names to values) and locks.

  Raises:
    ValueError: `arg` names no preset.
  """
  if isinstance(arg, PresetQuery):
    arg.table = {name: dict(fields) for name, fields in table.items()}
  if arg:
    override(config, table[checks.one_of('config preset', arg, sorted(table))])
  config.lock()
  return config
