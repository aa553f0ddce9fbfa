"""Builds an optax optimizer from the `optim` block of a config (see `configs/common.py`)."""
from __future__ import annotations

import ml_collections
import optax

from srjax import checks

OPTIMIZERS = ('adam', 'adamw', 'sgd')
SCHEDULES = ('constant', 'cosine')


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
  """Returns the optimizer named by `optim.name` with its learning-rate schedule and optional clipping."""
  checks.one_of('optim.name', optim.name, OPTIMIZERS)
  checks.one_of('optim.schedule', optim.schedule, SCHEDULES)
  if optim.schedule == 'cosine':
    lr = optax.warmup_cosine_decay_schedule(0.0, optim.learning_rate, max(optim.warmup_steps, 1),
                                            max(num_steps, optim.warmup_steps + 1))
  elif optim.warmup_steps:
    lr = optax.linear_schedule(0.0, optim.learning_rate, optim.warmup_steps)
  else:
    lr = optim.learning_rate
  if optim.name == 'adam':
    tx = optax.adam(lr)
  elif optim.name == 'adamw':
    tx = optax.adamw(lr, weight_decay=optim.weight_decay)
  else:
    tx = optax.sgd(lr, momentum=optim.momentum)
  if optim.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip), tx)
  return tx
