"""Benchmark of the shared loop: classifier steps/s on 1 device and on 8 simulated CPU devices, time to the
first step (init + compile + one step), and checkpoint save time.

  python -m eval.bench.loop [--steps 200] [--model cnn]

Each device count runs in its own subprocess (XLA_FLAGS must be set before JAX starts). The baseline is the
1-device run of the same invocation. On a 2-core CPU, 8 simulated devices share 2 cores, so expect them to be
slower: the row measures the overhead of sharding and collectives, not a speed-up.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def worker(model: str, steps: int, batch_size: int) -> dict[str, float]:
  import jax  # pylint: disable=g-import-not-at-top
  from configs import classifier as classifier_config  # pylint: disable=g-import-not-at-top
  from configs import common as config_common  # pylint: disable=g-import-not-at-top
  from eval.bench import common  # pylint: disable=g-import-not-at-top
  from train import loop, state_checkpoint  # pylint: disable=g-import-not-at-top
  from train.classifier import build_task  # pylint: disable=g-import-not-at-top

  config = config_common.override(classifier_config.get_config(), {'model': model, 'batch_size': batch_size})
  task = build_task(config)
  mesh = loop.make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  init_rng, train_rng = jax.random.split(jax.random.key(0))

  start = time.perf_counter()
  state = loop.init_state(task, init_rng, replicated)
  step_fn = loop.make_train_step(task, train_rng, mesh)
  state, metrics = step_fn(state, loop.shard_batch(task.train_batch(0, 0, 1), data))
  jax.block_until_ready(metrics)
  first_step_s = time.perf_counter() - start

  start = time.perf_counter()
  for step in range(1, steps + 1):
    state, metrics = step_fn(state, loop.shard_batch(task.train_batch(step, 0, 1), data))
    if step % loop.MAX_QUEUED_STEPS == 0:
      jax.block_until_ready(metrics)
  jax.block_until_ready(state)
  steps_per_sec = steps / (time.perf_counter() - start)

  with tempfile.TemporaryDirectory() as workdir:
    mngr = state_checkpoint.manager(workdir, keep=2)
    start = time.perf_counter()
    state_checkpoint.save(mngr, 1, state)
    mngr.wait_until_finished()
    save_s = time.perf_counter() - start
    mngr.close()
  return {'devices': jax.device_count(), 'steps_per_sec': steps_per_sec, 'first_step_s': first_step_s,
          'checkpoint_save_s': save_s, 'peak_rss_mb': common.process_peak_rss_mb()}


def run_in_subprocess(devices: int, args: argparse.Namespace) -> dict[str, float]:
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('JAX_COMPILATION_CACHE_DIR', None)  # time real compiles
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  cmd = [sys.executable, '-m', 'eval.bench.loop', '--worker', '--model', args.model, '--steps', str(args.steps),
         '--batch-size', str(args.batch_size)]
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--model', default='cnn', choices=('cnn', 'mlp'))
  parser.add_argument('--batch-size', type=int, default=64)
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(args.model, args.steps, args.batch_size)))
    return
  from eval.bench import common  # pylint: disable=g-import-not-at-top
  rows = [run_in_subprocess(d, args) for d in (1, 8)]
  base = rows[0]['steps_per_sec']
  for row in rows:
    row['variant'] = f'{args.model}, {row["devices"]} device(s)'
    row['ratio_vs_1dev'] = row['steps_per_sec'] / base
  print(f'classifier train step, global batch {args.batch_size}, {args.steps} timed steps (synced every 32)')
  common.print_table(rows, ['variant', 'steps_per_sec', 'ratio_vs_1dev', 'first_step_s', 'checkpoint_save_s',
                            'peak_rss_mb'])
  common.print_result(steps_per_sec_1dev=rows[0]['steps_per_sec'], steps_per_sec_8dev=rows[1]['steps_per_sec'],
                      first_step_s_1dev=rows[0]['first_step_s'], first_step_s_8dev=rows[1]['first_step_s'],
                      checkpoint_save_s=rows[0]['checkpoint_save_s'])


if __name__ == '__main__':
  main()
