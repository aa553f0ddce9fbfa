"""srjax.attribution against closed forms (linear models), completeness, and Python-loop references."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srjax import attribution as attr
from srjax.models.apply_fn import deterministic

B, H, W, C, K = 4, 4, 4, 2, 3
D = H * W * C


@deterministic
def linear(params, x):
  return x.reshape(x.shape[0], -1) @ params['w'] + params['c']


@deterministic
def mlp(params, x):
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ params['w1'] + params['b1'])
  return h @ params['w2']


def noisy_mlp(params, x, rng):
  """The MLP plus a per-draw random linear term: each realisation is a different smooth function."""
  extra = 0.3 * jax.random.normal(rng, (D, K))
  return mlp(params, x) + x.reshape(x.shape[0], -1) @ extra


@deterministic
def constant(params, x):
  return jnp.broadcast_to(params['c'], (x.shape[0], K))


def constant_stochastic(params, x, rng):
  return constant(params, x) + 0.0 * jax.random.normal(rng, ())


@deterministic
def one_feature(params, x):
  """Class 0 when feature j exceeds 0.5, else class 1; nothing else matters."""
  v = x.reshape(x.shape[0], -1)[:, params['j']]
  return jnp.stack([4.0 * (v - 0.5), 4.0 * (0.5 - v), jnp.zeros_like(v)], axis=-1)


@pytest.fixture(scope='module')
def data():
  rng = np.random.default_rng(0)
  x = rng.uniform(0.0, 1.0, size=(B, H, W, C)).astype(np.float32)
  baseline = rng.uniform(0.0, 0.3, size=(B, H, W, C)).astype(np.float32)
  lin = {'w': jnp.asarray(rng.normal(size=(D, K)), jnp.float32), 'c': jnp.asarray(rng.normal(size=K), jnp.float32)}
  # Positive weights: along a path from 0.2 x to x every target score rises, so the completeness check has no
  # cancellation; tanh is curved there (the gradient at the baseline is off the secant by about 50%).
  net = {'w1': jnp.asarray(np.abs(rng.normal(size=(D, 8))) * 0.2, jnp.float32),
         'b1': jnp.asarray(-1.5 + 0.3 * rng.normal(size=8), jnp.float32),
         'w2': jnp.asarray(np.abs(rng.normal(size=(8, K))), jnp.float32)}
  target = np.array([0, 1, 2, 1], np.int32)
  return dict(x=x, baseline=baseline, lin=lin, net=net, target=target)


@pytest.mark.parametrize('method', attr.METHODS)
def test_ig_of_a_linear_model_is_exact(data, method):
  a = attr.integrated_gradients(linear, data['lin'], data['x'], data['target'], baseline=data['baseline'],
                                method=method)
  w = np.asarray(data['lin']['w'])[:, data['target']].T.reshape(B, H, W, C)
  np.testing.assert_allclose(np.asarray(a), (data['x'] - data['baseline']) * w, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize('method', attr.METHODS)
def test_ig_is_complete_on_a_nonlinear_model(data, method):
  baseline = 0.2 * data['x']
  a = attr.integrated_gradients(mlp, data['net'], data['x'], data['target'], baseline=baseline,
                                steps=50, method=method, chunk=16)  # 50 = 3 chunks of 16 + a padded one
  f = lambda v: np.asarray(mlp(data['net'], v))[np.arange(B), data['target']]
  expected = f(data['x']) - f(baseline)
  # Captum's trapezoid weights (sum 1 - 1/50) or a dropped path point would miss by 2%.
  np.testing.assert_allclose(np.asarray(a).reshape(B, -1).sum(1), expected, rtol=1e-2)
  assert np.all(np.abs(expected) > 0.05)


def test_ig_matches_a_python_loop_over_path_points(data):
  steps = 7
  alphas, weights = attr.quadrature('gausslegendre', steps)
  grad = jax.grad(lambda v, t: jnp.sum(jnp.take_along_axis(mlp(data['net'], v), t[:, None], 1)))
  x, b = data['x'], data['baseline']
  total = sum(w * np.asarray(grad(b + a * (x - b), jnp.asarray(data['target']))) for a, w in zip(alphas, weights))
  a = attr.integrated_gradients(mlp, data['net'], x, data['target'], baseline=b, steps=steps, chunk=3)
  np.testing.assert_allclose(np.asarray(a), (x - b) * total, rtol=1e-5, atol=1e-6)
  # Default baseline: zeros.
  a0 = attr.integrated_gradients(mlp, data['net'], x, data['target'], steps=steps, chunk=3)
  a0_ref = attr.integrated_gradients(mlp, data['net'], x, data['target'], baseline=np.zeros_like(x), steps=steps,
                                     chunk=3)
  np.testing.assert_array_equal(np.asarray(a0), np.asarray(a0_ref))


def test_quadrature_rules():
  for method in attr.METHODS:
    alphas, weights = attr.quadrature(method, 10)
    assert alphas.shape == weights.shape == (10,)
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-12)
    assert alphas.min() >= 0.0 and alphas.max() <= 1.0
    # Every rule integrates a cubic's derivative exactly up to its order: check int_0^1 2a da = 1 to 1/n.
    assert abs(np.sum(weights * 2 * alphas) - 1.0) <= 1.0 / 10 + 1e-12
  np.testing.assert_allclose(attr.quadrature('riemann_left', 4)[0], [0, .25, .5, .75])
  np.testing.assert_allclose(attr.quadrature('riemann_right', 4)[0], [.25, .5, .75, 1])
  np.testing.assert_allclose(attr.quadrature('riemann_middle', 4)[0], [.125, .375, .625, .875])
  np.testing.assert_allclose(attr.quadrature('riemann_trapezoid', 5)[1], [.125, .25, .25, .25, .125])
  alphas, weights = attr.quadrature('gausslegendre', 5)
  np.testing.assert_allclose(np.sum(weights * alphas ** 9), 0.1, rtol=1e-10)  # exact to degree 2n - 1


def test_stochastic_ig_is_complete_for_the_mean_of_its_draws(data):
  key = jax.random.key(3)
  draws = 3
  a = attr.integrated_gradients(noisy_mlp, data['net'], data['x'], data['target'], baseline=data['baseline'], key=key, draws=draws)
  keys = jax.random.split(key, draws)
  f = lambda v: np.mean([np.asarray(noisy_mlp(data['net'], v, k))[np.arange(B), data['target']] for k in keys], 0)
  np.testing.assert_allclose(np.asarray(a).reshape(B, -1).sum(1), f(data['x']) - f(data['baseline']), rtol=1e-2)


@pytest.mark.parametrize('nt_type', attr.NT_TYPES)
def test_noise_tunnel_matches_a_python_loop_on_the_same_draws(data, nt_type):
  key = jax.random.key(7)
  n, stdev, steps = 4, 0.1, 8
  out = attr.noise_tunnel(mlp, data['net'], data['x'], data['target'], key=key, n_samples=n, stdev=stdev,
                          nt_type=nt_type, baseline=data['baseline'], steps=steps)
  samples = []
  for s in range(n):
    noisy = data['x'] + stdev * np.asarray(jax.random.normal(jax.random.fold_in(key, s), data['x'].shape))
    samples.append(np.asarray(attr.integrated_gradients(mlp, data['net'], noisy, data['target'],
                                                        baseline=data['baseline'], steps=steps)))
  samples = np.stack(samples).astype(np.float64)
  expected = {'smoothgrad': samples.mean(0), 'smoothgrad_sq': (samples ** 2).mean(0),
              'vargrad': samples.var(0)}[nt_type]
  np.testing.assert_allclose(np.asarray(out), expected, rtol=2e-4, atol=1e-6)


def test_noise_tunnel_of_gradients(data):
  key = jax.random.key(8)
  out = attr.noise_tunnel(mlp, data['net'], data['x'], data['target'], key=key, n_samples=3, stdev=0.2,
                          attribution='gradient')
  grad = jax.grad(lambda v: jnp.sum(jnp.take_along_axis(mlp(data['net'], v), jnp.asarray(data['target'])[:, None], 1)))
  ref = np.mean([np.asarray(grad(data['x'] + 0.2 * jax.random.normal(jax.random.fold_in(key, s), data['x'].shape)))
                 for s in range(3)], axis=0)
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-6)


def test_stability_of_a_linear_model_in_closed_form(data):
  # A linear model: A(x + d) - A(x) = d * w, so each ratio is ||d * w|| / ||(x - b) * w||.
  key = jax.random.key(9)
  n, radius = 5, 0.05
  st = attr.stability(linear, data['lin'], data['x'], data['target'], key=key, radius=radius, n_samples=n,
                      baseline=data['baseline'], steps=4)
  w = np.asarray(data['lin']['w'])[:, data['target']].T.reshape(B, H, W, C).astype(np.float64)
  a0 = (data['x'] - data['baseline']) * w
  ratios, l1 = [], []
  for s in range(n):
    d = radius * np.asarray(jax.random.uniform(jax.random.fold_in(key, s), data['x'].shape, minval=-1, maxval=1))
    ratios.append(np.linalg.norm((d * w).reshape(B, -1), axis=1) / np.linalg.norm(a0.reshape(B, -1), axis=1))
    l1.append(np.abs(d * w).reshape(B, -1).sum(1))
  np.testing.assert_allclose(np.asarray(st.relative_l2), np.mean(ratios, 0), rtol=1e-4)
  np.testing.assert_allclose(np.asarray(st.max_sensitivity), np.max(ratios, 0), rtol=1e-4)
  np.testing.assert_allclose(np.asarray(st.log_abs_change), np.log(np.mean(l1, 0)), rtol=1e-4)
  # Scaling the scores scales the attributions: the relative measure is unchanged, the paper's one shifts by log 2.
  doubled = {'w': 2 * data['lin']['w'], 'c': 2 * data['lin']['c']}
  st2 = attr.stability(linear, doubled, data['x'], data['target'], key=key, radius=radius, n_samples=n,
                       baseline=data['baseline'], steps=4)
  np.testing.assert_allclose(np.asarray(st2.relative_l2), np.asarray(st.relative_l2), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(st2.log_abs_change), np.asarray(st.log_abs_change) + np.log(2), rtol=1e-5)


def test_noise_tunnel_stability_of_a_linear_model_in_closed_form(data):
  # With the tunnel, A(x) = mean_t (x + s N_t - b) * w. The tunnel's noise is shared by x and x + d, so the change
  # is still d * w (the numerator, hence log_abs_change, equals the plain one) and only ||A(x)|| changes.
  key = jax.random.key(9)
  n, radius, stdev, t = 3, 0.05, 0.3, 4
  kw = dict(key=key, radius=radius, n_samples=n, baseline=data['baseline'], steps=4)
  plain = attr.stability(linear, data['lin'], data['x'], data['target'], **kw)
  tunnel = attr.stability(linear, data['lin'], data['x'], data['target'], tunnel_samples=t, tunnel_stdev=stdev,
                          **kw)
  np.testing.assert_allclose(np.asarray(tunnel.log_abs_change), np.asarray(plain.log_abs_change), rtol=1e-4)
  w = np.asarray(data['lin']['w'])[:, data['target']].T.reshape(B, H, W, C).astype(np.float64)
  k_tunnel = jax.random.fold_in(key, attr.TUNNEL_STREAM)
  noise = np.mean([np.asarray(jax.random.normal(jax.random.fold_in(k_tunnel, i), data['x'].shape))
                   for i in range(t)], 0)
  a0 = (data['x'] + stdev * noise - data['baseline']) * w
  a0_plain = (data['x'] - data['baseline']) * w
  scale = np.linalg.norm(a0_plain.reshape(B, -1), axis=1) / np.linalg.norm(a0.reshape(B, -1), axis=1)
  np.testing.assert_allclose(np.asarray(tunnel.relative_l2), np.asarray(plain.relative_l2) * scale, rtol=1e-4)
  assert not np.allclose(scale, 1.0)   # the tunnel did change A(x)
  # No noise: the tunnel is the plain attribution.
  zero = attr.stability(linear, data['lin'], data['x'], data['target'], tunnel_samples=2, tunnel_stdev=0.0, **kw)
  np.testing.assert_allclose(np.asarray(zero.relative_l2), np.asarray(plain.relative_l2), rtol=1e-5)
  with pytest.raises(ValueError, match='tunnel_samples'):
    attr.stability(linear, data['lin'], data['x'], data['target'], tunnel_samples=-1, **kw)


def test_constant_classifier_has_abc_one(data):
  params = {'c': jnp.asarray([0.1, 2.0, -1.0])}
  for fn, stochastic in ((constant, False), (constant_stochastic, True)):
    res = attr.abc(fn, params, data['x'], key=jax.random.key(0), n_samples=16, fraction=0.5, steps=4, draws=2 if stochastic else 1)
    np.testing.assert_array_equal(np.asarray(res.score), np.ones(B))
    np.testing.assert_array_equal(np.asarray(res.label), np.ones(B))


def test_abc_mutates_the_attributed_feature(data):
  # Only feature j matters and it sits above 0.5: P is one-hot on j, so every mutated input sets x_j to the
  # baseline 0, which flips the label (ABC = 0). Uniform sampling of 1 feature in 32 would keep ABC near 31/32.
  j = 5
  x = data['x'].copy().reshape(B, -1)
  x[:, j] = 0.8
  x = x.reshape(data['x'].shape)
  res = attr.abc(one_feature, {'j': j}, x, key=jax.random.key(1), n_samples=16, fraction=1 / D, steps=8)
  np.testing.assert_array_equal(np.asarray(res.label), np.zeros(B))
  np.testing.assert_array_equal(np.asarray(res.score), np.zeros(B))


def test_noise_map(data):
  rng = np.random.default_rng(4)
  a = rng.normal(size=(B, 8, 8, 3)).astype(np.float32)
  m = np.asarray(attr.noise_map(a))
  assert m.shape == (B, 8, 8, 1) and m.dtype == np.float32
  ref = np.abs(a).mean(-1, keepdims=True)
  ref /= np.sqrt((ref ** 2).mean(axis=(1, 2, 3), keepdims=True))
  np.testing.assert_allclose(m, ref, rtol=1e-5)
  small = np.asarray(attr.noise_map(a, size=(4, 4), normalize='max'))
  assert small.shape == (B, 4, 4, 1) and small.min() >= 0
  np.testing.assert_allclose(small.max(axis=(1, 2, 3)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(attr.noise_map(a, normalize='mean')).mean(axis=(1, 2, 3)), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(attr.noise_map(np.zeros((2, 4, 4, 1)))), np.ones((2, 4, 4, 1)))


def test_argument_errors(data):
  x, t, p = data['x'], data['target'], data['net']
  with pytest.raises(ValueError, match='method'):
    attr.integrated_gradients(mlp, p, x, t, method='simpson')
  with pytest.raises(ValueError, match='steps'):
    attr.integrated_gradients(mlp, p, x, t, steps=1, method='riemann_left')
  with pytest.raises(ValueError, match='target'):
    attr.integrated_gradients(mlp, p, x, t[:2])
  with pytest.raises(ValueError, match='baseline'):
    attr.integrated_gradients(mlp, p, x, t, baseline=np.zeros((3, 3)))
  with pytest.raises(ValueError, match='draws'):
    attr.integrated_gradients(mlp, p, x, t, draws=2)
  with pytest.raises(ValueError, match='key'):
    attr.integrated_gradients(noisy_mlp, p, x, t)
  with pytest.raises(ValueError, match='nt_type'):
    attr.noise_tunnel(mlp, p, x, t, key=jax.random.key(0), nt_type='smooth')
  with pytest.raises(ValueError, match='stdev'):
    attr.noise_tunnel(mlp, p, x, t, key=jax.random.key(0), stdev=-1.0)
  with pytest.raises(ValueError, match='radius'):
    attr.stability(mlp, p, x, t, key=jax.random.key(0), radius=-0.1)
  with pytest.raises(ValueError, match='fraction'):
    attr.abc(mlp, p, x, key=jax.random.key(0), fraction=0.0)
  with pytest.raises(ValueError, match='normalize'):
    attr.noise_map(np.ones((1, 2, 2, 1)), normalize='l1')


@deterministic
def two_class_linear(params, x):
  """Logits [0, m], m = w.x + c: integrated gradients of class 1 from a zero baseline are exactly x * w."""
  m = x.reshape(x.shape[0], -1) @ params['w'] + params['c']
  return jnp.stack([jnp.zeros_like(m), m], axis=-1)


# Mixed signs: ranked by signed weight the large negative ones come last, ranked by |w| they come first.
ABC_W = np.array([3.0, 3.0, -4.0, -4.0, 0.5, 0.5, -0.5, 0.5])


def _abc_closed_form(n_samples, sample_chunk):
  """x = 1, baseline 0, m = 1: P_j = |w_j| / sum |w| (not the signed w), one feature mutated per input, and the
  label flips exactly when a feature with w_j > 1 is mutated. So ABC = 1 - 6/16 = 0.625 (the signed ranking,
  P ~ max(w, 0), would give 0.2; uniform sampling 0.75)."""
  params = {'w': jnp.asarray(ABC_W, jnp.float32), 'c': jnp.float32(1.0 - ABC_W.sum())}
  x = np.ones((4, 2, 2, 2), np.float32)
  return attr.abc(two_class_linear, params, x, key=jax.random.key(2), n_samples=n_samples, fraction=1 / 8,
                  steps=4, sample_chunk=sample_chunk)


def test_abc_of_a_mixed_sign_linear_model_in_closed_form():
  n = 500                                   # 7 chunks of 64 and a padded one
  res = _abc_closed_form(n, 64)
  np.testing.assert_array_equal(np.asarray(res.label), np.ones(4))
  score = np.asarray(res.score, np.float64)
  np.testing.assert_allclose(score * n, np.round(score * n), atol=1e-3)   # a count of conforming inputs over n
  assert abs(score.mean() - 0.625) < 4 * np.sqrt(0.625 * 0.375 / (4 * n)), score


def test_abc_does_not_depend_on_the_sample_chunk():
  """Mutation s uses fold_in(k_mutate, s) whatever the chunking: 10 samples in chunks of 4 (two padded slots)
  give exactly the scores of one chunk of 10."""
  a = np.asarray(_abc_closed_form(10, 4).score)
  b = np.asarray(_abc_closed_form(10, 10).score)
  np.testing.assert_array_equal(a, b)
  assert len(set(np.round(a * 10).tolist())) > 1 or 0 < a[0] < 1      # not a degenerate all-0 / all-1 case
