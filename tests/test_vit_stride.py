"""Tests for the stride trick of srjax.models.vit (`ViT.patch_stride`, Amir et al. 2021) against brute-force
references: the strided patch tokens are the stride-p tokens of translated images, the position embedding is
DINOv2's interpolation (a per-output-position NumPy evaluation), and srjax.srt runs on the strided model."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import srjax
from srjax.models import vit
from srjax.srt_lib import shift
from tests.test_vit import P14, _np_interpolate_dinov2, _timm_state_dict

P, D, IMG = 4, 8, 16


def _identity_blocks(params):
  """Params whose blocks are exact identities (zero out-projection and zero second MLP layer): block 0's output
  is then the embedded tokens themselves, the quantity 'before the blocks mix them'."""
  def zero(path, leaf):
    names = [getattr(k, 'key', '') for k in path]
    return jnp.zeros_like(leaf) if ('out' in names or 'Dense_1' in names) else leaf
  return jax.tree_util.tree_map_with_path(zero, params)


@pytest.fixture(scope='module')
def small():
  model = vit.ViT(num_classes=0, patch_size=P, width=D, depth=1, mlp_dim=16, num_heads=2,
                  posemb_grid=(IMG // P, IMG // P))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, IMG, IMG, 3)), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(size=a.shape) * 0.3, jnp.float32), params)
  return model, _identity_blocks(params), x


@pytest.mark.parametrize('s,pad', [(2, 'centre'), (1, 'centre'), (2, 'valid'), (1, 'valid')])
def test_strided_tokens_are_tokens_of_translated_images(small, s, pad):
  model, params, x = small
  params = dict(params, pos_embedding=jnp.zeros_like(params['pos_embedding']))  # the conv part only
  plain = vit.features(model, 0, norm=False)
  strided = vit.features(model.clone(patch_stride=s, patch_stride_pad=pad), 0, norm=False)
  got = np.asarray(strided(params, x))
  lo = (P - s) // 2 if pad == 'centre' else 0   # the documented layout: floor((p - s) / 2) before
  assert vit.patch_padding(P, s, pad) == (lo, P - s - lo if pad == 'centre' else 0)
  n = IMG // s if pad == 'centre' else (IMG - P) // s + 1
  assert got.shape == (2, n, n, D)
  # Token i at stride s covers the (zero-padded) pixels [s i - lo, s i - lo + p). Translating the image by
  # o = lo - u (u = s i mod p) moves that window onto the stride-p patch a = (s i - u) / p.
  phases = [(uy, ux) for uy in range(0, P, s) for ux in range(0, P, s)]
  toks = np.asarray(jax.jit(plain)(params, jnp.concatenate([shift(x, (lo - uy, lo - ux)) for uy, ux in phases])))
  ref = np.full_like(got, np.nan)
  for k, (uy, ux) in enumerate(phases):
    tok = toks[2 * k:2 * k + 2]
    for i in range(uy // s, n, P // s):
      for j in range(ux // s, n, P // s):
        ref[:, i, j] = tok[:, (s * i - uy) // P, (s * j - ux) // P]
  assert not np.isnan(ref).any()
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_stride_p_is_the_unstrided_model(small):
  model, params, x = small
  ref = vit.features(model, 0)(params, x)
  np.testing.assert_array_equal(vit.features(model.clone(patch_stride=P), 0)(params, x), ref)


def test_strided_posemb_is_dinov2_interpolation():
  """A converted DINOv2 layout (patch 14, 4x4 position grid) at stride 7: with a zero embedding conv and
  identity blocks the tokens are the position embedding, interpolated from 4x4 to 8x8 as DINOv2 does."""
  sd = _timm_state_dict(np.random.RandomState(3), 'dinov2')
  model, params = vit.from_torch(sd, num_heads=2)
  params = _identity_blocks(params)
  params['embedding'] = jax.tree_util.tree_map(np.zeros_like, params['embedding'])
  strided = model.clone(patch_stride=P14 // 2)
  x = jnp.ones((1, 4 * P14, 4 * P14, 3), jnp.float32)
  got = np.asarray(vit.features(strided, 0, norm=False)(params, x))[0]
  grid = sd['pos_embed'][0, 1:].reshape(4, 4, -1).astype(np.float64)
  np.testing.assert_allclose(got, _np_interpolate_dinov2(grid, (8, 8)), rtol=1e-5, atol=1e-5)


def test_srt_runs_on_the_strided_model(small):
  model, params, x = small
  s = 2
  strided = model.clone(patch_stride=s)
  fn = vit.features(strided, 0, norm=False)
  assert fn.stride == (s, s)
  # No position embedding and identity blocks: the strided map is translation-equivariant in steps of s, so
  # SRT over offsets that are multiples of s returns the single-pass map, nearest-upsampled (border pixels
  # averaged over the offsets that cover them). The digits-like image has a zero frame wider than the shifts, so
  # the zero fill and the embedding's zero padding stand in for zeros only.
  frame = np.zeros((1, IMG, IMG, 1), np.float32)
  frame[:, 4:-4, 4:-4] = 1
  x = x * frame
  flat = dict(params, pos_embedding=jnp.zeros_like(params['pos_embedding']))
  one = np.asarray(fn(flat, x))
  up = np.repeat(np.repeat(one, s, axis=1), s, axis=2)
  got = srjax.srt(fn, flat, x, offsets=((0, 0), (s, 0), (-s, s), (0, -s)), output='pixel')
  np.testing.assert_allclose(np.asarray(got), up, rtol=1e-5, atol=1e-5)
  # The full model (position embedding and blocks): d = 1 gives an H/s x W/s token map that differs from the
  # single pass, and d = 0 is the single pass.
  full = vit.features(strided)
  tok = srjax.srt(full, params, x, d=1, output='token')
  assert tok.shape == (2, IMG // s, IMG // s, D) and np.isfinite(np.asarray(tok)).all()
  single = np.asarray(full(params, x))
  np.testing.assert_allclose(np.asarray(srjax.srt(full, params, x, d=0, output='token')), single, atol=1e-5)
  assert np.abs(np.asarray(tok) - single).max() > 1e-3


def test_stride_errors(small):
  model, params, x = small
  with pytest.raises(ValueError, match='patch_stride.*divisor of the patch size 4'):
    vit.features(model.clone(patch_stride=3))
  with pytest.raises(ValueError, match='patch_stride'):
    model.clone(patch_stride=8).apply({'params': params}, x)
  with pytest.raises(ValueError, match='patch_stride_pad'):
    vit.features(model.clone(patch_stride=2, patch_stride_pad='same'))
  with pytest.raises(ValueError, match='multiples of the stride 2'):
    model.clone(patch_stride=2).apply({'params': params}, x[:, :15])
  with pytest.raises(ValueError, match='H - 4 and W - 4 multiples of 2'):
    model.clone(patch_stride=2, patch_stride_pad='valid').apply({'params': params}, x[:, :15, :15])
  assert vit.features(model.clone(patch_stride=2, patch_stride_pad='valid')).stride is None
