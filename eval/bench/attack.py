"""Benchmark of srjax.attack's AutoAttack: each attack and the ensemble, against torchattacks' on the same weights.

  python -m eval.bench.attack [--quick] [--norm Linf] [--torch-python /work/torchvenv/bin/python]

Models: a small CNN (two stride-2 3x3 convolutions, 8 and 16 channels, global mean, 10 classes, 28x28x1 inputs)
trained here for 1,000 Adam steps on the embedded MNIST digits (79% test accuracy, a few seconds; the robust
accuracy therefore starts from the clean accuracy on the attacked test digits, true labels, and says how strong
each attack is), and the main job's ConvNeXt (`srjax.models.convnext`, the 'micro' variant, 64x64x1, 8
classes, random weights; srjax only, as torchattacks would need the same network in torch). Per attack: seconds
per 100 examples of a second call (compiled), the first call's extra seconds (compilation), the robust
accuracy, and the process's peak RSS. When a Python with torch and torchattacks is found, it runs the same
attacks with the same settings on the CNN's weights (`eval/bench/torch_attacks.py`, a subprocess in the same
run), with the ratio torch time / srjax time. The last line is
`RESULT autoattack_vs_torchattacks=... square_vs_torchattacks=... apgd_t_vs_torchattacks=...` (nan without torch).
`--quick` (few examples, steps and queries; on the ConvNeXt only the whole ensemble) runs in about a minute on
an idle 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from eval.bench import common
from srjax import attack
from srjax import data as srdata
from srjax.models import apply_fn as apply_fns
from srjax.models import convnext

TORCH_PYTHON = '/work/torchvenv/bin/python'
PARTS = ('apgd-ce', 'apgd-t', 'fab-t', 'square')


@apply_fns.deterministic
def cnn(params, x):
  """The small CNN; padding 1 on both sides, as torch's Conv2d(padding=1)."""
  dn = ('NHWC', 'HWIO', 'NHWC')
  h = jax.lax.conv_general_dilated(x, params['k1'], (2, 2), ((1, 1), (1, 1)), dimension_numbers=dn) + params['b1']
  h = jax.nn.relu(h)
  h = jax.lax.conv_general_dilated(h, params['k2'], (2, 2), ((1, 1), (1, 1)), dimension_numbers=dn) + params['b2']
  h = jax.nn.relu(h)
  return h.mean(axis=(1, 2)) @ params['wd'] + params['bd']


def cnn_params(seed=0):
  rng = np.random.default_rng(seed)
  return {'k1': rng.normal(size=(3, 3, 1, 8)) / 3, 'b1': np.zeros(8), 'k2': rng.normal(size=(3, 3, 8, 16)) / 8,
          'b2': np.zeros(16), 'wd': rng.normal(size=(16, 10)) * 40, 'bd': np.zeros(10)}


def train_cnn(steps: int = 1000, batch: int = 64, seed: int = 0):
  """cnn_params(seed) trained with Adam (lr 1e-2) on the embedded MNIST train split; float32 numpy leaves."""
  train = srdata.load('mnist', 'train')
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), cnn_params(seed))
  params['wd'] = params['wd'] / 40                      # the random-weights scale is for untrained margins
  tx = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state, x, y):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(cnn(p, x), y).mean()
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = tx.init(params)
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(0, len(train), batch)
    params, opt_state = step(params, opt_state, train.images[idx], train.labels[idx])
  return jax.tree.map(np.asarray, params)


def run_srjax(apply_fn, params, x, y, *, eps, norm, steps, queries, n_targets, parts=PARTS):
  """Per attack (and 'autoattack'): first-call and second-call seconds and the robust accuracy."""
  key = jax.random.key(0)
  opts = dict(eps=eps, norm=norm, key=key, steps=steps, queries=queries, n_targets=n_targets)
  calls = {name: (lambda name=name: attack.autoattack(apply_fn, params, x, y, version='custom', attacks=[name],
                                                      **opts)) for name in parts}
  calls['autoattack'] = lambda: attack.autoattack(apply_fn, params, x, y, version='standard', **opts)
  out = {}
  for name, call in calls.items():
    start = time.perf_counter()
    res = call()
    first = time.perf_counter() - start
    start = time.perf_counter()
    res = call()
    jax.block_until_ready(res.x_adv)
    second = time.perf_counter() - start
    out[name] = dict(seconds=second, compile=max(first - second, 0.0), robust_accuracy=res.log[-1].robust_accuracy,
                     load=common.load())
  return out


def run_torch(python, params, x, y, *, eps, norm, steps, queries, n_targets):
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'in.npz')
    np.savez(path, x=np.asarray(x), y=np.asarray(y), eps=eps, norm=norm, steps=steps, queries=queries,
             classes=10, n_targets=n_targets, threads=os.cpu_count() or 1,
             **{k: np.asarray(v, np.float32) for k, v in params.items()})
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'torch_attacks.py')
    proc = subprocess.run([python, script, path], capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    print(f'torchattacks run failed: {proc.stderr[-2000:]}', file=sys.stderr)
    return None
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='few examples, steps and queries (about a minute)')
  parser.add_argument('--norm', default='Linf', choices=attack.NORMS)
  parser.add_argument('--torch-python', default=TORCH_PYTHON, help='a Python with torch and torchattacks')
  args = parser.parse_args(argv)
  if args.quick:
    batch, steps, queries, n_targets, conv_batch = 16, 5, 50, 3, 4
  else:
    batch, steps, queries, n_targets, conv_batch = 100, 100, 5000, 9, 16
  eps = 8 / 255 if args.norm == 'Linf' else 0.5
  print(f'# srjax.attack benchmark: {common.cpu_model()}, {os.cpu_count()} CPUs, load {common.load()}, jax {jax.__version__}, '
        f'{args.norm} eps={eps:.4g}, steps={steps}, queries={queries}, targets={n_targets}', flush=True)
  rng = np.random.default_rng(1)
  params_np = train_cnn()
  params = jax.tree.map(jnp.asarray, params_np)
  test = srdata.load('mnist', 'test')
  x, y = test.images[:batch], test.labels[:batch].astype(np.int32)
  clean = float(np.mean(np.asarray(jnp.argmax(cnn(params, x), -1)) == y))
  print(f'# CNN trained on the embedded MNIST digits: clean accuracy {clean:.3f} on the {batch} attacked test digits',
        flush=True)
  ours = run_srjax(cnn, params, x, y, eps=eps, norm=args.norm, steps=steps, queries=queries, n_targets=n_targets)
  theirs = None
  if os.path.exists(args.torch_python):
    theirs = run_torch(args.torch_python, params_np, x, y, eps=eps, norm=args.norm, steps=steps, queries=queries,
                       n_targets=n_targets)
  rows = []
  for name, r in ours.items():
    row = dict(model='cnn', attack=name, s_per_100=100 * r['seconds'] / batch, compile_s=r['compile'],
               robust=r['robust_accuracy'], load=r['load'])
    if theirs:
      row.update(torch_s_per_100=100 * theirs[name]['seconds'] / batch, torch_robust=theirs[name]['robust_accuracy'],
                 ratio=theirs[name]['seconds'] / r['seconds'])
    rows.append(row)

  model = convnext.build('micro', num_classes=8)
  xc = rng.uniform(size=(conv_batch, 64, 64, 1)).astype(np.float32)
  variables = model.init(jax.random.key(0), jnp.asarray(xc[:1]))
  conv_apply = apply_fns.deterministic(apply_fns.ModuleApply(model))
  yc = np.asarray(jnp.argmax(conv_apply(variables, xc), -1)).astype(np.int32)
  conv = run_srjax(conv_apply, variables, xc, yc, eps=eps, norm=args.norm, steps=steps, queries=queries,
                   n_targets=min(n_targets, 7), parts=() if args.quick else PARTS)
  for name, r in conv.items():
    rows.append(dict(model='convnext-micro', attack=name, s_per_100=100 * r['seconds'] / conv_batch,
                     compile_s=r['compile'], robust=r['robust_accuracy'], load=r['load']))
  common.print_table(rows, ['model', 'attack', 's_per_100', 'compile_s', 'robust', 'torch_s_per_100',
                            'torch_robust', 'ratio', 'load'])
  print(f'# peak RSS {common.process_peak_rss_mb():.0f} MiB; load at the end {common.load()}; torch side: '
        f'{"ran" if theirs else "not available"}', flush=True)

  def ratio(name):
    return theirs[name]['seconds'] / ours[name]['seconds'] if theirs else float('nan')
  common.print_result(autoattack_vs_torchattacks=ratio('autoattack'), square_vs_torchattacks=ratio('square'),
                      apgd_t_vs_torchattacks=ratio('apgd-t'))


if __name__ == '__main__':
  main()
