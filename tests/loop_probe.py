"""A tiny Task for testing the loop's per-step key: its loss reports a uniform draw from the step's key.

  python -m tests.loop_probe --config configs/classifier.py:smoke --workdir DIR --config.log_every=1

The model is one scalar fitted to zero; the metric 'draw' is `uniform(rng)` for the key the loop gave the step, so
metrics.jsonl records one draw per step when log_every is 1.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from train import cli, loop


def build_task(config: ml_collections.ConfigDict) -> loop.Task:
  """The probe: params {'w': scalar}, batch {'x': [batch_size] zeros}, metric 'draw' = uniform(step key)."""
  def init(rng):
    del rng
    return {'w': jnp.ones(())}, {}

  def loss(params, model_state, batch, rng):
    value = jnp.mean(jnp.square(params['w'] + batch['x']))
    return value, ({'draw': jax.random.uniform(rng)}, model_state)

  def train_batch(step, process_index, process_count):
    del step, process_index
    return {'x': np.zeros(config.batch_size // process_count, np.float32)}

  return loop.Task(init=init, loss=loss, train_batch=train_batch, optimizer=optax.sgd(0.1))


if __name__ == '__main__':
  cli.main(build_task)
