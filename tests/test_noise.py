"""Tests for srjax.noise (positive-noise samplers, quality matrices, theory) and srjax.inject (layer injection).

Truths: NumPy matrix algebra (ranks, determinants in closed form, explicit (I + Q) X products), the binomial
law of the salt-and-pepper replacements, a manual recomposition of the models' last blocks from their public
submodules, and a random-label toy problem where any accuracy above chance can only come from the batch.
"""
from __future__ import annotations

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from srjax import inject, noise
from srjax.models import resnet, vit

KS = (1, 2, 3, 5, 8)
ALPHAS = (0.1, 0.3, 0.45)


# ----------------------------------------------------------------------------------------------- Q matrices


@pytest.mark.parametrize('k', KS)
@pytest.mark.parametrize('alpha', ALPHAS)
def test_eq17_q_satisfies_rank_rows_diagonal(k, alpha):
  q = noise.linear_q(k, alpha)
  m = np.eye(k) + q
  assert np.linalg.matrix_rank(m) == k
  np.testing.assert_allclose(np.abs(m).sum(axis=1), 1.0, atol=1e-12)
  off = m - np.diag(np.diag(m))
  assert np.all(np.diag(m)[:, None] >= off)
  # Closed form of the circulant determinant: |(1 - a) I + a P| = (1 - a)^k - (-a)^k.
  det = (1 - alpha) ** k - (-alpha) ** k
  np.testing.assert_allclose(np.linalg.det(m), det, rtol=1e-10)
  assert noise.mutual_information(q) == pytest.approx(-np.log(abs(det)), rel=1e-10, abs=1e-12)
  c = noise.constraints(q)
  assert c['full_rank'] and c['dominant_diagonal'] and c['unit_row_norm']
  # Q 1 = 0, so Q itself is singular: the paper's "Q ~ I" fails for its own matrix.
  assert not c['row_equivalent_to_identity']


@pytest.mark.parametrize('k', KS)
def test_optimal_q_rank_rows_diagonal_and_mi(k):
  q = noise.optimal_q(k)
  m = np.eye(k) + q
  assert np.linalg.matrix_rank(m) == k
  np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)
  np.testing.assert_allclose(np.diag(m), 2 / (k + 1), atol=1e-12)
  if k > 1:
    np.testing.assert_allclose(m[~np.eye(k, dtype=bool)], 1 / (k + 1), atol=1e-12)
  assert noise.mutual_information(q) == pytest.approx((k - 1) * np.log(k + 1), abs=1e-9)
  c = noise.constraints(q)
  assert c['full_rank'] and c['dominant_diagonal'] and c['unit_row_norm']


def test_constraints_flag_violations():
  # alpha = 0.5 with even k: (1 - a)^k = (-a)^k, so I + Q is singular; alpha > 0.5 loses the dominant diagonal.
  assert not noise.constraints(noise.linear_q(4, 0.5))['full_rank']
  assert noise.constraints(noise.linear_q(5, 0.5))['full_rank']
  assert not noise.constraints(noise.linear_q(4, 0.7))['dominant_diagonal']
  assert not noise.constraints(noise.linear_q(4, 0.3) + 0.1 * np.eye(4))['unit_row_norm']
  assert noise.constraints(np.eye(3))['row_equivalent_to_identity']
  assert noise.mutual_information(noise.linear_q(4, 0.5)) == float('inf')


# ------------------------------------------------------------------------------------ linear transforms


@pytest.mark.parametrize('axis', (0, 1))
def test_roll_equals_explicit_matmul(axis):
  x = np.random.default_rng(0).normal(size=(5, 4, 3)).astype(np.float32)
  k = x.shape[axis]
  for alpha in ALPHAS:
    want = np.moveaxis(np.tensordot(np.eye(k) + noise.linear_q(k, alpha), np.moveaxis(x, axis, 0), 1), 0, axis)
    got = noise.linear_transform(jnp.asarray(x), alpha, axis=axis)
    chex.assert_shape(got, x.shape)
    chex.assert_type(got, jnp.float32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  for s in (0.5, 1.0):
    want = np.moveaxis(np.tensordot(np.eye(k) + s * noise.optimal_q(k), np.moveaxis(x, axis, 0), 1), 0, axis)
    np.testing.assert_allclose(noise.optimal_transform(jnp.asarray(x), s, axis=axis), want, rtol=1e-5,
                               atol=1e-6)


def test_batch_of_one_is_identity_and_size_one_sample_axis_is_an_error():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 6, 3)), jnp.float32)
  np.testing.assert_array_equal(noise.linear_transform(x, 0.4, axis=0), x)
  np.testing.assert_array_equal(noise.optimal_transform(x, 1.0, axis=0), x)
  with pytest.raises(ValueError, match='axis'):
    noise.linear_transform(x[:, :1], 0.4, axis=1)
  with pytest.raises(ValueError, match='axis'):
    noise.optimal_transform(x[:, :1], 1.0, axis=1)


def test_per_sample_axis_ignores_other_examples():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(4, 6, 3)).astype(np.float32)
  y = x.copy()
  y[1:] = rng.normal(size=y[1:].shape)
  for f in (lambda a, ax: noise.linear_transform(a, 0.4, ax), lambda a, ax: noise.optimal_transform(a, 1.0, ax)):
    np.testing.assert_array_equal(f(jnp.asarray(x), 1)[0], f(jnp.asarray(y), 1)[0])
    assert not np.allclose(f(jnp.asarray(x), 0)[0], f(jnp.asarray(y), 0)[0])  # the batch axis does mix


def test_argument_errors():
  x = jnp.ones((3, 4))
  for bad in (-0.1, 1.0, 1.5):
    with pytest.raises(ValueError, match='alpha'):
      noise.linear_transform(x, bad)
    with pytest.raises(ValueError, match='alpha'):
      noise.salt_and_pepper(jax.random.key(0), x, bad)
  with pytest.raises(ValueError, match='kind'):
    noise.perturb(None, x, 'uniformish', 0.1)
  with pytest.raises(ValueError, match='kind'):
    inject.Noise(kind='pink')
  with pytest.raises(ValueError, match='strength'):
    inject.Noise(kind='linear', strength=1.0)
  with pytest.raises(ValueError, match='axis'):
    inject.Noise(axis='tokens')
  with pytest.raises(ValueError, match='axis'):
    noise.linear_transform(x, 0.2, axis=2)


# ----------------------------------------------------------------------------------------- salt and pepper


@pytest.mark.parametrize('alpha', (0.05, 0.2, 0.6))
def test_salt_and_pepper_fraction_matches_alpha(alpha):
  b, n = 8, 4096
  x = jnp.asarray(np.random.default_rng(3).uniform(0.1, 0.9, size=(b, n)), jnp.float32)
  out = np.asarray(noise.salt_and_pepper(jax.random.key(4), x, alpha))
  xn = np.asarray(x)
  hi, lo = xn.max(1, keepdims=True), xn.min(1, keepdims=True)
  assert np.all((out == xn) | (out == hi) | (out == lo))  # every replacement is the sample's max or min
  salt, pepper = (out == hi) & (xn != hi), (out == lo) & (xn != lo)
  total = b * n
  # Binomial std of an observed fraction; 4 std leaves ~1e-4 false alarms per check.
  for frac, p in ((salt.mean(), alpha / 2), (pepper.mean(), alpha / 2), ((salt | pepper).mean(), alpha)):
    assert abs(frac - p) < 4 * np.sqrt(p * (1 - p) / total) + 2 / n  # 2/n: a hit on the extreme itself is invisible


# ------------------------------------------------------------------------------------------------ injection


def _random_variables(model, x, seed):
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)

  def fill(path, a):
    name = jax.tree_util.keystr(path)
    if "'var'" in name:
      return jnp.asarray(rng.uniform(0.5, 2.0, a.shape), jnp.float32)
    if "'mean'" in name or 'bias' in name:
      return jnp.asarray(0.1 * rng.normal(size=a.shape), jnp.float32)
    if 'scale' in name:
      return jnp.asarray(rng.uniform(0.5, 1.5, a.shape), jnp.float32)
    return jnp.asarray(rng.normal(size=a.shape) / np.sqrt(max(np.prod(a.shape[:-1]), 1)), jnp.float32)
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope='module')
def tiny():
  x = jnp.asarray(np.random.default_rng(5).normal(size=(4, 8, 8, 1)), jnp.float32)
  rn = resnet.cifar_resnet(8, num_classes=5, width=4)
  vt = vit.ViT(num_classes=5, patch_size=4, width=8, depth=2, mlp_dim=16, num_heads=2, posemb_grid=(2, 2))
  return {'x': x, 'resnet': (rn, _random_variables(rn, x, 6)), 'vit': (vt, _random_variables(vt, x, 7))}


KINDS_STRENGTHS = (('gaussian', 1.0, 'batch'), ('salt_and_pepper', 0.3, 'batch'), ('linear', 0.4, 'batch'),
                   ('linear', 0.4, 'sample'), ('optimal', 1.0, 'batch'), ('optimal', 1.0, 'sample'))


@functools.lru_cache(maxsize=None)
def _noisy_fn(model, kind, axis):
  """Jitted injected forward with the strength as a traced argument (one compile per kind and axis)."""
  return jax.jit(lambda v, x, s, key: inject.apply(model, v, x, noise=inject.Noise(kind, s, axis=axis), key=key))


@functools.lru_cache(maxsize=None)
def _plain_fn(model):
  return jax.jit(model.apply)


@pytest.mark.parametrize('arch', ('resnet', 'vit'))
def test_strength_zero_is_the_plain_model(tiny, arch):
  model, variables = tiny[arch]
  x = tiny['x']
  plain = _plain_fn(model)(variables, x)
  key = jax.random.key(8)
  for kind, strength, axis in KINDS_STRENGTHS:
    fn = _noisy_fn(model, kind, axis)
    np.testing.assert_array_equal(fn(variables, x, 0.0, key), plain)
    noisy = fn(variables, x, strength, key)
    assert np.abs(np.asarray(noisy) - np.asarray(plain)).max() > 1e-4, (kind, axis)


def test_resnet_injection_is_the_last_block_input(tiny):
  model, variables = tiny['resnet']
  x = tiny['x']
  assert inject.layers(model) == ('stages_0_0', 'stages_1_0', 'stages_2_0')
  bound = model.bind(variables)
  h = bound.backbone(x, 1)  # the input of the last block of the last stage
  want = bound.head(bound.stages[2][0](noise.linear_transform(h, 0.4, axis=0)))
  got = inject.apply(model, variables, x, noise=inject.Noise('linear', 0.4))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # An earlier layer: the input of stage 1's block.
  h0 = bound.backbone(x, 0)
  want = bound.head(bound.stages[2][0](bound.stages[1][0](noise.linear_transform(h0, 0.4, axis=0))))
  got = inject.apply(model, variables, x, noise=inject.Noise('linear', 0.4, layer='stages_1_0'))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_vit_injection_is_the_last_attention_input_without_cls(tiny):
  model, variables = tiny['vit']
  x = tiny['x']
  _, inter = model.apply(variables, x, capture_intermediates=True, mutable=['intermediates'])
  tokens = inter['intermediates']['Transformer']['encoderblock_0']['__call__'][0]  # [B, 1 + N, D]
  p = variables['params']['Transformer']['encoderblock_1']
  y = nn.LayerNorm(epsilon=1e-6).apply({'params': p['LayerNorm_0']}, tokens)
  y = jnp.concatenate([y[:, :1], noise.optimal_transform(y[:, 1:], 1.0, axis=0)], axis=1)
  attn = nn.MultiHeadDotProductAttention(num_heads=2, deterministic=True)
  t = tokens + attn.apply({'params': p['MultiHeadDotProductAttention_0']}, y, y)
  y = nn.LayerNorm(epsilon=1e-6).apply({'params': p['LayerNorm_1']}, t)
  t = t + vit.MlpBlock(mlp_dim=16).apply({'params': p['MlpBlock_0']}, y)
  t = nn.LayerNorm(epsilon=1e-6).apply({'params': variables['params']['Transformer']['encoder_norm']}, t)
  head = variables['params']['head']
  want = t[:, 0] @ head['kernel'] + head['bias']
  got = inject.apply(model, variables, x, noise=inject.Noise('optimal', 1.0))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('arch', ('resnet', 'vit'))
def test_per_sample_injection_does_not_depend_on_the_batch(tiny, arch):
  model, variables = tiny[arch]
  x = np.asarray(tiny['x'])
  other = x.copy()
  other[1:] = np.random.default_rng(9).normal(size=other[1:].shape)
  for kind, strength in (('linear', 0.4), ('optimal', 1.0)):
    run = lambda a, axis: np.asarray(_noisy_fn(model, kind, axis)(variables, jnp.asarray(a), strength, None))
    np.testing.assert_allclose(run(x, 'sample')[0], run(other, 'sample')[0], rtol=1e-5, atol=1e-6)
    assert np.abs(run(x, 'batch')[0] - run(other, 'batch')[0]).max() > 1e-4
    np.testing.assert_allclose(run(x[:1], 'batch'), np.asarray(_plain_fn(model)(variables, jnp.asarray(x[:1]))),
                               rtol=1e-5, atol=1e-6)  # a batch of one sees no noise


def test_injection_errors(tiny):
  model, variables = tiny['resnet']
  x = tiny['x']
  with pytest.raises(ValueError, match='stages_0_0.*stages_2_0'):
    inject.apply(model, variables, x, noise=inject.Noise('linear', 0.4, layer='stages_3_0'))
  vmodel, vvars = tiny['vit']
  with pytest.raises(ValueError, match='encoderblock_0'):
    inject.apply(vmodel, vvars, x, noise=inject.Noise('linear', 0.4, layer='block9'))
  with pytest.raises(TypeError, match='^key: got None'):
    inject.apply(model, variables, x, noise=inject.Noise('gaussian', 1.0))
  with pytest.raises(ValueError, match='noise.layer'):  # feature extraction stops before the layer
    jax.eval_shape(lambda v: inject.apply(model, v, x, 0, noise=inject.Noise('linear', 0.4),
                                          method=resnet.ResNet.backbone), variables)
  # A 1x1 map has a single position: the per-sample mix cannot happen.
  one = resnet.ResNet((1, 1), (4, 8), num_classes=3, stem='imagenet', stem_width=4)
  xs = jnp.zeros((2, 4, 4, 1))
  v = jax.eval_shape(one.init, jax.random.key(0), xs)
  with pytest.raises(ValueError, match='axis'):
    jax.eval_shape(lambda v: inject.apply(one, v, xs, noise=inject.Noise('linear', 0.4, axis='sample')), v)


# --------------------------------------------------------------------------------------------- leak detector


def _train_on_sorted_chunks(axis, n=1024, d=8, classes=4, k=64, steps=400, seed=0):
  """A small MLP on mixed features of a random-label problem, trained on fixed class-sorted chunks."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.permutation(np.repeat(np.arange(classes), n // classes))
  mlp = nn.Sequential([nn.Dense(64), nn.relu, nn.Dense(classes)])

  def predict(params, xs):  # xs [n, d] in batch order -> predicted labels [n]
    chunks = jnp.asarray(xs).reshape(-1, k, d)
    mixed = jax.vmap(lambda c: noise.optimal_transform(c, 1.0, axis=axis))(chunks)
    return jnp.argmax(mlp.apply(params, mixed), -1).reshape(-1)

  order = np.argsort(y, kind='stable')
  xs, ys = jnp.asarray(x[order]).reshape(-1, k, d), jnp.asarray(y[order]).reshape(-1, k)
  opt = optax.adam(1e-2)

  def loss(params):
    mixed = jax.vmap(lambda c: noise.optimal_transform(c, 1.0, axis=axis))(xs)
    return optax.softmax_cross_entropy_with_integer_labels(mlp.apply(params, mixed), ys).mean()

  @jax.jit
  def train(params):
    def body(carry, _):
      params, state = carry
      updates, state = opt.update(jax.grad(loss)(params), state)
      return (optax.apply_updates(params, updates), state), None
    return jax.lax.scan(body, (params, opt.init(params)), None, steps)[0][0]

  params = train(mlp.init(jax.random.key(seed), jnp.zeros((1, d))))
  perm = np.random.default_rng(seed + 1).permutation(n)
  sorted_pred = np.asarray(predict(params, x[order]))[np.argsort(order)]
  shuffled_pred = np.asarray(predict(params, x[perm]))[np.argsort(perm)]
  return y, sorted_pred, shuffled_pred


@pytest.fixture(scope='module')
def batch_leak():
  return _train_on_sorted_chunks(axis=0)


def test_random_labels_class_sorted_batches_leak(batch_leak):
  y, sorted_pred, shuffled_pred = batch_leak
  chance, n = 0.25, len(y)
  tol = 4 * np.sqrt(chance * (1 - chance) / n)
  assert np.mean(sorted_pred == y) > 0.9          # far above chance: the labels came through the batch
  assert abs(np.mean(shuffled_pred == y) - chance) < tol  # at chance once the batches are shuffled


def test_random_labels_per_sample_mix_cannot_leak():
  # Mixing the features within each sample (axis 1 of a [k, d] chunk): the batch cannot matter at all.
  y, sorted_pred, shuffled_pred = _train_on_sorted_chunks(axis=1, steps=50)
  np.testing.assert_array_equal(sorted_pred, shuffled_pred)
