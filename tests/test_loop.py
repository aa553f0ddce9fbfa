"""The shared loop through its real CLI: devices, processes, kill-and-resume, checkpoint errors, config errors."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import classifier as classifier_config
from jax.sharding import NamedSharding, PartitionSpec as P
from tests import loop_probe, tfds_tiny
from train import loop
from tests.conftest import ROOT, TEST_XLA_FLAGS
from train import state_checkpoint

SMOKE = [sys.executable, '-m', 'train.classifier', '--config', 'configs/classifier.py:smoke']


def _env(**extra: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_NUM_CPU_DEVICES')}
  env.update(JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, **extra)
  env['XLA_FLAGS'] = f"{TEST_XLA_FLAGS} {extra.get('XLA_FLAGS', '')}".strip()
  return env


def _train(workdir, *overrides: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
  proc = subprocess.run(SMOKE + ['--workdir', str(workdir), *overrides], cwd=ROOT, env=_env(**env),
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _records(workdir, split='train'):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['split'] == split]


def _params(workdir):
  state, _ = state_checkpoint.load_numpy(str(workdir))
  return state['params']


def _max_abs_diff(a, b) -> float:
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b)))


_STDOUT: dict[str, str] = {}  # workdir -> the stdout of the run that wrote it


@pytest.fixture(scope='module')
def one_device_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('one_device')
  _STDOUT[str(workdir)] = _train(workdir).stdout
  return workdir


def test_last_line_says_what_ran_the_metrics_wall_time_and_paths(one_device_run):
  last = _STDOUT[str(one_device_run)].strip().splitlines()[-1]
  final = _records(one_device_run, 'eval')[-1]
  assert last.startswith('train.classifier (configs/classifier.py:smoke): eval ')
  assert f'accuracy {final["accuracy"]:.4f}' in last and f'loss {final["loss"]:.4f}' in last
  assert ' at step 20; wall ' in last
  assert last.endswith(f'checkpoints {one_device_run}/checkpoints, metrics {one_device_run}/metrics.jsonl')


def test_metrics_and_checkpoints(one_device_run):
  train = _records(one_device_run)
  assert [r['step'] for r in train] == [5, 10, 15, 20]
  for r in train:
    assert {'loss', 'accuracy', 'steps_per_sec'} <= set(r) and np.isfinite(r['loss'])
  assert train[-1]['loss'] < train[0]['loss']
  assert [r['step'] for r in _records(one_device_run, 'eval')] == [10, 20]
  assert sorted(os.listdir(one_device_run / 'checkpoints')) == ['10', '20']


def test_eight_devices_match_one(one_device_run, tmp_path):
  _train(tmp_path, XLA_FLAGS='--xla_force_host_platform_device_count=8')
  losses_8 = [r['loss'] for r in _records(tmp_path)]
  losses_1 = [r['loss'] for r in _records(one_device_run)]
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
  assert _max_abs_diff(_params(tmp_path), _params(one_device_run)) < 1e-5


def test_kill_after_checkpoint_then_resume_is_bitwise(tmp_path):
  overrides = ['--config.model=mlp', '--config.num_steps=1500', '--config.checkpoint_every=100',
               '--config.eval_every=1500', '--config.log_every=25']
  killed = tmp_path / 'killed'
  proc = subprocess.Popen(SMOKE + ['--workdir', str(killed), *overrides], cwd=ROOT, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first = killed / 'checkpoints' / '100' / 'commit_success.txt'
  deadline = time.time() + 120
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, 'the run ended before it could be killed'
  _, killed_at = state_checkpoint.load_numpy(str(killed))
  assert 100 <= killed_at < 1500
  _train(killed, *overrides)                      # resumes
  straight = tmp_path / 'straight'
  _train(straight, *overrides)
  a, b = _params(killed), _params(straight)
  assert jax.tree.all(jax.tree.map(np.array_equal, a, b)), 'resumed params differ from the uninterrupted run'
  steps = [r['step'] for r in _records(killed)]
  assert steps == sorted(set(steps)), 'metrics.jsonl repeats steps after the resume'


def test_corrupt_checkpoint_is_an_error_and_left_untouched(one_device_run, tmp_path):
  workdir = tmp_path / 'corrupt'
  subprocess.run(['cp', '-r', str(one_device_run), str(workdir)], check=True)
  metadata = workdir / 'checkpoints' / '20' / 'default' / '_METADATA'
  metadata.write_text('not json')
  proc = subprocess.run(SMOKE + ['--workdir', str(workdir), '--config.num_steps=30'], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert 'corrupt or incompatible' in proc.stderr and 'Traceback' not in proc.stderr
  assert metadata.read_text() == 'not json'
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['10', '20']


def test_mismatched_checkpoint_is_an_error(one_device_run, tmp_path):
  workdir = tmp_path / 'mismatch'
  subprocess.run(['cp', '-r', str(one_device_run), str(workdir)], check=True)
  os.remove(workdir / 'config.json')  # a workdir without its config: the checkpoint's own metadata check
  proc = subprocess.run(SMOKE + ['--workdir', str(workdir), '--config.model=mlp', '--config.num_steps=30'],
                        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and 'incompatible' in proc.stderr, proc.stderr[-2000:]
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['10', '20']


@pytest.mark.parametrize('override, needle', [
    ('--config.tpyo=3', 'tpyo'),
    ('--config.optim.learnin_rate=0.1', 'learnin_rate'),
    ('--config.data.source=imagenet_on_floppy', 'imagenet_on_floppy'),
    ('--config.num_steps=ten', 'num_steps'),
])
def test_bad_override_is_one_line(tmp_path, override, needle):
  proc = subprocess.run(SMOKE + ['--workdir', str(tmp_path), override], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(('W', 'I'))]
  assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_missing_tfds_fails_fast(tmp_path):
  start = time.time()
  proc = subprocess.run(SMOKE + ['--workdir', str(tmp_path / 'w'), '--config.data.source=tfds',
                                 f'--config.data.tfds_dir={tmp_path}'],
                        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert 'not prepared' in proc.stderr and 'tfds build mnist' in proc.stderr
  assert time.time() - start < 60


def _probe_draws(workdir, *overrides: str, **env: str) -> list[float]:
  proc = subprocess.run([sys.executable, '-m', 'tests.loop_probe', '--config', 'configs/classifier.py:smoke',
                         '--workdir', str(workdir), '--config.log_every=1', '--config.checkpoint_every=3',
                         '--config.eval_every=100', '--config.batch_size=8', *overrides],
                        cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return [r['draw'] for r in _records(workdir)]


def test_each_step_gets_its_own_key_across_resumes_and_devices(tmp_path):
  straight = _probe_draws(tmp_path / 'straight', '--config.num_steps=6')
  assert len(straight) == 6 and len(set(straight)) == 6, 'steps share a key'
  _probe_draws(tmp_path / 'resumed', '--config.num_steps=3')
  resumed = _probe_draws(tmp_path / 'resumed', '--config.num_steps=6')     # resumes from the step-3 checkpoint
  assert resumed == straight
  eight = _probe_draws(tmp_path / 'eight', '--config.num_steps=6',
                       XLA_FLAGS='--xla_force_host_platform_device_count=8')
  assert eight == straight


def test_train_step_donates_the_state():
  task = loop_probe.build_task(classifier_config.get_config('smoke'))
  mesh = loop.make_mesh()
  state = loop.init_state(task, jax.random.key(0), NamedSharding(mesh, P()))
  step = loop.make_train_step(task, jax.random.key(1), mesh)
  batch = loop.shard_batch(task.train_batch(0, 0, 1), NamedSharding(mesh, P('data')))
  new_state, _ = step(state, batch)
  assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state)), 'the input state was not donated'
  assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(new_state))


def test_classifier_trains_on_a_prepared_tfds_dataset(tmp_path):
  name = tfds_tiny.prepare(str(tmp_path / 'tfds'))
  workdir = tmp_path / 'w'
  _train(workdir, '--config.data.source=tfds', f'--config.data.tfds_name={name}',
         f'--config.data.tfds_dir={tmp_path / "tfds"}', '--config.model=mlp', '--config.num_steps=40',
         '--config.batch_size=16', '--config.eval_every=40', '--config.optim.learning_rate=0.01')
  final = [r for r in _records(workdir, 'eval') if r['step'] == 40]
  assert final and final[0]['accuracy'] > 0.5   # chance is 0.1; the 24 test images come from the TFDS files


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_match_one(one_device_run, tmp_path):
  port = _free_port()
  procs = []
  for pid in range(2):
    env = _env(JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}', JAX_NUM_PROCESSES='2', JAX_PROCESS_ID=str(pid),
               JAX_NUM_CPU_DEVICES='1', JAX_ENABLE_PREEMPTION_SERVICE='false')
    procs.append(subprocess.Popen(['timeout', '-k', '10', '240'] + SMOKE + ['--workdir', str(tmp_path)],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outs = [p.communicate() for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  np.testing.assert_allclose([r['loss'] for r in _records(tmp_path)],
                             [r['loss'] for r in _records(one_device_run)], rtol=1e-5)
  assert _max_abs_diff(_params(tmp_path), _params(one_device_run)) < 1e-5


def test_vit_with_class_token_trains_on_eight_devices(tmp_path):
  """A ViT concatenates a replicated class token to batch-sharded patches: the mesh must propagate shardings."""
  vit = [sys.executable, '-m', 'train.srt_classifier', '--config', 'configs/srt_classifier.py:smoke']
  for devices in (1, 8):
    proc = subprocess.run(vit + ['--workdir', str(tmp_path / str(devices))], cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env=_env(XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}'))
    assert proc.returncode == 0, proc.stderr[-3000:]
  np.testing.assert_allclose([r['loss'] for r in _records(tmp_path / '8')],
                             [r['loss'] for r in _records(tmp_path / '1')], rtol=1e-5)
