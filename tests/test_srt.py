"""Tests for srjax.srt against brute-force NumPy references, exact identities and equivariance.

Conventions under test (module docstring of srjax/srt.py): shifted[y, x] = img[y - dy, x - dx]; features are
upsampled nearest by p and read back at (y + dy, x + dx); back_fill='zeros' averages zero-filled maps over all
offsets (the reference), back_fill='exclude' averages each pixel over the offsets that cover it.
"""
from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srjax.models import vit
from srjax import srt_lib
from srjax.srt_lib import offsets_grid, shift, srt

# ---------------------------------------------------------------------------------------------------------
# Toy feature extractors (module-level functions: hashable, so srt's jit cache is shared across tests).

# Variances of features ~1e3 with spread ~1 over offsets: float32 rounding of the mean (ulp(1e3) = 6e-5)
# bounds the achievable absolute error near 1e-4; a naive E[x^2] - E[x]^2 is off by ~0.5.
VAR_TOL = dict(rtol=1e-4, atol=5e-4)

P = 4  # patch stride of the toy models and the tiny ViT
H = W = 16


def patch_model(params, x):
  """Stride-P patch embedding (a PxP conv with stride P), tanh, pointwise layer, plus a large constant.

  The constant (params['bias'] = 1e3) makes naive sum-of-squares variance fail in float32.
  """
  y = jax.lax.conv_general_dilated(x, params['w1'], (P, P), 'VALID',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return jnp.tanh(y) @ params['w2'] + params['bias']


def patch8_model(params, x):
  """Like patch_model with stride 8: with d = 2 the 8 pixel phases of a cell form 5 classes (srt docstring)."""
  y = jax.lax.conv_general_dilated(x, params['w8'], (8, 8), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return jnp.tanh(y) @ params['w2'] + params['bias']


def conv3_model(params, x):
  """Stride-1 3x3 'SAME' convolution (zero padding), then tanh: translation-equivariant, p = 1."""
  y = jax.lax.conv_general_dilated(x, params['w1'], (1, 1), 'SAME',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return jnp.tanh(y)


def patch_mean(params, x):
  """2x2 average pooling (stride 2): the fill of a shifted image shows up in the border tokens."""
  del params
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean((2, 4))


def no_batch_model(params, x):
  del params
  return x[0]


@pytest.fixture(scope='module')
def toy():
  rng = np.random.RandomState(0)
  params = {'w1': jnp.asarray(rng.randn(P, P, 3, 6) * 0.3, jnp.float32),
            'w2': jnp.asarray(rng.randn(6, 5), jnp.float32),
            'bias': jnp.float32(1e3), 'w8': jnp.asarray(rng.randn(8, 8, 3, 6) * 0.15, jnp.float32)}
  conv_params = {'w1': jnp.asarray(rng.randn(3, 3, 3, 4) * 0.4, jnp.float32)}
  img = jnp.asarray(rng.rand(2, H, W, 3), jnp.float32)
  return params, conv_params, img


@pytest.fixture(scope='module')
def tiny_vit():
  model = vit.ViT(patch_size=P, width=16, depth=1, mlp_dim=32, num_heads=2, posemb_grid=(H // P, W // P),
                  exact_gelu=True)
  img = jnp.asarray(np.random.RandomState(1).randn(2, H, W, 3), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), img)['params']  # no init compile: random leaves
  rng = np.random.RandomState(2)
  params = jax.tree.map(lambda s: jnp.asarray(rng.randn(*s.shape) * 0.5, jnp.float32), shapes)
  return vit.features(model), params, img


# ---------------------------------------------------------------------------------------------------------
# Brute-force NumPy reference: every shifted image is run separately through the model (a black box).


def np_shift(img, dy, dx, padding):
  """out[:, y, x] = img[:, y - dy, x - dx], with the fill rules of the srt docstring, by index arithmetic."""
  _, h, w, _ = img.shape

  def index(n, s):
    i = np.arange(n) - s
    if padding == 'edge':
      return np.clip(i, 0, n - 1), np.ones(n, bool)
    if padding == 'reflect':
      i = np.abs(i)  # ... 2 1 | 0 1 2 ...
      i = np.where(i > n - 1, 2 * (n - 1) - i, i)
      return i, np.ones(n, bool)
    return np.clip(i, 0, n - 1), (i >= 0) & (i < n)
  iy, my = index(h, dy)
  ix, mx = index(w, dx)
  return img[:, iy][:, :, ix] * (my[:, None] & mx[None, :])[None, :, :, None]


def np_samples(apply_fn, params, img, offsets, padding='zeros'):
  """Back-shifted upsampled maps b_o [N, B, H, W, C] and their validity masks [N, H, W] (float64)."""
  img = np.asarray(img, np.float64)
  _, hh, ww, _ = img.shape
  maps, masks = [], []
  for dy, dx in offsets:
    shifted = np_shift(img, dy, dx, padding).astype(np.float32)
    f = np.asarray(apply_fn(params, jnp.asarray(shifted)), np.float64)
    py, px = hh // f.shape[1], ww // f.shape[2]
    up = np.repeat(np.repeat(f, py, axis=1), px, axis=2)
    b = np.zeros_like(up)
    mask = np.zeros((hh, ww), bool)
    for y in range(hh):
      for x in range(ww):
        if 0 <= y + dy < hh and 0 <= x + dx < ww:
          b[:, y, x] = up[:, y + dy, x + dx]
          mask[y, x] = True
    maps.append(b)
    masks.append(mask)
  return np.stack(maps), np.stack(masks)


def np_weights(masks, back_fill):
  """pi_o(x) [N, H, W]: mask/count ('exclude') or 1/N ('zeros')."""
  if back_fill == 'zeros':
    return np.full(masks.shape, 1.0 / len(masks))
  count = masks.sum(0)
  return masks / np.maximum(count, 1)


def np_pixel_stats(maps, masks, back_fill):
  pi = np_weights(masks, back_fill)[:, None, :, :, None]
  mean = (pi * maps).sum(0)
  var = (pi * (maps - mean) ** 2).sum(0) / np.maximum(pi.sum(0), 1e-300)
  valid = np.broadcast_to(pi > 0, maps.shape)
  med = np.nanmedian(np.where(valid, maps, np.nan), axis=0)
  return mean, var, med


def pool(x, p):
  b, hh, ww, c = x.shape
  return x.reshape(b, hh // p, p, ww // p, p, c).mean((2, 4))


def np_token_stats(maps, masks, back_fill, p):
  """Token samples t_o = pi-weighted cell average of b_o, weights w_o = cell mean of pi_o (srt docstring)."""
  pi = np_weights(masks, back_fill)[:, None, :, :, None]
  n, b, hh, ww, c = maps.shape
  w_o = pool(pi[:, 0], p)[:, None]  # [N, 1, h, w, 1]
  s_o = np.stack([pool(pi[i] * maps[i], p) for i in range(n)])
  t_o = s_o / np.where(w_o > 0, w_o, 1)
  mean = (w_o * t_o).sum(0)
  m = mean / w_o.sum(0)
  var = (w_o * (t_o - m) ** 2).sum(0) / w_o.sum(0)
  med = np.nanmedian(np.where(np.broadcast_to(w_o > 0, t_o.shape), t_o, np.nan), axis=0)
  return mean, var, med


# ---------------------------------------------------------------------------------------------------------
# Tests.


def test_d0_equals_single_forward(tiny_vit):
  fn, params, img = tiny_vit
  single = np.asarray(fn(params, img))
  tok = srt(fn, params, img, d=0)
  chex.assert_shape(tok, (2, H // P, W // P, 16))
  chex.assert_type(tok, jnp.float32)
  np.testing.assert_allclose(np.asarray(tok), single, atol=1e-5)
  pix = srt(fn, params, img[0], d=0, output='pixel', back_fill='zeros')  # one image, no batch axis
  chex.assert_shape(pix, (H, W, 16))
  np.testing.assert_allclose(np.asarray(pix), np.repeat(np.repeat(single[0], P, 0), P, 1), atol=1e-5)


@pytest.mark.parametrize('back_fill', ['exclude', 'zeros'])
def test_token_equals_pooled_pixel(tiny_vit, back_fill):
  fn, params, img = tiny_vit
  offs = offsets_grid(3, reference=True)  # |shift| = 3 < P = 4, identity twice
  tok = srt(fn, params, img, offsets=offs, back_fill=back_fill)
  pix = srt(fn, params, img, offsets=offs, output='pixel', back_fill=back_fill)
  np.testing.assert_allclose(np.asarray(tok), np.asarray(pool(pix, P)), atol=1e-5)
  # The result is not the single pass (the test would notice a no-op).
  assert np.abs(np.asarray(tok) - np.asarray(fn(params, img))).max() > 1e-3


def test_reference_algorithm_bruteforce(tiny_vit):
  """srt(output='pixel') with the reference's offsets, zero fill and back_fill='zeros' is Algorithm 1 as the
  official code runs it: shift, forward, upsample, back-shift, sum, divide by len(offsets)."""
  fn, params, img = tiny_vit
  offs = offsets_grid(2, reference=True)
  maps, _ = np_samples(fn, params, img, offs)
  expected = maps.sum(0) / len(offs)
  pix = srt(fn, params, img, offsets=offs, output='pixel', back_fill='zeros', chunk_size=5)
  np.testing.assert_allclose(np.asarray(pix), expected, atol=1e-5)
  tok = srt(fn, params, img, offsets=offs, back_fill='zeros', chunk_size=5)
  np.testing.assert_allclose(np.asarray(tok), pool(expected, P), atol=1e-5)


def test_equivariant_conv_interior(toy):
  """A stride-1 'SAME' conv commutes with shifts away from the border: SRT equals one pass on pixels at
  distance >= d + 1 (shift + kernel radius) from the border, and not at the border (zero fill enters)."""
  _, conv_params, img = toy
  d = 2
  single = np.asarray(conv3_model(conv_params, img))
  out = np.asarray(srt(conv3_model, conv_params, img, d=d, output='pixel'))
  r = d + 1
  np.testing.assert_allclose(out[:, r:-r, r:-r], single[:, r:-r, r:-r], atol=1e-5)
  assert np.abs(out[:, 0] - single[:, 0]).max() > 1e-3


def test_equivariant_patch_model_whole_token_shifts(toy):
  """Shifts by multiples of the stride commute exactly with a patch-embedding model, so with back_fill=
  'exclude' SRT over such shifts equals the single pass everywhere (fill only lands on uncovered pixels)."""
  params, _, img = toy
  offs = [(0, 0), (P, 0), (0, -P), (-P, P), (2 * P, 2 * P)]
  single = np.asarray(patch_model(params, img))
  expected = np.repeat(np.repeat(single, P, 1), P, 2)
  for padding in ('zeros', 'edge'):
    out = srt(patch_model, params, img, offsets=offs, output='pixel', padding=padding)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6)


def test_chunk_size_does_not_change_result(toy):
  params, _, img = toy
  ref_tok = srt(patch_model, params, img, d=2, chunk_size=25, aggregate='mean_var')
  ref_pix = srt(patch_model, params, img, d=2, chunk_size=25, output='pixel')
  for chunk in (1, 7):  # 7 -> 5 chunks of 5 (plan_chunks); chunk_size=4 below pads one slot
    tok = srt(patch_model, params, img, d=2, chunk_size=chunk, aggregate='mean_var')
    np.testing.assert_allclose(np.asarray(tok[0]), np.asarray(ref_tok[0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(tok[1]), np.asarray(ref_tok[1]), **VAR_TOL)
    pix = srt(patch_model, params, img, d=2, chunk_size=chunk, output='pixel')
    np.testing.assert_allclose(np.asarray(pix), np.asarray(ref_pix), rtol=1e-6)


@pytest.mark.parametrize('back_fill', ['exclude', 'zeros'])
def test_stats_match_bruteforce(toy, back_fill):
  """Mean, streamed variance and median equal the statistics of the stacked brute-force samples, for both
  outputs. The features carry a constant 1e3 while the spread over offsets is ~1, so a naive float32
  E[x^2] - E[x]^2 would be off by O(1e3 * 1e3 * 2^-24) ~ 0.06 while the Chan merge is accurate."""
  params, _, img = toy
  offs = offsets_grid(2)
  maps, masks = np_samples(patch_model, params, img, offs)
  p_mean, p_var, p_med = np_pixel_stats(maps, masks, back_fill)
  t_mean, t_var, t_med = np_token_stats(maps, masks, back_fill, P)
  assert p_var.max() > 0.1 and t_var.max() > 0.01
  kw = dict(offsets=offs, back_fill=back_fill, chunk_size=4)
  mean, var = srt(patch_model, params, img, aggregate='mean_var', output='pixel', **kw)
  np.testing.assert_allclose(np.asarray(mean), p_mean, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(var), p_var, **VAR_TOL)
  np.testing.assert_allclose(np.asarray(srt(patch_model, params, img, aggregate='var', output='pixel', **kw)),
                             p_var, **VAR_TOL)
  med = srt(patch_model, params, img, aggregate='median', output='pixel', **kw)
  np.testing.assert_allclose(np.asarray(med), p_med, rtol=1e-6)

  mean, var = srt(patch_model, params, img, aggregate='mean_var', **kw)
  np.testing.assert_allclose(np.asarray(mean), t_mean, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(var), t_var, **VAR_TOL)
  np.testing.assert_allclose(np.asarray(srt(patch_model, params, img, **kw)), t_mean, rtol=1e-6)
  med = srt(patch_model, params, img, aggregate='median', **kw)
  np.testing.assert_allclose(np.asarray(med), t_med, rtol=1e-6)
  # With back_fill='zeros' (and in the interior), the token variance is the variance of the pooled maps.
  if back_fill == 'zeros':
    np.testing.assert_allclose(np.asarray(var), pool_var(maps), **VAR_TOL)


@pytest.mark.parametrize('back_fill', ['exclude', 'zeros'])
def test_stats_stride8_phase_classes(toy, back_fill):
  """Stride 8 and d = 2: fewer phase classes (5) than phases (8), so the class-resolution pixel path is
  exercised (with stride 4 and d >= 2 every phase is its own class). Checked against the brute force."""
  params, _, img = toy
  offs = offsets_grid(2)
  maps, masks = np_samples(patch8_model, params, img, offs)
  p_mean, p_var, p_med = np_pixel_stats(maps, masks, back_fill)
  t_mean, t_var, _ = np_token_stats(maps, masks, back_fill, 8)
  kw = dict(offsets=offs, back_fill=back_fill, chunk_size=9)
  mean, var = srt(patch8_model, params, img, aggregate='mean_var', output='pixel', **kw)
  np.testing.assert_allclose(np.asarray(mean), p_mean, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(var), p_var, **VAR_TOL)
  np.testing.assert_allclose(np.asarray(srt(patch8_model, params, img, output='pixel', **kw)), p_mean, rtol=1e-6)
  med = srt(patch8_model, params, img, aggregate='median', output='pixel', **kw)
  np.testing.assert_allclose(np.asarray(med), p_med, rtol=1e-6)
  mean, var = srt(patch8_model, params, img, aggregate='mean_var', **kw)
  np.testing.assert_allclose(np.asarray(mean), t_mean, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(var), t_var, **VAR_TOL)


def test_phase_classes():
  from srjax._src.srt import _phase_classes  # pylint: disable=g-import-not-at-top
  reps, cls = _phase_classes(np.arange(-3, 4), 16)
  np.testing.assert_array_equal(cls, [0, 1, 2] + [3] * 10 + [4, 5, 6])
  np.testing.assert_array_equal(cls[reps], np.arange(7))
  _, cls = _phase_classes(np.array([0]), 16)
  np.testing.assert_array_equal(cls, np.zeros(16))
  _, cls = _phase_classes(np.arange(-2, 3), 4)  # 2d + 1 > p: every phase is its own class
  assert len(np.unique(cls)) == 4


def pool_var(maps):
  pooled = np.stack([pool(m, P) for m in maps])
  return pooled.var(0)


def test_shift_padding_modes_on_ramp():
  ramp = jnp.asarray(np.arange(1, 7, dtype=np.float32)[None, :, None] * np.ones((6, 1, 1), np.float32))
  row = lambda a: np.asarray(a)[0, :, 0]  # noqa: E731
  np.testing.assert_array_equal(row(shift(ramp, (0, 2), 'zeros')), [0, 0, 1, 2, 3, 4])
  np.testing.assert_array_equal(row(shift(ramp, (0, 2), 'edge')), [1, 1, 1, 2, 3, 4])
  np.testing.assert_array_equal(row(shift(ramp, (0, 2), 'reflect')), [3, 2, 1, 2, 3, 4])
  np.testing.assert_array_equal(row(shift(ramp, (0, -2), 'zeros')), [3, 4, 5, 6, 0, 0])
  np.testing.assert_array_equal(row(shift(ramp, (0, -2), 'edge')), [3, 4, 5, 6, 6, 6])
  np.testing.assert_array_equal(row(shift(ramp, (0, -2), 'reflect')), [3, 4, 5, 6, 5, 4])
  col = np.asarray(shift(jnp.transpose(ramp, (1, 0, 2)), (1, 0), 'reflect'))[:, 0, 0]  # dy moves content down
  np.testing.assert_array_equal(col, [2, 1, 2, 3, 4, 5])


@pytest.mark.parametrize('padding,fill', [('zeros', 0.0), ('edge', 1.0), ('reflect', 2.0)])
def test_padding_modes_through_srt(padding, fill):
  """With 2x2 mean pooling and the single offset (0, 1) on the ramp x + 1, the shifted image's column 0 is
  the fill, so the pixel output at column 0 is (fill + 1) / 2 (fill: 0, edge 1, reflect 2), elsewhere the
  token of the shifted image that covers x + 1."""
  ramp = jnp.asarray(np.tile(np.arange(1, 9, dtype=np.float32), (8, 1))[None, :, :, None])
  out = np.asarray(srt(patch_mean, None, ramp, offsets=[(0, 1)], output='pixel', padding=padding))[0, :, :, 0]
  np.testing.assert_allclose(out[:, 0], (fill + 1) / 2)
  np.testing.assert_allclose(out[:, 1], 2.5)  # shifted cols 2, 3 hold ramp values 2, 3
  np.testing.assert_allclose(out[:, 7], 0.0)  # x + 1 = 8 is outside: no offset covers it ('exclude' -> 0)
  out_v = np.asarray(srt(patch_mean, None, jnp.transpose(ramp, (0, 2, 1, 3)), offsets=[(-1, 0)],
                         output='pixel', padding=padding))[0, :, 0, 0]
  last = {'zeros': 0.0, 'edge': 8.0, 'reflect': 7.0}[padding]  # content moves up: the bottom row is fill
  np.testing.assert_allclose(out_v[7], (8 + last) / 2)


def test_np_shift_agrees_with_shift(toy):
  _, _, img = toy
  for padding in ('zeros', 'edge', 'reflect'):
    for off in ((2, -3), (-1, 0), (3, 3)):
      np.testing.assert_array_equal(np.asarray(shift(img, off, padding)), np_shift(np.asarray(img), *off, padding))


def test_compiles_once(toy, tiny_vit):
  calls = []

  def counted(params, x):
    calls.append(1)  # runs only while tracing
    return patch_model(params, x)
  params, _, img = toy
  srt(counted, params, img, d=1)
  n = len(calls)
  srt(counted, params, img + 1.0, d=1)
  assert len(calls) == n
  fn, vparams, vimg = tiny_vit
  model = fn.model
  a = srt(vit.features(model), vparams, vimg, d=1)
  size = _cache_size()
  b = srt(vit.features(model), vparams, vimg, d=1)  # a new but equal apply_fn reuses the compiled function
  assert _cache_size() == size
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _cache_size():
  return srt_lib.cache_size()


@pytest.mark.parametrize('kwargs,exc,name', [
    (dict(img=np.zeros((16, 16), np.float32)), ValueError, 'img'),
    (dict(img=np.zeros((1, 1, 16, 16, 3), np.float32)), ValueError, 'img'),
    (dict(img=np.zeros((1, 16, 16, 3), np.int32)), TypeError, 'img'),
    (dict(img=np.zeros((1, 18, 16, 3), np.float32)), ValueError, 'img'),
    (dict(d=-1), ValueError, 'd'),
    (dict(d=1.5), TypeError, 'd'),
    (dict(d=4), ValueError, 'offsets'),  # 4 >= P on the token path
    (dict(offsets=[(0, 0.5)]), ValueError, 'offsets'),
    (dict(offsets=[(0, 'a')]), TypeError, 'offsets'),
    (dict(offsets=[(0, 1, 2)]), ValueError, 'offsets'),
    (dict(offsets=[]), ValueError, 'offsets'),
    (dict(padding='wrap'), ValueError, 'padding'),
    (dict(output='dense'), ValueError, 'output'),
    (dict(aggregate='max'), ValueError, 'aggregate'),
    (dict(back_fill='nan'), ValueError, 'back_fill'),
    (dict(chunk_size=0), ValueError, 'chunk_size'),
    (dict(apply_fn=no_batch_model), ValueError, 'apply_fn'),
])
def test_errors(toy, kwargs, exc, name):
  params, _, img = toy
  args = dict(apply_fn=patch_model, params=params, img=img[:1], d=1)
  args.update(kwargs)
  with pytest.raises(exc, match=name):
    srt(args.pop('apply_fn'), args.pop('params'), args.pop('img'), **args)


def test_large_shift_allowed_on_pixel_path(toy):
  """|shift| >= p is an error only on the token path; the pixel path handles it (checked by brute force)."""
  params, _, img = toy
  offs = [(0, 0), (5, -6), (-4, 9)]
  maps, masks = np_samples(patch_model, params, img, offs)
  expected, _, _ = np_pixel_stats(maps, masks, 'exclude')
  out = srt(patch_model, params, img, offsets=offs, output='pixel')
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Shift with traced per-image offsets, the stepped grid, repeated offsets and chunk plans.


def test_shift_traced_per_image_offsets(toy):
  _, _, img = toy
  img3 = jnp.concatenate([img, img[:1] * 2.0])
  offs = np.array([[1, -2], [0, 0], [-3, 2]], np.int32)
  for padding in ('zeros', 'edge', 'reflect'):
    got = jax.jit(lambda x, o, p=padding: shift(x, o, p, max_shift=3))(img3, jnp.asarray(offs))
    for b in range(3):
      np.testing.assert_array_equal(np.asarray(got[b]), np_shift(np.asarray(img3[b:b + 1]), *offs[b], padding)[0])
  one = jax.jit(lambda x, o: shift(x, o, max_shift=2))(img, jnp.asarray([2, -1]))  # one traced offset for all
  np.testing.assert_array_equal(np.asarray(one), np_shift(np.asarray(img), 2, -1, 'zeros'))
  with pytest.raises(ValueError, match='max_shift'):
    shift(img, jnp.asarray([1, 1]))


def test_offsets_grid_step():
  grid = offsets_grid(4, step=2)
  assert grid == tuple((dy, dx) for dy in (-4, -2, 0, 2, 4) for dx in (-4, -2, 0, 2, 4))
  assert offsets_grid(2, step=1) == offsets_grid(2)
  assert offsets_grid(1, reference=True)[-1] == (0, 0) and len(offsets_grid(1, reference=True)) == 10
  with pytest.raises(ValueError, match='step'):
    offsets_grid(3, step=2)


def test_repeated_offsets_run_once_and_count_twice(toy):
  """The reference grid counts the identity twice: srt runs it once (one fewer forward) with weight 2, and every
  statistic equals the brute force over the offsets with their repeats."""
  params, _, img = toy
  offs = offsets_grid(1, reference=True)  # 10 offsets, 9 distinct
  batches = []

  def counted(p, x):
    batches.append(x.shape[0])  # traced batch sizes
    return patch_model(p, x)
  maps, masks = np_samples(patch_model, params, img, offs)
  for back_fill in ('exclude', 'zeros'):
    p_mean, p_var, _ = np_pixel_stats(maps, masks, back_fill)
    t_mean, t_var, _ = np_token_stats(maps, masks, back_fill, P)
    mean, var = srt(counted, params, img, offsets=offs, output='pixel', aggregate='mean_var', back_fill=back_fill,
                    chunk_size=9)
    np.testing.assert_allclose(np.asarray(mean), p_mean, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(var), p_var, **VAR_TOL)
    mean, var = srt(patch_model, params, img, offsets=offs, aggregate='mean_var', back_fill=back_fill)
    np.testing.assert_allclose(np.asarray(mean), t_mean, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(var), t_var, **VAR_TOL)
  assert 9 * img.shape[0] in batches and 10 * img.shape[0] not in batches
  # The median keeps every sample, repeats included.
  _, _, p_med = np_pixel_stats(maps, masks, 'exclude')
  np.testing.assert_allclose(np.asarray(srt(patch_model, params, img, offsets=offs, output='pixel',
                                            aggregate='median')), p_med, rtol=1e-6)


def test_plan_chunks_wastes_few_forwards():
  assert srt_lib.plan_chunks(49, 1, 8) == (7, 7)   # no padded slot
  assert srt_lib.plan_chunks(9, 1, 8) == (2, 5)    # one padded slot
  assert srt_lib.plan_chunks(50, 1, 8) == (10, 5)  # no padded slot
  for n in range(1, 60):
    for chunk in range(1, 12):
      n_chunks, c = srt_lib.plan_chunks(n, 1, chunk)
      balanced = math.ceil(n / math.ceil(n / chunk)) * math.ceil(n / chunk)  # the former plan's forwards
      assert c <= chunk and n_chunks * c >= n and n_chunks * c - n < c
      assert n_chunks * c <= balanced


# ---------------------------------------------------------------------------------------------------------
# Strides: declared by srjax feature extractors, checked; images the model would crop are errors or padded.


@pytest.fixture(scope='module')
def vit16():
  model = vit.ViT(patch_size=16, width=8, depth=1, mlp_dim=16, num_heads=2, posemb_grid=(2, 2), exact_gelu=True)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))['params']
  rng = np.random.RandomState(3)
  params = jax.tree.map(lambda s: jnp.asarray(rng.randn(*s.shape) * 0.5, jnp.float32), shapes)
  return vit.features(model), params


def crop16(params, x):
  """A stride-16 patch model without a declared stride that crops like a VALID conv (floor(H / 16) tokens)."""
  del params
  b, hh, ww, c = x.shape
  h, w = hh // 16, ww // 16
  return x[:, :16 * h, :16 * w].reshape(b, h, 16, w, 16, c).mean((2, 4))


@pytest.mark.parametrize('size', [(30, 32), (40, 40), (20, 32)])  # 20: floor(2H / 16) = 2 floor(H / 16)
def test_image_the_model_would_crop_is_an_error(vit16, size):
  fn, params = vit16
  assert fn.stride == (16, 16)
  img = jnp.asarray(np.random.RandomState(4).rand(1, *size, 3), jnp.float32)
  with pytest.raises(ValueError, match=r'img: got .*multiple of the stride \(16, 16\).*pad_mode'):
    srt(fn, params, img, d=1)
  with pytest.raises(ValueError, match='multiples of the patch size 16'):
    fn(params, img)  # the ViT itself refuses to crop
  with pytest.raises(ValueError, match='crops or pads'):  # no declared stride: the probe catches it
    srt(crop16, None, img, d=1)


@pytest.mark.parametrize('pad_mode', ['zeros', 'edge'])
def test_pad_mode_pads_bottom_right_and_crops_back(vit16, pad_mode):
  fn, params = vit16
  img = np.random.RandomState(5).rand(1, 40, 40, 3).astype(np.float32)
  padded = np.pad(img, ((0, 0), (0, 8), (0, 8), (0, 0)), mode={'zeros': 'constant', 'edge': 'edge'}[pad_mode])
  tok = srt(fn, params, jnp.asarray(img), d=1, pad_mode=pad_mode)
  chex.assert_shape(tok, (1, 3, 3, 8))
  np.testing.assert_allclose(np.asarray(tok), np.asarray(srt(fn, params, jnp.asarray(padded), d=1)), atol=1e-5)
  pix = srt(fn, params, jnp.asarray(img), d=1, output='pixel', pad_mode=pad_mode)
  chex.assert_shape(pix, (1, 40, 40, 8))
  ref = srt(fn, params, jnp.asarray(padded), d=1, output='pixel')
  np.testing.assert_allclose(np.asarray(pix), np.asarray(ref)[:, :40, :40], atol=1e-5)


def test_declared_stride_must_match_the_feature_map(toy):
  params, _, img = toy

  @dataclasses.dataclass(frozen=True)
  class Liar:
    stride: int = 2

    def __call__(self, p, x):
      return patch_model(p, x)  # stride 4, declares 2
  with pytest.raises(ValueError, match='declared stride'):
    srt(Liar(), params, img, d=1)
