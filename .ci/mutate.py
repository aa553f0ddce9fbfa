#!/usr/bin/env python3
"""Mutation check of the main job's path (dev tool; NOT run by CI: too slow for 2 cores).

Each mutant is one plausible one-line bug: (file, exact original fragment, mutated fragment, test node ids).
The script applies each mutant alone, runs its tests with `pytest -x -q`, restores the file (always, also on
Ctrl-C), and prints a table (caught / survived / stale) and the score. A fragment that is not found exactly once
is reported "stale" and not counted.

    python .ci/mutate.py                 # every mutant
    python .ci/mutate.py --only nsde     # the mutants whose file or name contains 'nsde'
    python .ci/mutate.py --list
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = 'tests/'
ATTACK_HAND = T + 'test_attack.py::test_apgd_iterates_follow_algorithm_1_by_hand'
PGD_EOT = T + 'test_attack.py::test_pgd_eot_gradient_error_falls_like_one_over_sqrt_draws'
APGD_EOT = T + 'test_attack.py::test_apgd_eot_gradient_averages_fresh_independent_draws'
NSDE_INC = T + 'test_nsde.py::test_brownian_increments_are_independent_across_steps_examples_stages_and_draws'
NSDE_KEYS = T + 'test_nsde.py::test_stages_use_their_own_keys_and_the_block_mean_of_a_non_square_attribution_map'
NSDE_DEPTH = T + 'test_nsde.py::test_stochastic_depth_keeps_the_expectation_of_each_block'
NSDE_TRAIN = T + 'test_nsde.py::test_nsde_in_training_mode_drops_each_block_with_its_rate'
ABC_CLOSED = T + 'test_attribution.py::test_abc_of_a_mixed_sign_linear_model_in_closed_form'
ABC_CHUNK = T + 'test_attribution.py::test_abc_does_not_depend_on_the_sample_chunk'

# (name, file, original fragment, mutated fragment, tests)
MUTANTS = [
    # issue 18: resume guard, non-finite stop, input size
    ('resume guard compares only the resumable fields', 'train/loop.py',
     'fixed = [n for n in names if n not in RESUMABLE_FIELDS or', 'fixed = [n for n in names if n in RESUMABLE_FIELDS or',
     [T + 'test_resume_guards.py::test_resume_accepts_bookkeeping_changes_and_refuses_the_rest']),
    ('non-finite check ignores the update', 'train/loop.py',
     'finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(updates))',
     'finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)',
     [T + 'test_resume_guards.py::test_a_nan_learning_rate_from_the_first_step_is_refused']),
    ('input multiple off by one stage', 'srjax/models/convnext.py',
     'return int(self.stem_patch) * 2 ** (len(self.depths) - 1)', 'return int(self.stem_patch) * 2 ** len(self.depths)',
     [T + 'test_resume_guards.py::test_a_size_the_convnext_would_crop_is_refused_before_any_data_is_generated']),
    # srjax/attack/gradient.py (srjax/attack.py before it became a package)
    ('apgd initial step eps, not 2 eps', 'srjax/attack/gradient.py', 'eta=2.0 * eps,', 'eta=eps,', [ATTACK_HAND]),
    ('apgd momentum 0.5', 'srjax/attack/gradient.py', 'jnp.where(i > 0, 0.75, 1.0)', 'jnp.where(i > 0, 0.5, 1.0)',
     [ATTACK_HAND]),
    ('apgd plain step also at iteration 1', 'srjax/attack/gradient.py', 'jnp.where(i > 0, 0.75, 1.0)',
     'jnp.where(i > 1, 0.75, 1.0)', [ATTACK_HAND]),
    ('apgd step cut to 0.75, not halved', 'srjax/attack/gradient.py', "jnp.where(cut, 0.5 * s['eta'], s['eta'])",
     "jnp.where(cut, 0.75 * s['eta'], s['eta'])", [ATTACK_HAND]),
    ('apgd condition 2 strict', 'srjax/attack/gradient.py', "(s['best_at_check'] >= loss_best)",
     "(s['best_at_check'] > loss_best)", [ATTACK_HAND]),
    ('apgd momentum from the new point', 'srjax/attack/gradient.py', "x_old=s['x'], g=", 'x_old=x_new, g=', [ATTACK_HAND]),
    ('apgd reuses one key every iteration', 'srjax/attack/gradient.py', 'evaluate(point, jax.random.fold_in(k_iter, i + 2))',
     'evaluate(point, k_iter)', [APGD_EOT]),
    ('eot reuses one key for every draw', 'srjax/attack/gradient.py', 'jax.vmap(one, in_axes=(None, 0))(x, jax.random.split(key, eot))',
     'jax.vmap(one, in_axes=(None, 0))(x, jnp.stack([key] * eot))', [PGD_EOT]),
    ('pgd reuses one key every iteration', 'srjax/attack/gradient.py', 'evaluate(xk, jax.random.fold_in(k_iter, i))',
     'evaluate(xk, k_iter)', [PGD_EOT]),
    # srjax/nsde.py
    ('nsde stages share one key', 'srjax/nsde.py', 'solve_stage(blocks[0], stacked, y, jax.random.fold_in(key, s),',
     'solve_stage(blocks[0], stacked, y, key,', [NSDE_KEYS]),
    ('nsde attribution map subsampled, not block-averaged', 'srjax/nsde.py',
     'pooled = m.reshape(b, h, big_h // h, w, big_w // w).mean(axis=(2, 4))',
     'pooled = m[:, ::big_h // h, ::big_w // w]', [NSDE_KEYS]),
    ('block drop path without rescale', 'srjax/models/convnext.py', 'return y * mask / keep', 'return y * mask',
     [NSDE_DEPTH]),
    ('nsde drop path masks share one key', 'srjax/nsde.py', "rngs={'drop_path': jax.random.fold_in(key, k)})",
     "rngs={'drop_path': key})", [NSDE_DEPTH]),
    ("nsde drop path uses block 0's rate", 'srjax/nsde.py', 'False, rates[k], method', 'False, rates[0], method',
     [NSDE_TRAIN]),
    ('nsde Brownian steps share one increment', 'srjax/nsde.py',
     'jax.random.normal(jax.random.fold_in(self.key, step), self.shape)',
     'jax.random.normal(self.key, self.shape)', [NSDE_INC]),
    ('nsde examples share one increment', 'srjax/nsde.py',
     'jax.random.normal(jax.random.fold_in(self.key, step), self.shape)',
     'jnp.broadcast_to(jax.random.normal(jax.random.fold_in(self.key, step), self.shape[1:]), self.shape)',
     [NSDE_INC]),
    # srjax/attribution.py
    ('abc samples by signed attribution', 'srjax/attribution.py', 'jnp.where(moved, jnp.abs(attr.reshape(batch, -1)',
     'jnp.where(moved, jnp.maximum(attr.reshape(batch, -1)', [ABC_CLOSED]),
    ('abc counts padded samples', 'srjax/attribution.py', 'valid = (s_ids < n_samples)[:, None]',
     'valid = (s_ids <= n_samples)[:, None]', [ABC_CHUNK]),
    ('abc divides by the padded count', 'srjax/attribution.py', 'return count.astype(jnp.float32) / n_samples, label',
     'return count.astype(jnp.float32) / (n_chunks * sample_chunk), label', [ABC_CHUNK]),
    ('abc reuses one mutation key', 'srjax/attribution.py', 'jax.random.categorical(jax.random.fold_in(k_mutate, s), log_p',
     'jax.random.categorical(k_mutate, log_p', [ABC_CLOSED]),
    ('abc mutates the other features', 'srjax/attribution.py', 'mutated = jnp.where(mask, flat_b, flat_x)',
     'mutated = jnp.where(mask, flat_x, flat_b)', [ABC_CLOSED]),
    ('trapezoid ends not halved', 'srjax/attribution.py', 'weights[[0, -1]] /= 2.0', 'weights[[0, -1]] /= 1.0',
     [T + 'test_attribution.py::test_quadrature_rules']),
    # train/loop.py, train/state_checkpoint.py, srjax/models/pretrained.py
    ('loop reuses one key every step', 'train/loop.py', 'rng = jax.random.fold_in(train_rng, state.step)',
     'rng = train_rng', [T + 'test_loop.py::test_each_step_gets_its_own_key_across_resumes_and_devices']),
    ('checkpoint ignores dtype', 'train/state_checkpoint.py', 'elif saved[name] != expected[name]:',
     'elif saved[name][0] != expected[name][0]:', [T + 'test_state_checkpoint.py']),
    ('weights prefix strip off by one', 'srjax/models/pretrained.py', 'sd = {k[len(prefix):]: v for k, v in sd.items()}',
     'sd = {k[len(prefix) - 1:]: v for k, v in sd.items()}',
     [T + 'test_pretrained.py::test_wrappers_and_prefixes_are_removed']),
    ('weights prefix stripped when any key has it', 'srjax/models/pretrained.py',
     'if all(k.startswith(prefix) for k in sd):', 'if any(k.startswith(prefix) for k in sd):',
     [T + 'test_pretrained.py']),
    # eval/robustness (the bootstrap moved to srjax.stats, whose mutants are its tests'), srjax/sweep.py statistics
    ('snr band edge on the wrong side', 'eval/robustness/claims.py', "side='right')", "side='left')",
     [T + 'test_eval_robustness.py::test_bands']),
    ('sweep spread ignores level 0', 'srjax/sweep.py', 'spread = np.maximum(std[rows, peak], std[:, zero])',
     'spread = std[rows, peak]', [T + 'test_sweep.py::test_summarize_test_is_gain_against_spread']),
    ('sweep peak over the wrong axis', 'srjax/sweep.py', 'peak = np.argmax(mean, axis=1)', 'peak = np.argmax(mean, axis=0)',
     [T + 'test_sweep.py::test_summarize_test_is_gain_against_spread']),
]


def run_one(name, path, original, mutated, tests, timeout):
  full = os.path.join(ROOT, path)
  with open(full) as f:
    source = f.read()
  if source.count(original) != 1:
    return 'stale', 0.0
  start = time.time()
  try:
    with open(full, 'w') as f:
      f.write(source.replace(original, mutated))
    env = dict(os.environ, JAX_PLATFORMS='cpu', MPLBACKEND='Agg')
    env.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(ROOT, '.cache', 'jax'))
    try:
      proc = subprocess.run([sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider', *tests], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=timeout)
      status = 'survived' if proc.returncode == 0 else 'caught'
      if proc.returncode not in (0, 1):
        status = f'caught (pytest exit {proc.returncode})'
    except subprocess.TimeoutExpired:
      status = 'caught (timeout)'
  finally:
    with open(full, 'w') as f:
      f.write(source)
  return status, time.time() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--only', default='', help='run the mutants whose file or name contains this')
  parser.add_argument('--list', action='store_true')
  parser.add_argument('--timeout', type=int, default=900, help='seconds per mutant')
  args = parser.parse_args()
  chosen = [m for m in MUTANTS if args.only in m[0] or args.only in m[1]]
  if args.list:
    for name, path, *_ in chosen:
      print(f'{path}: {name}')
    return 0
  print(f'{len(chosen)} mutants; load average {os.getloadavg()[0]:.1f}', flush=True)
  rows = []
  for name, path, original, mutated, tests in chosen:
    status, seconds = run_one(name, path, original, mutated, tests, args.timeout)
    rows.append((path, name, status, seconds))
    print(f'| {path} | {name} | {status} | {seconds:.0f} s |', flush=True)
  counted = [r for r in rows if r[2] != 'stale']
  caught = sum(r[2].startswith('caught') for r in counted)
  print('\n| file | mutant | result | time |\n|---|---|---|---|')
  for path, name, status, seconds in rows:
    print(f'| {path} | {name} | {status} | {seconds:.0f} s |')
  print(f'\nscore: {caught} / {len(counted)} caught ({len(rows) - len(counted)} stale); '
        f'load average {os.getloadavg()[0]:.1f}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
