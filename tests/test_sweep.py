"""srjax.sweep against Python-loop references, closed forms and invariants."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from srjax import sweep
from tests.conftest import ROOT, TEST_XLA_FLAGS

N, H, W, K = 37, 3, 4, 3
CONTRASTS = (1.0, 0.5, 0.2)
LEVELS = (0.0, 0.1, 0.3)


def linear_apply(params, x):
  """A toy classifier: logits = flatten(x) @ w + b (module-level, so hashable and static)."""
  return x.reshape(x.shape[0], -1) @ params['w'] + params['b']


def threshold_apply(params, x):
  """Answers 1 ("signal") when the single pixel exceeds params['theta'], else 0 ("no signal")."""
  p = x.reshape(x.shape[0])
  return jnp.stack([params['theta'] - p, p - params['theta']], axis=-1)


def _data(seed=0, n=N):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, (n, H, W, 1)).astype(np.float32)
  y = rng.integers(0, K, n).astype(np.int32)
  return x, y


def _params(repeats=None, seed=1):
  rng = np.random.default_rng(seed)
  d = H * W * (repeats or 1)
  return {'w': jnp.asarray(rng.normal(0, 1, (d, K)), jnp.float32),
          'b': jnp.asarray(rng.normal(0, 0.3, (K,)), jnp.float32)}


def _loop_reference(params, x, y, key, *, noise, draws, shared, repeats):
  """A Python loop over (contrast, level, draw, image) with the draws documented in srjax.sweep."""
  shape = x.shape[1:] if repeats is None else (repeats,) + x.shape[1:]
  sample = {'uniform': lambda k: jax.random.uniform(k, shape),
            'rectified_gaussian': lambda k: jnp.maximum(jax.random.normal(k, shape), 0),
            'gaussian': lambda k: jax.random.normal(k, shape)}[noise]
  u = np.zeros((draws, len(y)) + shape, np.float32)
  for d in range(draws):
    draw_key = jax.random.fold_in(key, d)
    for i in range(len(y)):
      u[d, i] = sample(draw_key if shared else jax.random.fold_in(draw_key, i))
  acc = np.zeros((len(CONTRASTS), len(LEVELS), draws))
  for ci, t in enumerate(CONTRASTS):
    for li, s in enumerate(LEVELS):
      for d in range(draws):
        xe = x if repeats is None else np.repeat(x[:, None], repeats, axis=1)
        inp = np.clip(xe * np.float32(t) + np.float32(s) * u[d], 0, 1)
        logits = np.asarray(linear_apply(params, jnp.asarray(inp)))
        acc[ci, li, d] = np.mean(np.argmax(logits, -1) == y)
  return acc


@pytest.mark.parametrize('noise,shared,repeats', [('uniform', False, None), ('rectified_gaussian', True, 2),
                                                  ('gaussian', False, 2)])
def test_equals_python_loop_reference(noise, shared, repeats):
  x, y = _data()
  params = _params(repeats)
  key = jax.random.key(3)
  want = _loop_reference(params, x, y, key, noise=noise, draws=2, shared=shared, repeats=repeats)
  got = sweep.sr_curves(linear_apply, params, x, y, contrasts=CONTRASTS, levels=LEVELS, noise=noise, draws=2,
                        key=key, shared_noise=shared, repeats=repeats, chunk_size=8)
  assert got.accuracy.shape == (3, 3, 2) and got.accuracy.dtype == np.float32
  np.testing.assert_allclose(got.accuracy, want, atol=1e-6)
  np.testing.assert_allclose(got.mean, want.mean(-1), atol=1e-6)
  np.testing.assert_allclose(got.std, want.std(-1), atol=1e-6)


def test_zero_noise_full_contrast_is_plain_accuracy():
  x, y = _data(seed=5)
  params = _params()
  plain = np.mean(np.argmax(np.asarray(linear_apply(params, jnp.asarray(x))), -1) == y)
  got = sweep.sr_curves(linear_apply, params, x, y, contrasts=CONTRASTS, levels=LEVELS, draws=2,
                        key=jax.random.key(0), chunk_size=8)        # the compile of the loop test, reused
  assert CONTRASTS[0] == 1 and LEVELS[0] == 0
  np.testing.assert_allclose(got.accuracy[0, 0], [plain, plain], atol=1e-7)


def test_same_key_same_result_for_any_chunk_size():
  x, y = _data(seed=2)
  params = _params()
  run = lambda key, chunk: sweep.sr_curves(linear_apply, params, x, y, contrasts=CONTRASTS, levels=LEVELS,
                                           draws=2, key=jax.random.key(key), chunk_size=chunk).accuracy
  first = run(7, 8)
  np.testing.assert_array_equal(first, run(7, 8))
  np.testing.assert_array_equal(first, run(7, 5))
  np.testing.assert_array_equal(first, run(7, None))     # one chunk holds every image
  assert not np.array_equal(first, run(8, 8))


def _threshold_closed_form(noise, t, s, theta, frac_signal):
  """Expected accuracy of the threshold detector on clip(t * x + s * u, 0, 1), x = 1 (signal) or 0 (blank)."""
  if s == 0:
    p_hit, p_reject = float(t > theta), 1.0
  elif noise == 'uniform':                   # u ~ U(0, 1)
    p_hit = np.clip((t + s - theta) / s, 0, 1)
    p_reject = min(1.0, theta / s)
  else:                                      # u = relu(z), z ~ N(0, 1)
    p_hit = stats.norm.sf((theta - t) / s) if theta > t else 1.0
    p_reject = stats.norm.cdf(theta / s)
  return frac_signal * p_hit + (1 - frac_signal) * p_reject


@pytest.mark.parametrize('noise', ['uniform', 'rectified_gaussian'])
def test_threshold_detector_bell_curve_matches_closed_form(noise):
  n, draws, theta = 2000, 4, 0.5
  y = (np.arange(n) % 2).astype(np.int32)                 # half signal (1), half blank (0)
  x = y.astype(np.float32).reshape(n, 1, 1, 1)
  contrasts, levels = (0.3, 0.8), (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)
  curves = sweep.sr_curves(threshold_apply, {'theta': jnp.float32(theta)}, x, y, contrasts=contrasts,
                           levels=levels, noise=noise, draws=draws, key=jax.random.key(0), chunk_size=500)
  want = np.array([[_threshold_closed_form(noise, t, s, theta, 0.5) for s in levels] for t in contrasts])
  tol = 4 * np.sqrt(np.maximum(want * (1 - want), 1e-4) / (n * draws)) + 1e-6
  assert np.all(np.abs(curves.mean - want) <= tol), (curves.mean, want)
  summary = sweep.summarize(curves)
  np.testing.assert_array_equal(summary.optimal_level, np.asarray(levels, np.float32)[np.argmax(want, 1)])
  np.testing.assert_array_equal(summary.bell, [True, False])   # sub-threshold: bell; supra-threshold: none
  np.testing.assert_allclose(summary.gain, want.max(1) - want[:, 0], atol=2 * tol.max())
  assert summary.gain[0] > 0.05 and summary.gain[1] == 0


def _simulated_curves(p_levels, sims, n=1100, draws=2, seed=0):
  """SRCurves of `sims` simulated sweeps (one per contrast row): image i at level l, draw d is correct with
  probability p_levels[l], independently."""
  rng = np.random.default_rng(seed)
  p = np.asarray(p_levels)[None, :, None, None]
  correct = rng.uniform(size=(sims, len(p_levels), draws, n)) < p
  acc = correct.mean(-1)
  levels = np.linspace(0, 0.45, len(p_levels)).astype(np.float32)
  return sweep.SRCurves(acc.astype(np.float32), acc.mean(-1), acc.std(-1), np.ones(sims, np.float32), levels,
                        correct)


def test_flat_curve_is_rarely_called_a_bell():
  """The issue's case: n = 1,100, p = 0.5 at 10 levels, 2 draws; the old rule said "bell" 80% of the time."""
  sims = 1000
  summary = sweep.summarize(_simulated_curves([0.5] * 10, sims), resamples=500)
  rate = summary.bell.mean()
  assert rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / sims), rate
  assert np.mean(summary.gain > summary.spread) > 0.5          # the in-sample rule it replaces
  assert abs(summary.held_out_gain.mean()) < 0.002             # held out: unbiased under the flat curve


def test_a_seven_point_bell_is_detected():
  bump = [0.5, 0.51, 0.535, 0.57, 0.535, 0.51, 0.5, 0.5, 0.5, 0.5]   # +7 points at the best level
  summary = sweep.summarize(_simulated_curves(bump, 300, seed=1), resamples=500)
  assert summary.bell.mean() >= 0.8, summary.bell.mean()
  np.testing.assert_array_less(summary.gain_low, summary.held_out_gain)


def test_summarize_fields_and_errors():
  levels = np.array([0.0, 0.1, 0.2], np.float32)
  correct = np.zeros((1, 3, 2, 4), bool)
  correct[0, 1] = True                                          # level 0.1: every image right, else none
  acc = correct.mean(-1).astype(np.float32)
  curves = sweep.SRCurves(acc, acc.mean(-1), acc.std(-1), np.array([0.5], np.float32), levels, correct)
  summary = sweep.summarize(curves)
  np.testing.assert_allclose(summary.optimal_level, [0.1])
  np.testing.assert_allclose(summary.gain, [1.0])
  np.testing.assert_allclose(summary.held_out_gain, [1.0])
  with pytest.raises(ValueError, match='levels'):
    sweep.summarize(curves._replace(levels=levels + 0.05))
  with pytest.raises(ValueError, match='^curves.correct: got None'):
    sweep.summarize(curves._replace(correct=None))


def test_held_out_gain_uses_the_other_half():
  # Level 1 is right on the choosing half only, level 2 on the held-out half only; level 0 always wrong.
  n = 8
  choose = np.zeros(n, bool)
  choose[np.random.default_rng(0).permutation(n)[: n // 2]] = True
  correct = np.zeros((1, 3, 1, n), bool)
  correct[0, 1, 0, choose] = True
  correct[0, 2, 0, ~choose] = True
  np.testing.assert_array_equal(sweep.held_out_gains(correct, 0, seed=0), np.zeros((1, 4)))   # chose level 1
  correct[0, 2, 0, np.flatnonzero(choose)[:3]] = True                                         # 3 of 4: level 1 wins
  np.testing.assert_array_equal(sweep.held_out_gains(correct, 0, seed=0), np.zeros((1, 4)))
  correct[0, 2, 0, choose] = True                                                             # tie: first max (1)
  np.testing.assert_array_equal(sweep.held_out_gains(correct, 0, seed=0), np.zeros((1, 4)))
  correct[0, 1, 0, np.flatnonzero(choose)[0]] = False                                         # now level 2 wins
  np.testing.assert_array_equal(sweep.held_out_gains(correct, 0, seed=0), np.ones((1, 4)))


@pytest.mark.parametrize('kwargs,name', [
    ({'contrasts': (1.2,)}, 'contrasts'), ({'levels': (-0.1, 0.0)}, 'levels'), ({'levels': ()}, 'levels'),
    ({'draws': 0}, 'draws'), ({'noise': 'pink'}, 'noise'), ({'y': np.zeros(5, np.int32)}, 'y'),
    ({'repeats': 0}, 'repeats'), ({'chunk_size': 0}, 'chunk_size')])
def test_argument_errors_name_the_argument(kwargs, name):
  x, y = _data()
  args = dict(contrasts=(1.0,), levels=(0.0,), noise='uniform', draws=1, y=y)
  args.update(kwargs)
  y_arg = args.pop('y')
  with pytest.raises(ValueError, match=f'^{name}: got'):
    sweep.sr_curves(linear_apply, _params(), x, y_arg, key=jax.random.key(0), **args)


_SUBPROCESS = """
import json, jax, numpy as np
from tests.test_sweep import _data, _params, linear_apply, CONTRASTS, LEVELS
from srjax import sweep
x, y = _data(seed=4)
r = sweep.sr_curves(linear_apply, _params(2), x, y, contrasts=CONTRASTS, levels=LEVELS, draws=2, repeats=2,
                    key=jax.random.key(1), chunk_size=16)
print(json.dumps({'devices': jax.device_count(), 'accuracy': r.accuracy.tolist()}))
"""


@pytest.mark.slow
def test_eight_devices_equal_one():
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_NUM_CPU_DEVICES')}
  env.update(JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, XLA_FLAGS=f'{TEST_XLA_FLAGS} --xla_force_host_platform_device_count=8')
  proc = subprocess.run([sys.executable, '-c', _SUBPROCESS], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out['devices'] == 8
  x, y = _data(seed=4)
  one = sweep.sr_curves(linear_apply, _params(2), x, y, contrasts=CONTRASTS, levels=LEVELS, draws=2, repeats=2,
                        key=jax.random.key(1), chunk_size=16)
  assert jax.device_count() == 1
  np.testing.assert_array_equal(np.asarray(out['accuracy'], np.float32), one.accuracy)
