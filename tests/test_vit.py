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


# ---------------------------------------------------------------------------------------------------------
# timm / DINO / DINOv2 layouts against a float64 NumPy forward written from timm's VisionTransformer.forward.

P14, D16, H2 = 14, 16, 2
GRID = 4  # the checkpoint's position grid: 56x56 inputs at patch 14

# name: (register key, embedded prefix rows in pos_embed ('cls', 'all', or 'none'), LayerScale, fc_norm head)
LAYOUTS = {
    'dinov2': (None, 'cls', True, False),                      # DINOv2 hub ViT-S/14 (no registers)
    'dinov2_reg': ('register_tokens', 'cls', True, False),     # DINOv2 hub *_reg: registers get no position
    'timm_dinov2_reg': ('reg_token', 'none', True, False),     # timm vit_*_reg4_dinov2 (no_embed_class)
    'timm_reg_embed_class': ('reg_token', 'all', False, False),  # timm default layout with register tokens
    'timm_gap_fc_norm': (None, 'cls', False, True),            # timm global_pool='avg': fc_norm, no final norm
}


def _timm_state_dict(rng, layout, num_classes=0):
  reg_key, embedded, ls, gap = LAYOUTS[layout]
  n_reg = 4 if reg_key else 0
  n = GRID * GRID
  rows = {'none': n, 'cls': 1 + n, 'all': 1 + n_reg + n}[embedded]
  sd = {'patch_embed.proj.weight': rng.randn(D16, 3, P14, P14) * 0.1, 'patch_embed.proj.bias': rng.randn(D16) * 0.1,
        'cls_token': rng.randn(1, 1, D16), 'pos_embed': rng.randn(1, rows, D16) * 0.5}
  if reg_key:
    sd[reg_key] = rng.randn(1, n_reg, D16)
  if layout.startswith('dinov2'):
    sd['mask_token'] = rng.randn(1, D16)
  norm = 'fc_norm' if gap else 'norm'
  sd[f'{norm}.weight'], sd[f'{norm}.bias'] = 1 + 0.1 * rng.randn(D16), 0.1 * rng.randn(D16)
  if num_classes:
    sd['head.weight'], sd['head.bias'] = rng.randn(num_classes, D16) * 0.3, rng.randn(num_classes) * 0.1
  for i in range(DEPTH):
    b = f'blocks.{i}'
    sd.update({
        f'{b}.norm1.weight': 1 + 0.1 * rng.randn(D16), f'{b}.norm1.bias': 0.1 * rng.randn(D16),
        f'{b}.attn.qkv.weight': rng.randn(3 * D16, D16) * 0.3, f'{b}.attn.qkv.bias': rng.randn(3 * D16) * 0.1,
        f'{b}.attn.proj.weight': rng.randn(D16, D16) * 0.3, f'{b}.attn.proj.bias': rng.randn(D16) * 0.1,
        f'{b}.norm2.weight': 1 + 0.1 * rng.randn(D16), f'{b}.norm2.bias': 0.1 * rng.randn(D16),
        f'{b}.mlp.fc1.weight': rng.randn(MLP, D16) * 0.3, f'{b}.mlp.fc1.bias': rng.randn(MLP) * 0.1,
        f'{b}.mlp.fc2.weight': rng.randn(D16, MLP) * 0.3, f'{b}.mlp.fc2.bias': rng.randn(D16) * 0.1,
    })
    if ls:
      sd[f'{b}.ls1.gamma'], sd[f'{b}.ls2.gamma'] = 0.5 + rng.rand(D16), 0.5 + rng.rand(D16)
  return {k: v.astype(np.float32) for k, v in sd.items()}


def _cubic(x, a=-0.75):
  """Keys' cubic convolution kernel at A = -0.75 (PyTorch's bicubic), as a function of the distance."""
  x = abs(x)
  if x <= 1:
    return ((a + 2) * x - (a + 3)) * x * x + 1
  if x < 2:
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return 0.0


def _np_interpolate_dinov2(grid, out_hw):
  """DINOv2's interpolate_pos_encoding on a [M, M, D] grid: PyTorch bicubic (align_corners=False, no antialias)
  with scale factor (n + 0.1) / M, evaluated per output position with clamped 4x4 taps."""
  m = grid.shape[0]
  out = np.zeros(out_hw + grid.shape[2:])
  sy, sx = (out_hw[0] + 0.1) / m, (out_hw[1] + 0.1) / m
  for oy in range(out_hw[0]):
    fy = (oy + 0.5) / sy - 0.5
    iy = int(np.floor(fy))
    for ox in range(out_hw[1]):
      fx = (ox + 0.5) / sx - 0.5
      ix = int(np.floor(fx))
      for r in range(-1, 3):
        for q in range(-1, 3):
          wgt = _cubic(iy + r - fy) * _cubic(ix + q - fx)
          out[oy, ox] += wgt * grid[min(max(iy + r, 0), m - 1), min(max(ix + q, 0), m - 1)]
  return out


def _np_timm_forward(sd, x, layout, heads=H2):
  """Float64 forward of a timm / DINOv2 ViT: (patch token map [B, h, w, D] after the final norm, head output)."""
  reg_key, embedded, ls, gap = LAYOUTS[layout]
  sd = {k: v.astype(np.float64) for k, v in sd.items()}
  x = x.astype(np.float64).transpose(0, 3, 1, 2)
  bsz, c, hh, ww = x.shape
  h, w = hh // P14, ww // P14
  tok = np.einsum('bchiwj,dcij->bhwd', x.reshape(bsz, c, h, P14, w, P14), sd['patch_embed.proj.weight'])
  tok = (tok + sd['patch_embed.proj.bias']).reshape(bsz, h * w, D16)
  pos = sd['pos_embed'][0]
  n_reg = sd[reg_key].shape[1] if reg_key else 0
  n_pre_pos = {'none': 0, 'cls': 1, 'all': 1 + n_reg}[embedded]
  patch_pos = pos[n_pre_pos:]
  if (h, w) != (GRID, GRID):
    patch_pos = _np_interpolate_dinov2(patch_pos.reshape(GRID, GRID, D16), (h, w)).reshape(h * w, D16)
  cls = np.broadcast_to(sd['cls_token'], (bsz, 1, D16))
  regs = [np.broadcast_to(sd[reg_key], (bsz, n_reg, D16))] if reg_key else []
  if embedded == 'none':       # timm no_embed_class: x + pos_embed, then cat(cls, reg, x)
    seq = np.concatenate([cls] + regs + [tok + patch_pos], 1)
  elif embedded == 'all':      # timm: cat(cls, reg, x) + pos_embed
    seq = np.concatenate([cls] + regs + [tok], 1) + np.concatenate([pos[:n_pre_pos], patch_pos])
  else:                        # DINO / DINOv2: cat(cls, x) + pos_embed, then registers inserted after cls
    seq = np.concatenate([cls, tok], 1) + np.concatenate([pos[:1], patch_pos])
    seq = np.concatenate([seq[:, :1]] + regs + [seq[:, 1:]], 1)
  hd = D16 // heads
  for i in range(DEPTH):
    b = f'blocks.{i}'
    y = _np_layernorm(seq, sd[f'{b}.norm1.weight'], sd[f'{b}.norm1.bias'])
    qkv = (y @ sd[f'{b}.attn.qkv.weight'].T + sd[f'{b}.attn.qkv.bias']).reshape(bsz, -1, 3, heads, hd)
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)
    att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    att = np.exp(att - att.max(-1, keepdims=True))
    att = att / att.sum(-1, keepdims=True)
    y = (att @ v).transpose(0, 2, 1, 3).reshape(bsz, -1, D16) @ sd[f'{b}.attn.proj.weight'].T
    y = y + sd[f'{b}.attn.proj.bias']
    seq = seq + (y * sd[f'{b}.ls1.gamma'] if ls else y)
    y = _np_layernorm(seq, sd[f'{b}.norm2.weight'], sd[f'{b}.norm2.bias'])
    y = y @ sd[f'{b}.mlp.fc1.weight'].T + sd[f'{b}.mlp.fc1.bias']
    y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
    y = y @ sd[f'{b}.mlp.fc2.weight'].T + sd[f'{b}.mlp.fc2.bias']
    seq = seq + (y * sd[f'{b}.ls2.gamma'] if ls else y)
  if not gap:
    seq = _np_layernorm(seq, sd['norm.weight'], sd['norm.bias'])
  n_pre = 1 + n_reg
  pooled = seq[:, n_pre:].mean(1) if gap else seq[:, 0]
  if gap:
    pooled = _np_layernorm(pooled, sd['fc_norm.weight'], sd['fc_norm.bias'])
  if 'head.weight' in sd:
    pooled = pooled @ sd['head.weight'].T + sd['head.bias']
  return seq[:, n_pre:].reshape(bsz, h, w, D16), pooled


@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_timm_dinov2_layouts_match_numpy_forward(layout):
  """Each layout converts, infers its config from keys and shapes, and matches the NumPy forward to 1e-4 at the
  checkpoint's size (56x56) and at another size (70x84, an interpolated position embedding)."""
  rng = np.random.RandomState(7)
  sd = _timm_state_dict(rng, layout, num_classes=3 if layout == 'timm_gap_fc_norm' else 0)
  model, params = vit.from_torch(sd, num_heads=H2)
  reg_key, _, ls, gap = LAYOUTS[layout]
  assert (model.num_registers, model.layer_scale, model.fc_norm, model.final_norm) == (
      4 if reg_key else 0, ls, gap, not gap)
  assert model.patch_size == P14 and model.posemb_grid == (GRID, GRID)
  init = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 56, 56, 3)))['params']
  assert jax.tree.structure(init) == jax.tree.structure(params)
  chex.assert_trees_all_equal_shapes(init, params)
  fn = vit.features(model)
  for size in ((56, 56), (70, 84)):
    x = rng.rand(2, *size, 3).astype(np.float32)
    ref_map, ref_out = _np_timm_forward(sd, x, layout)
    np.testing.assert_allclose(np.asarray(fn(params, jnp.asarray(x))), ref_map, atol=1e-4, rtol=1e-4)
    out = model.apply({'params': params}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(out), ref_out, atol=1e-4, rtol=1e-4)


def test_srt_on_dinov2_with_registers_at_another_size():
  """srjax.srt through vit.features on a converted timm DINOv2-with-registers model at 70x84 (the checkpoint is
  56x56) equals a brute-force SRT over the NumPy float64 forward (shift, forward, nearest-upsample, back-shift,
  average over the covering offsets, pool)."""
  from srjax.srt_lib import offsets_grid, srt  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(8)
  sd = _timm_state_dict(rng, 'timm_dinov2_reg')
  model, params = vit.from_torch(sd, num_heads=H2)
  img = rng.rand(70, 84, 3).astype(np.float32)
  offs = offsets_grid(2)
  got = srt(vit.features(model), params, jnp.asarray(img), offsets=offs)
  hh, ww = img.shape[:2]
  acc, cnt = np.zeros((hh, ww, D16)), np.zeros((hh, ww, 1))
  for dy, dx in offs:
    shifted = np.zeros_like(img)
    shifted[max(dy, 0):hh + min(dy, 0), max(dx, 0):ww + min(dx, 0)] = \
        img[max(-dy, 0):hh + min(-dy, 0), max(-dx, 0):ww + min(-dx, 0)]
    f, _ = _np_timm_forward(sd, shifted[None], 'timm_dinov2_reg')
    up = np.repeat(np.repeat(f[0], P14, 0), P14, 1)
    ys, xs = slice(max(-dy, 0), hh + min(-dy, 0)), slice(max(-dx, 0), ww + min(-dx, 0))
    acc[ys, xs] += up[max(dy, 0):hh + min(dy, 0), max(dx, 0):ww + min(dx, 0)]
    cnt[ys, xs] += 1
  ref = (acc / cnt).reshape(hh // P14, P14, ww // P14, P14, D16).mean((1, 3))
  chex.assert_shape(got, (5, 6, D16))
  np.testing.assert_allclose(np.asarray(got), ref, atol=1e-4, rtol=1e-4)


def test_torch_bicubic_matrix_matches_torch():
  torch = pytest.importorskip('torch')
  grid = np.random.RandomState(9).rand(1, 2, 5, 5)
  for size, scale in (((7, 9), None), ((3, 4), None), ((8, 6), ((8 + 0.1) / 5, (6 + 0.1) / 5))):
    if scale is None:
      ref = torch.nn.functional.interpolate(torch.tensor(grid), size=size, mode='bicubic', align_corners=False)
      wy, wx = vit.torch_bicubic_matrix(5, size[0]), vit.torch_bicubic_matrix(5, size[1])
    else:
      ref = torch.nn.functional.interpolate(torch.tensor(grid), scale_factor=scale, mode='bicubic',
                                            align_corners=False)
      wy, wx = vit.torch_bicubic_matrix(5, size[0], scale[0]), vit.torch_bicubic_matrix(5, size[1], scale[1])
    np.testing.assert_allclose(np.einsum('ai,ncij,bj->ncab', wy, grid, wx), ref.numpy(), atol=1e-12)


def test_config_from_torch_errors_name_the_key():
  rng = np.random.RandomState(10)
  sd = _timm_state_dict(rng, 'dinov2')
  with pytest.raises(ValueError, match='SwiGLU'):
    bad = {k: v for k, v in sd.items() if not k.startswith('blocks.0.mlp.fc1')}
    vit.config_from_torch(dict(bad, **{'blocks.0.mlp.w12.weight': np.zeros((4, 4))}))
  with pytest.raises(ValueError, match="lacks 'pos_embed'"):
    vit.config_from_torch({k: v for k, v in sd.items() if k != 'pos_embed'})
  with pytest.raises(ValueError, match='LayerScale'):
    vit.config_from_torch({k: v for k, v in sd.items() if k != 'blocks.1.ls2.gamma'}, num_heads=H2)
  with pytest.raises(ValueError, match='q_norm'):
    vit.params_from_torch(dict(sd, **{'blocks.0.attn.q_norm.weight': np.ones(8, np.float32)}), num_heads=H2)
  with pytest.raises(ValueError, match='num_heads'):
    vit.config_from_torch(sd, num_heads=3)
  with pytest.raises(ValueError, match='pos_embed with 11 rows'):
    vit.config_from_torch(dict(sd, pos_embed=np.zeros((1, 11, D16), np.float32)), num_heads=H2)
  with pytest.raises(ValueError, match='unambiguous'):  # timm registers: 9 rows = 3x3 patches or 5 + 2x2
    vit.config_from_torch(dict(sd, pos_embed=np.zeros((1, 9, D16), np.float32),
                               reg_token=np.zeros((1, 4, D16), np.float32)), num_heads=H2)
  assert vit.config_from_torch(sd)['num_heads'] == 1  # width 16 // 64 -> at least one head


@pytest.mark.parametrize('kwargs', [
    dict(reg_tokens=4, no_embed_class=True, init_values=1e-5),   # vit_*_reg4_dinov2
    dict(init_values=1e-5),                                      # vit_*_dinov2
    dict(global_pool='avg', fc_norm=True, num_classes=3),        # global-pool + fc_norm head
])
def test_timm_model_converts_exactly(kwargs):
  """When timm is installed: a random timm VisionTransformer converts and matches timm's own forward."""
  torch = pytest.importorskip('torch')
  timm_vit = pytest.importorskip('timm.models.vision_transformer')
  torch.manual_seed(0)
  net = timm_vit.VisionTransformer(img_size=56, patch_size=14, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2,
                                   **dict(dict(num_classes=0), **kwargs)).eval()
  with torch.no_grad():  # randomise LayerScale and the zero-initialised tokens
    for name, p in net.named_parameters():
      if 'ls' in name or 'token' in name:
        p.copy_(torch.randn_like(p))
  sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
  model, params = vit.from_torch(sd, num_heads=2)
  x = np.random.RandomState(11).rand(2, 56, 56, 3).astype(np.float32)
  with torch.no_grad():
    xt = torch.tensor(x.transpose(0, 3, 1, 2))
    tokens = net.forward_features(xt)[:, net.num_prefix_tokens:].numpy().reshape(2, 4, 4, 32)
    out = net(xt).numpy()
  np.testing.assert_allclose(np.asarray(vit.features(model)(params, jnp.asarray(x))), tokens, atol=1e-4)
  np.testing.assert_allclose(np.asarray(model.apply({'params': params}, jnp.asarray(x))), out, atol=1e-4)
