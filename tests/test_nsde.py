"""srjax.nsde: sigma = 0 is the ConvNeXt; zero drift gives variance sigma^2 T; diffrax == lax.scan; noise shapes."""
from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srjax import attribution, nsde
from srjax.models import convnext
from srjax.models.apply_fn import deterministic

MODEL = convnext.ConvNeXt(num_classes=3, depths=(2, 1), dims=(8, 16), stem_patch=2, layer_scale_init=1.0,
                          input_mean=0.5, input_std=0.25)
X = jax.random.uniform(jax.random.key(1), (3, 8, 8, 1))
ATTR, SCAN = nsde.AttributionShaped(), nsde.ScanEuler()


@pytest.fixture(scope='module')
def variables():
  """The model's init plus N(0, 0.3) on every leaf: the default init's 0.02 kernels make blocks nearly
  inert, which would let a test pass with the blocks skipped."""
  params = jax.jit(MODEL.init)(jax.random.key(0), X)['params']
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(9), len(leaves))
  noisy = [a + 0.3 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
  return {'params': jax.tree.unflatten(tree, noisy)}


@functools.partial(jax.jit, static_argnames=('noise', 'solver', 'path'))
def _nsde(variables, x, key, noise_map=None, *, sigma, noise=nsde.Brownian(), solver=nsde.DiffraxEuler(),
          path=nsde.Folded()):
  # sigma is the SDE's pytree leaf, traced here, so every sigma shares one compile per (noise, solver, path).
  return nsde.apply(MODEL, variables, x, key, sde=nsde.SDE(sigma, noise, path, solver), noise_map=noise_map)


def test_sigma_zero_is_the_convnext_with_the_same_params(variables):
  want = jax.jit(MODEL.apply)(variables, X)
  # With layer scale 1 the blocks matter: zeroing their gammas changes the logits.
  no_blocks = jax.tree_util.tree_map_with_path(
      lambda p, a: a * 0 if 'gamma' in jax.tree_util.keystr(p) else a, variables)
  assert float(jnp.max(jnp.abs(jax.jit(MODEL.apply)(no_blocks, X) - want))) > 1e-2
  for solver in (nsde.DiffraxEuler(), nsde.ScanEuler()):
    got = _nsde(variables, X, jax.random.key(5), sigma=0.0, solver=solver)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_diffrax_and_scan_solve_the_same_sde_and_noise_is_on(variables):
  key = jax.random.key(7)
  a = _nsde(variables, X, key, sigma=0.3)
  b = _nsde(variables, X, key, sigma=0.3, solver=SCAN)
  np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  assert float(jnp.max(jnp.abs(a - _nsde(variables, X, jax.random.key(8), sigma=0.3)))) > 1e-3
  # The attribution shape S multiplies the noise: S = 1 is the Brownian case, S = 0 removes the noise.
  ones = jnp.ones(X.shape[:3])
  np.testing.assert_allclose(_nsde(variables, X, key, ones, sigma=0.3, noise=ATTR), a, atol=1e-6)
  np.testing.assert_allclose(_nsde(variables, X, key, 0 * ones, sigma=0.3, noise=ATTR),
                             _nsde(variables, X, key, sigma=0.0), atol=1e-6)


@pytest.mark.parametrize('path, smoothing', [(nsde.Folded(), 0.0), (nsde.VirtualTree(), 0.0), (nsde.Folded(), 1.5)])
def test_zero_drift_variance_is_sigma_squared_t(path, smoothing):
  """gamma = 0 makes every drift zero, so x_T = x_0 + sigma S W_T with Var = sigma^2 T for every shape."""
  c, depth, sigma = 4, 5, 0.7
  block = convnext.Block(layer_scale_init=0.0)
  params = block.init(jax.random.key(0), jnp.zeros((1, 4, 4, c)))['params']
  stacked = jax.tree.map(lambda a: jnp.stack([a] * depth), params)
  y0 = jnp.full((512, 8, 8, c), 3.0)

  @jax.jit
  def solve(key):
    return nsde.solve_stage(block, stacked, y0, key, sigma=sigma, shape=jnp.ones(()), rates=jnp.zeros(depth),
                            smoothing=smoothing, path=path)
  y = np.asarray(solve(jax.random.key(11))) - 3.0
  # Four standard errors; a blur of std s correlates ~pi s^2 (variance) / 4 pi s^2 (mean) neighbours.
  n = y.size
  assert abs(y.mean()) < 4 * sigma * np.sqrt(depth * (4 * np.pi * smoothing ** 2 + 1) / n)
  np.testing.assert_allclose(y.var(), sigma ** 2 * depth, rtol=4 * np.sqrt(2 * (np.pi * smoothing ** 2 + 1) / n))
  corr = np.mean(y[:, :-1] * y[:, 1:]) / y.var()     # neighbouring rows of the feature map
  if smoothing:
    assert corr > 0.5                                  # spatially correlated
  else:
    assert abs(corr) < 0.05


def test_predict_averages_the_softmax_over_draws():
  """`predict` is generic over apply_fn: checked on a cheap stochastic model against a Python loop."""
  def apply_fn(w, x, rng):
    return x.reshape(x.shape[0], -1)[:, :4] @ w + jax.random.normal(rng, (x.shape[0], 4))
  w = jax.random.normal(jax.random.key(2), (4, 4))
  key = jax.random.key(3)
  probs = jax.jit(nsde.Predict(apply_fn, draws=3))(w, X, key)
  chex.assert_shape(probs, (3, 4))
  want = np.mean([jax.nn.softmax(apply_fn(w, X, jax.random.fold_in(key, i)), -1) for i in range(3)], axis=0)
  np.testing.assert_allclose(probs, want, atol=1e-6)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
  assert float(jnp.max(jnp.abs(probs - jax.nn.softmax(apply_fn(w, X, key), -1)))) > 1e-3


def test_attribution_noise_map_is_mean_one_and_nonnegative():
  a = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  m = attribution.noise_map(a, normalize='mean')
  chex.assert_shape(m, (2, 8, 8, 1))
  assert float(m.min()) >= 0
  np.testing.assert_allclose(m.mean(axis=(1, 2, 3)), 1.0, rtol=1e-5)


def test_errors_name_the_argument(variables):
  key = jax.random.key(0)
  for bad, field in ((dict(sigma=-0.1), 'SDE.sigma'), (dict(noise='pink'), 'SDE.noise'),
                     (dict(solver='rk4'), 'SDE.solver'), (dict(path='tree'), 'SDE.path')):
    with pytest.raises(ValueError, match=f'^{field}: got'):
      nsde.SDE(**bad)                                     # refused when the value is built, naming the field
  with pytest.raises(ValueError, match='^Smoothed.std: got 0.0'):
    nsde.Smoothed(0.0)
  with pytest.raises(ValueError, match='^VirtualTree.tol: got -1.0'):
    nsde.VirtualTree(-1.0)
  with pytest.raises(TypeError, match='^sde: got'):
    nsde.apply(MODEL, variables, X, key, sde={'sigma': 0.1})
  with pytest.raises(ValueError, match='noise_map'):
    nsde.apply(MODEL, variables, X, key, sde=nsde.SDE(0.1, nsde.AttributionShaped()))
  with pytest.raises(ValueError, match='noise_map'):
    nsde.apply(MODEL, variables, X, key, sde=nsde.SDE(0.1, nsde.AttributionShaped()), noise_map=jnp.ones((3, 4, 4)))
  with pytest.raises(ValueError, match='sigma'):
    nsde.NSDEApply(MODEL, nsde.SDE(sigma=-1.0))


def test_an_sde_is_a_hashable_value_and_from_config_spells_the_names_once():
  """Equal options give equal, hashable SDEs (one jit cache entry); `from_config` maps each config name to its
  value, gives None for the ConvNeXt, and refuses an unknown name naming the config field."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  a, b = nsde.SDE(0.2, nsde.Smoothed(1.5)), nsde.SDE(0.2, nsde.Smoothed(1.5))
  assert a == b and hash(a) == hash(b) and a != nsde.SDE(0.2, nsde.Smoothed(2.0)) and a != nsde.SDE(0.2)
  m = ml_collections.ConfigDict({'kind': 'nsde', 'sigma': 0.3, 'noise': 'smoothed', 'smoothing': 2.0,
                                 'path': 'tree', 'solver': 'scan'})
  assert nsde.from_config(m) == nsde.SDE(0.3, nsde.Smoothed(2.0), nsde.VirtualTree(), nsde.ScanEuler())
  m.noise, m.path, m.solver = 'brownian', 'folded', 'diffrax'
  assert nsde.from_config(m) == nsde.SDE(0.3)
  m.noise = 'attribution'
  assert nsde.from_config(m).noise == nsde.AttributionShaped()
  m.kind = 'convnext'
  assert nsde.from_config(m) is None
  m.kind, m.solver = 'nsde', 'rk4'
  with pytest.raises(ValueError, match="^model.solver: got 'rk4'"):
    nsde.from_config(m)


# --- noise independence, spatial shapes, training mode -----------------------------------------------------------

def _zero_drift_stage(depth, c=4):
  block = convnext.Block(layer_scale_init=0.0)
  params = block.init(jax.random.key(0), jnp.zeros((1, 4, 4, c)))['params']
  return block, jax.tree.map(lambda a: jnp.stack([a] * depth), params)


def _corr(a, b):
  a, b = np.ravel(a) - np.mean(a), np.ravel(b) - np.mean(b)
  return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_brownian_increments_are_independent_across_steps_examples_stages_and_draws():
  """With zero drift the stage output is y0 + sigma S (W_t - W_0): the increments of steps 0 and 1 (from runs of
  depth 1 and 2 with one key), of neighbouring examples, of two stages' keys and of two draws' keys are
  uncorrelated (|corr| < 4 / sqrt(n)); the same key gives the same path."""
  sigma, b, hw, c = 0.5, 64, 4, 4
  y0 = jnp.zeros((b, hw, hw, c))

  @functools.partial(jax.jit, static_argnames='depth')
  def increments(key, depth):
    block, stacked = _zero_drift_stage(depth, c)
    return nsde.solve_stage(block, stacked, y0, key, sigma=sigma, shape=jnp.ones(()), rates=jnp.zeros(depth),
                            solver=SCAN) / sigma

  key = jax.random.key(21)
  one, two = np.asarray(increments(key, 1)), np.asarray(increments(key, 2))
  first, second = one, two - one
  n = first.size
  bound = 4 / np.sqrt(n)
  np.testing.assert_allclose([first.var(), second.var()], 1.0, atol=4 * np.sqrt(2 / n))
  assert abs(_corr(first, second)) < bound                                   # steps
  assert abs(_corr(first[:-1], first[1:])) < 4 / np.sqrt(first[1:].size)    # examples
  stage0, stage1 = (np.asarray(increments(jax.random.fold_in(key, s), 1)) for s in (0, 1))
  assert abs(_corr(stage0, stage1)) < bound                                  # stages (nsde.apply's stage keys)
  assert abs(_corr(one, np.asarray(increments(jax.random.key(22), 1)))) < bound   # draws
  np.testing.assert_array_equal(np.asarray(increments(key, 2)), two)         # same key, same path


def _hand_block_mean(m, h, w):
  """Block means of m [B, H, W] over (H/h) x (W/w) blocks, by explicit loops."""
  bsz, big_h, big_w = m.shape
  fh, fw = big_h // h, big_w // w
  out = np.zeros((bsz, h, w))
  for i in range(h):
    for j in range(w):
      out[:, i, j] = m[:, i * fh:(i + 1) * fh, j * fw:(j + 1) * fw].mean(axis=(1, 2))
  return out


def test_stages_use_their_own_keys_and_the_block_mean_of_a_non_square_attribution_map(variables):
  """`nsde.apply` equals the stage-by-stage composition of `solve_stage` with stage s's key fold_in(key, s) and
  S = the attribution map block-averaged by hand to the stage's resolution, on a non-square input (8 x 16, stages
  4 x 8 and 2 x 4) and a map of distinct values."""
  x = jax.random.uniform(jax.random.key(4), (2, 8, 16, 1))
  m = (np.arange(2 * 8 * 16).reshape(2, 8, 16) % 37 + 1.0) / 37.0       # distinct within every block row
  m[1] = m[1][::-1, ::-1]
  key, sigma = jax.random.key(6), 0.4
  got = _nsde(variables, x, key, jnp.asarray(m, jnp.float32), sigma=sigma, noise=ATTR, solver=SCAN)

  stages = []

  def by_hand(s, blocks, params, y):   # the ConvNeXt's stage hook, written here from solve_stage alone
    stages.append(s)
    shape = _hand_block_mean(m, y.shape[1], y.shape[2])[..., None]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
    return nsde.solve_stage(blocks[0], stacked, y, jax.random.fold_in(key, s), sigma=sigma,
                            shape=jnp.asarray(shape, jnp.float32), rates=jnp.zeros(len(blocks)), solver=SCAN)
  want = MODEL.apply(variables, x, advance=by_hand)
  assert stages == [0, 1]
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  # The map matters: its transpose-like flip gives other logits.
  flipped = _nsde(variables, x, key, jnp.asarray(m[:, ::-1], jnp.float32), sigma=sigma, noise=ATTR,
                  solver=SCAN)
  assert float(jnp.max(jnp.abs(flipped - got))) > 1e-3


def test_stochastic_depth_keeps_the_expectation_of_each_block(variables):
  """train=True, noise off: one block of rate 0.5 gives y0 + mask f(y0) / keep with mask ~ Bernoulli(keep) per
  example, so its mean over keys is the deterministic y0 + f(y0) within 4 standard errors (|f| / sqrt(K)); each
  draw is exactly y0 (dropped) or y0 + 2 f(y0) (kept). Two blocks of rates 0.25 and 0.5 drop together with
  probability 0.125 when their masks are independent."""
  block = convnext.Block(layer_scale_init=1.0, drop_path=0.5)
  params = variables['params']['stage0_block0']
  y0 = jax.random.normal(jax.random.key(3), (4, 4, 4, 8))
  keys = jax.random.split(jax.random.key(5), 1000)

  @functools.partial(jax.jit, static_argnames=('depth', 'train'))
  def run(keys, rates, *, depth, train):
    stacked = jax.tree.map(lambda a: jnp.stack([a] * depth), params)
    return jax.vmap(lambda k: nsde.solve_stage(block, stacked, y0, k, sigma=0.0, shape=jnp.ones(()),
                                               rates=rates, solver=SCAN, train=train))(keys)

  f = np.asarray(block.apply({'params': params}, y0, method=convnext.Block.residual))
  det = np.asarray(y0) + f                                                    # the deterministic block
  draws = np.asarray(run(keys, jnp.asarray([0.5]), depth=1, train=True))
  kept = np.abs(draws - np.asarray(y0)).max(axis=(2, 3, 4)) > 1e-6            # [K, B]
  want = np.where(kept[..., None, None, None], np.asarray(y0) + 2 * f, np.asarray(y0))
  np.testing.assert_allclose(draws, want, atol=1e-5)
  bound = 4 * np.abs(f) / np.sqrt(len(keys)) + 1e-5
  assert np.all(np.abs(draws.mean(0) - det) <= bound)
  assert np.all(np.abs(kept.mean(0) - 0.5) < 4 * np.sqrt(0.25 / len(keys)))
  # Two blocks: both dropped exactly when the output is y0.
  both = np.asarray(run(keys, jnp.asarray([0.25, 0.5]), depth=2, train=True))
  dropped = np.abs(both - np.asarray(y0)).max(axis=(2, 3, 4)) < 1e-6
  assert abs(dropped.mean() - 0.125) < 4 * np.sqrt(0.125 * 0.875 / dropped.size)


def test_nsde_in_training_mode_drops_each_block_with_its_rate(variables):
  """nsde.apply(train=True) with sigma = 0 on a one-stage ConvNeXt with rates [0, 0.5]: block 1 is dropped
  (logits of the ConvNeXt with that block's gamma zeroed) or kept and rescaled (gamma doubled), about half the
  time each, as the ConvNeXt's own stochastic depth does."""
  model = convnext.ConvNeXt(num_classes=3, depths=(2,), dims=(8,), stem_patch=2, layer_scale_init=1.0,
                            drop_path_rate=0.5, input_mean=0.5, input_std=0.25)
  p = {k: v for k, v in variables['params'].items() if k in ('stem', 'stage0_block0', 'stage0_block1')}
  p['head'] = model.init(jax.random.key(0), X)['params']['head']
  p['head'] = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(1), a.shape), p['head'])
  v = {'params': p}
  scaled = lambda g: {'params': dict(p, stage0_block1=dict(p['stage0_block1'],
                                                           gamma=g * p['stage0_block1']['gamma']))}
  dropped, kept = (np.asarray(jax.jit(model.apply)(scaled(g), X)) for g in (0.0, 2.0))
  assert np.abs(dropped - kept).min() > 1e-3
  keys = jax.random.split(jax.random.key(2), 64)
  sde = nsde.SDE(0.0, solver=SCAN)
  logits = np.asarray(jax.jit(jax.vmap(lambda k: nsde.apply(model, v, X, k, sde=sde, train=True)))(keys))
  is_kept = np.abs(logits - kept).max(-1) < 1e-4
  is_dropped = np.abs(logits - dropped).max(-1) < 1e-4
  assert np.all(is_kept | is_dropped)
  assert abs(is_kept.mean() - 0.5) < 4 * np.sqrt(0.25 / is_kept.size)


def test_attribution_noise_map_documented_call_feeds_nsde_apply(variables):
  """The call srjax.attribution.noise_map documents: IG attributions of x -> noise_map(a) -> nsde.apply's map."""
  target = jnp.zeros(X.shape[0], jnp.int32)
  a = attribution.integrated_gradients(deterministic(jax.jit(MODEL.apply)), variables, X, target, steps=4)
  m = attribution.noise_map(a)
  chex.assert_shape(m, X.shape[:3] + (1,))
  key = jax.random.key(7)
  shaped = _nsde(variables, X, key, m, sigma=0.3, noise=ATTR)
  # sigma * S: doubling the map is doubling sigma, and a non-constant map is not the Brownian case.
  np.testing.assert_allclose(_nsde(variables, X, key, 2 * m, sigma=0.15, noise=ATTR), shaped, atol=1e-5)
  assert float(jnp.max(jnp.abs(shaped - _nsde(variables, X, key, sigma=0.3)))) > 1e-4
