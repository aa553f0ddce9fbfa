"""Tests for srjax.models.vit: parameter layout, feature extractor, timm/DINO converter vs a NumPy forward."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from srjax.models import vit

WIDTH, HEADS, DEPTH, MLP, PATCH, IMG = 16, 2, 2, 32, 4, 16


def _random_state_dict(rng: np.random.RandomState, num_classes: int = 5) -> dict[str, np.ndarray]:
  """A timm/DINO-named state dict with random weights (PyTorch layouts: Linear [out, in], Conv OIHW)."""
  n = (IMG // PATCH) ** 2
  sd = {
      'patch_embed.proj.weight': rng.randn(WIDTH, 3, PATCH, PATCH) * 0.2,
      'patch_embed.proj.bias': rng.randn(WIDTH) * 0.1,
      'cls_token': rng.randn(1, 1, WIDTH),
      'pos_embed': rng.randn(1, n + 1, WIDTH) * 0.5,
      'norm.weight': 1 + 0.1 * rng.randn(WIDTH),
      'norm.bias': 0.1 * rng.randn(WIDTH),
      'head.weight': rng.randn(num_classes, WIDTH) * 0.3,
      'head.bias': rng.randn(num_classes) * 0.1,
  }
  for i in range(DEPTH):
    b = f'blocks.{i}'
    sd.update({
        f'{b}.norm1.weight': 1 + 0.1 * rng.randn(WIDTH), f'{b}.norm1.bias': 0.1 * rng.randn(WIDTH),
        f'{b}.attn.qkv.weight': rng.randn(3 * WIDTH, WIDTH) * 0.3, f'{b}.attn.qkv.bias': rng.randn(3 * WIDTH) * 0.1,
        f'{b}.attn.proj.weight': rng.randn(WIDTH, WIDTH) * 0.3, f'{b}.attn.proj.bias': rng.randn(WIDTH) * 0.1,
        f'{b}.norm2.weight': 1 + 0.1 * rng.randn(WIDTH), f'{b}.norm2.bias': 0.1 * rng.randn(WIDTH),
        f'{b}.mlp.fc1.weight': rng.randn(MLP, WIDTH) * 0.3, f'{b}.mlp.fc1.bias': rng.randn(MLP) * 0.1,
        f'{b}.mlp.fc2.weight': rng.randn(WIDTH, MLP) * 0.3, f'{b}.mlp.fc2.bias': rng.randn(WIDTH) * 0.1,
    })
  return {k: v.astype(np.float32) for k, v in sd.items()}


def _np_layernorm(x, w, b, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * w + b


def _np_vit(sd, x, heads):
  """Float64 timm/DINO ViT forward written from the PyTorch definitions (NCHW conv, fused qkv, exact GELU).

  Returns the list of token sequences after each block (CLS first), the final-normed sequence, and logits.
  """
  sd = {k: v.astype(np.float64) for k, v in sd.items()}
  x = x.astype(np.float64).transpose(0, 3, 1, 2)  # NCHW as in PyTorch
  bsz, c, hh, ww = x.shape
  wt = sd['patch_embed.proj.weight']
  d, _, p, _ = wt.shape
  h, w = hh // p, ww // p
  patches = x.reshape(bsz, c, h, p, w, p)
  tok = np.einsum('bchiwj,dcij->bhwd', patches, wt) + sd['patch_embed.proj.bias']
  tok = tok.reshape(bsz, h * w, d)
  seq = np.concatenate([np.broadcast_to(sd['cls_token'], (bsz, 1, d)), tok], 1) + sd['pos_embed']
  hd = d // heads
  per_block = []
  for i in range(DEPTH):
    b = f'blocks.{i}'
    y = _np_layernorm(seq, sd[f'{b}.norm1.weight'], sd[f'{b}.norm1.bias'])
    qkv = y @ sd[f'{b}.attn.qkv.weight'].T + sd[f'{b}.attn.qkv.bias']
    qkv = qkv.reshape(bsz, -1, 3, heads, hd).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    att = np.exp(att - att.max(-1, keepdims=True))
    att = att / att.sum(-1, keepdims=True)
    o = (att @ v).transpose(0, 2, 1, 3).reshape(bsz, -1, d)
    seq = seq + o @ sd[f'{b}.attn.proj.weight'].T + sd[f'{b}.attn.proj.bias']
    y = _np_layernorm(seq, sd[f'{b}.norm2.weight'], sd[f'{b}.norm2.bias'])
    y = y @ sd[f'{b}.mlp.fc1.weight'].T + sd[f'{b}.mlp.fc1.bias']
    y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
    seq = seq + y @ sd[f'{b}.mlp.fc2.weight'].T + sd[f'{b}.mlp.fc2.bias']
    per_block.append(seq)
  normed = _np_layernorm(seq, sd['norm.weight'], sd['norm.bias'])
  logits = normed[:, 0] @ sd['head.weight'].T + sd['head.bias']
  return per_block, normed, logits, (h, w)


@pytest.fixture(scope='module')
def converted():
  rng = np.random.RandomState(0)
  sd = _random_state_dict(rng)
  x = rng.rand(2, IMG, IMG, 3).astype(np.float32)
  cfg = vit.config_from_torch(sd, num_heads=HEADS)
  model = vit.ViT(**cfg, exact_gelu=True, ln_eps=1e-6)
  params = vit.params_from_torch(sd, num_heads=HEADS)
  return sd, x, model, params


def test_converter_matches_numpy_forward(converted):
  sd, x, model, params = converted
  per_block, normed, logits, (h, w) = _np_vit(sd, x, HEADS)
  bsz = x.shape[0]
  feats = vit.features(model)(params, jnp.asarray(x))  # last block, final LayerNorm, CLS dropped
  chex.assert_shape(feats, (bsz, h, w, WIDTH))
  chex.assert_type(feats, jnp.float32)
  np.testing.assert_allclose(np.asarray(feats), normed[:, 1:].reshape(bsz, h, w, WIDTH), atol=2e-4, rtol=2e-4)
  block0 = vit.features(model, layer=0, norm=False)(params, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(block0), per_block[0][:, 1:].reshape(bsz, h, w, WIDTH),
                             atol=2e-4, rtol=2e-4)
  block0_normed = vit.features(model, layer=-2, norm=True)(params, jnp.asarray(x))
  expected = _np_layernorm(per_block[0], sd['norm.weight'].astype(np.float64), sd['norm.bias'])
  np.testing.assert_allclose(np.asarray(block0_normed), expected[:, 1:].reshape(bsz, h, w, WIDTH),
                             atol=2e-4, rtol=2e-4)
  out = model.apply({'params': params}, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(out), logits, atol=2e-4, rtol=2e-4)


def test_converted_layout_matches_init(converted):
  """The converter produces exactly the tree (names and shapes) that ViT.init creates: big_vision layout."""
  _, x, model, params = converted
  init = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.asarray(x))['params']
  assert jax.tree.structure(init) == jax.tree.structure(params)
  chex.assert_trees_all_equal_shapes(init, params)
  assert set(init) == {'embedding', 'cls', 'pos_embedding', 'Transformer', 'head'}
  assert set(init['Transformer']['encoderblock_0']) == {
      'LayerNorm_0', 'MultiHeadDotProductAttention_0', 'LayerNorm_1', 'MlpBlock_0'}


def test_gelu_flag_is_used(converted):
  """The tanh GELU differs from the exact one, so the numpy (exact) forward must not match it."""
  sd, x, model, params = converted
  _, normed, _, (h, w) = _np_vit(sd, x, HEADS)
  tanh_model = model.clone(exact_gelu=False)
  feats = vit.features(tanh_model)(params, jnp.asarray(x))
  diff = np.abs(np.asarray(feats) - normed[:, 1:].reshape(x.shape[0], h, w, WIDTH)).max()
  assert diff > 1e-4


def test_features_hashable_and_validated(converted):
  _, _, model, _ = converted
  assert vit.features(model, 1) == vit.features(model, 1)
  assert hash(vit.features(model, 1)) == hash(vit.features(model, 1))
  with pytest.raises(ValueError, match='layer'):
    vit.features(model, layer=DEPTH)
  with pytest.raises(TypeError, match='layer'):
    vit.features(model, layer=1.0)


def test_posemb_resize_other_input_size(converted):
  """A 20x20 input (5x5 tokens) resizes the 4x4 position grid; a constant grid stays constant under bicubic."""
  _, _, model, params = converted
  pe = jnp.ones((1, 16, WIDTH)) * jnp.arange(WIDTH)
  resized = vit._resize_posemb(pe, (4, 4), (5, 5))
  np.testing.assert_allclose(np.asarray(resized), np.ones((1, 25, 1)) * np.arange(WIDTH), atol=1e-5)
  x = jnp.asarray(np.random.RandomState(1).rand(1, 20, 20, 3), jnp.float32)
  feats = vit.features(model)(params, x)
  chex.assert_shape(feats, (1, 5, 5, WIDTH))
  chex.assert_tree_all_finite(feats)


def test_converter_rejects_unknown_keys(converted):
  sd = dict(converted[0])
  sd['blocks.0.ls1.gamma'] = np.ones(WIDTH, np.float32)
  with pytest.raises(ValueError, match='ls1'):
    vit.params_from_torch(sd, num_heads=HEADS)


def test_decode_variant():
  assert vit.decode_variant('S/16') == dict(width=384, depth=12, mlp_dim=1536, num_heads=6, patch_size=16)
  assert vit.decode_variant('B/8')['width'] == 768
  with pytest.raises(ValueError, match='variant'):
    vit.decode_variant('X/16')
