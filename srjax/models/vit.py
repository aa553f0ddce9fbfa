"""Vision Transformer (ViT) in Flax linen with the big_vision parameter layout.

Parameter tree (the contents of the `'params'` collection)::

  embedding/{kernel [p, p, C_in, D], bias [D]}        patch embedding (a stride-p conv)
  cls [1, 1, D]                                        class token (its position embedding folded in)
  pos_embedding [1, gh*gw, D]                          learned position embedding of the patch tokens
  Transformer/encoderblock_{i}/LayerNorm_0             pre-attention LayerNorm
  Transformer/encoderblock_{i}/MultiHeadDotProductAttention_0/{query,key,value,out}
  Transformer/encoderblock_{i}/LayerNorm_1             pre-MLP LayerNorm
  Transformer/encoderblock_{i}/MlpBlock_0/{Dense_0, Dense_1}
  Transformer/encoder_norm                             final LayerNorm
  head/{kernel, bias}                                  only when num_classes > 0

As in big_vision, the position embedding is added to the patch tokens only; the class token is prepended after.
A timm/DINO checkpoint (which adds `pos_embed[:, 0]` to the class token) converts exactly by folding that row
into `cls` (see `params_from_torch`).

`features(model, layer, norm)` gives the token map of any block as an `apply_fn(params, x) -> [B, h, w, D]`,
the feature extractor that SRT (`srjax.srt`) averages over shifts (Lao et al., "Sub-token ViT embedding via
stochastic resonance transformers", Sec. 2).
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from srjax import checks
from srjax.models.apply_fn import ModuleApply

# big_vision sizes: width, depth, mlp_dim, num_heads.
_VARIANTS = {
    'Ti': dict(width=192, depth=12, mlp_dim=768, num_heads=3),
    'S': dict(width=384, depth=12, mlp_dim=1536, num_heads=6),
    'M': dict(width=512, depth=12, mlp_dim=2048, num_heads=8),
    'B': dict(width=768, depth=12, mlp_dim=3072, num_heads=12),
    'L': dict(width=1024, depth=24, mlp_dim=4096, num_heads=16),
}


def decode_variant(variant: str) -> dict[str, int]:
  """Parses a big_vision variant string such as 'S/16' or 'B/8' into ViT keyword arguments.

  Args:
    variant: '<size>/<patch>' with size in Ti, S, M, B, L.

  Returns:
    dict with width, depth, mlp_dim, num_heads and patch_size.
  """
  match = re.fullmatch(r'(Ti|S|M|B|L)/(\d+)', variant) if isinstance(variant, str) else None
  if match is None:
    checks.fail('variant', variant, f'"<size>/<patch>" such as "S/16", with size in {sorted(_VARIANTS)}')
  return dict(_VARIANTS[match.group(1)], patch_size=int(match.group(2)))


class MlpBlock(nn.Module):
  """Transformer MLP: Dense(mlp_dim) -> GELU -> Dense(D)."""
  mlp_dim: int
  exact_gelu: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=nn.initializers.normal(stddev=1e-6))(x)
    x = nn.gelu(x, approximate=not self.exact_gelu)
    return nn.Dense(width, kernel_init=nn.initializers.xavier_uniform(),
                    bias_init=nn.initializers.normal(stddev=1e-6))(x)


class Encoder1DBlock(nn.Module):
  """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""
  mlp_dim: int
  num_heads: int
  exact_gelu: bool = False
  ln_eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.LayerNorm(epsilon=self.ln_eps)(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads,
                                        kernel_init=nn.initializers.xavier_uniform(),
                                        deterministic=True)(y, y)
    x = x + y
    y = nn.LayerNorm(epsilon=self.ln_eps)(x)
    y = MlpBlock(mlp_dim=self.mlp_dim, exact_gelu=self.exact_gelu)(y)
    return x + y


class Encoder(nn.Module):
  """Stack of `depth` blocks named encoderblock_{i}, then `encoder_norm`.

  `layer` stops after block `layer` (0-based); `norm` applies encoder_norm to the returned tokens.
  """
  depth: int
  mlp_dim: int
  num_heads: int
  exact_gelu: bool = False
  ln_eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array, layer: int | None = None, norm: bool = True) -> jax.Array:
    last = self.depth - 1 if layer is None else layer
    for lyr in range(last + 1):
      x = Encoder1DBlock(mlp_dim=self.mlp_dim, num_heads=self.num_heads, exact_gelu=self.exact_gelu,
                         ln_eps=self.ln_eps, name=f'encoderblock_{lyr}')(x)
    encoder_norm = nn.LayerNorm(epsilon=self.ln_eps, name='encoder_norm')
    return encoder_norm(x) if norm else x


def _resize_posemb(posemb: jax.Array, grid: tuple[int, int], new_grid: tuple[int, int]) -> jax.Array:
  """Bicubic resize of a [1, gh*gw, D] position embedding to [1, nh*nw, D] (jax.image.resize, Keys a=-0.5)."""
  d = posemb.shape[-1]
  pe = posemb.reshape(grid[0], grid[1], d)
  pe = jax.image.resize(pe, (new_grid[0], new_grid[1], d), method='bicubic')
  return pe.reshape(1, new_grid[0] * new_grid[1], d)


class ViT(nn.Module):
  """Vision Transformer with big_vision parameter names (see module docstring).

  Attributes:
    num_classes: size of the classification head; 0 means no head (the model returns the CLS pre-logits).
    patch_size: patch side p (the embedding conv has kernel = stride = p).
    width, depth, mlp_dim, num_heads: transformer sizes (`decode_variant('S/16')` gives the standard ones).
    posemb_grid: (gh, gw), the token grid the position embedding was trained for (224/16 -> (14, 14)). Other
      input sizes get a bicubic resize of the position embedding (not bit-identical to DINO's PyTorch resize).
    exact_gelu: erf GELU (DINO, timm) if True, tanh approximation (big_vision default) if False.
    ln_eps: LayerNorm epsilon (1e-6 for big_vision, timm ViTs and DINO).
  """
  num_classes: int = 0
  patch_size: int = 16
  width: int = 384
  depth: int = 12
  mlp_dim: int = 1536
  num_heads: int = 6
  posemb_grid: tuple[int, int] = (14, 14)
  exact_gelu: bool = False
  ln_eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array, *, layer: int | None = None, norm: bool = True) -> jax.Array:
    """Runs the ViT.

    Args:
      x: images [B, H, W, C_in] float32; H and W multiples of patch_size.
      layer: None for the full model; an int L (0-based, negative counts from the end) to return the token map
        of block L with the CLS token dropped (later blocks are not run).
      norm: with `layer`, whether to apply the final `encoder_norm` to that token map.

    Returns:
      layer=None: logits [B, num_classes] (or CLS pre-logits [B, width] when num_classes == 0).
      layer=L: token map [B, H/p, W/p, width].
    """
    p = self.patch_size
    if x.ndim != 4 or x.shape[1] % p or x.shape[2] % p:
      checks.fail('x', x, f'images [B, H, W, C] with H and W multiples of the patch size {p} (the patch '
                  f'embedding would crop the rest): resize, or pad (srjax.srt pads with pad_mode=)')
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding='VALID', name='embedding')(x)
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c)
    grid = tuple(self.posemb_grid)
    posemb = self.param('pos_embedding', nn.initializers.normal(stddev=1 / math.sqrt(c)),
                        (1, grid[0] * grid[1], c), jnp.float32)
    if (h, w) != grid:
      posemb = _resize_posemb(posemb, grid, (h, w))
    x = x + posemb
    cls = self.param('cls', nn.initializers.zeros, (1, 1, c), jnp.float32)
    x = jnp.concatenate([jnp.tile(cls, (b, 1, 1)), x], axis=1)
    if layer is not None:
      if not -self.depth <= layer < self.depth:
        checks.fail('layer', layer, f'an int in [-{self.depth}, {self.depth})')
      layer = layer % self.depth
    x = Encoder(depth=self.depth, mlp_dim=self.mlp_dim, num_heads=self.num_heads,
                exact_gelu=self.exact_gelu, ln_eps=self.ln_eps, name='Transformer')(x, layer, norm)
    if layer is not None:
      return x[:, 1:].reshape(b, h, w, c)
    x = x[:, 0]
    if self.num_classes:
      x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name='head')(x)
    return x


def features(model: ViT, layer: int = -1, norm: bool = True) -> ModuleApply:
  """Feature extractor for SRT: the token map of block `layer` with the class (and register) tokens dropped.

  The SRT paper (Sec. 3) uses the last block after the final LayerNorm (layer=-1, norm=True), as the authors'
  code does; Appendix E shows other layers.

  Args:
    model: a `ViT`.
    layer: block index, 0-based; negative counts from the end (-1 = last block).
    norm: apply the final `encoder_norm` LayerNorm to the token map.

  Returns:
    A hashable `apply_fn(variables, x)` (`variables` is `{'params': ...}` or the bare params tree, see
    `srjax.models`), `x` [B, H, W, C_in] float32 with H, W multiples of the patch size; the result is
    [B, H/p, W/p, width] float32. It declares `.stride = (p, p)`.

  Raises:
    TypeError: model is not a ViT, or layer not an int.
    ValueError: layer out of range.
  """
  if not isinstance(model, ViT):
    checks.fail('model', type(model).__name__, 'a srjax.models.vit.ViT', error=TypeError)
  if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool):
    checks.fail('layer', layer, 'an int', error=TypeError)
  if not -model.depth <= layer < model.depth:
    checks.fail('layer', layer, f'an int in [-{model.depth}, {model.depth}) for depth {model.depth}')
  p = int(model.patch_size)
  return ModuleApply(model, None, (), (('layer', int(layer)), ('norm', bool(norm))), stride=(p, p))


def config_from_torch(state_dict: Mapping[str, Any], num_heads: int) -> dict[str, Any]:
  """ViT keyword arguments read from the shapes of a timm/DINO state dict (see `params_from_torch`)."""
  sd = state_dict
  width, _, patch, _ = np.shape(sd['patch_embed.proj.weight'])
  depth = len({k.split('.')[1] for k in sd if k.startswith('blocks.')})
  mlp_dim = np.shape(sd['blocks.0.mlp.fc1.weight'])[0]
  n_tokens = np.shape(sd['pos_embed'])[1] - 1
  side = int(round(math.sqrt(n_tokens)))
  if side * side != n_tokens:
    raise ValueError(f'state_dict pos_embed has {n_tokens} patch tokens, not a square grid')
  num_classes = np.shape(sd['head.weight'])[0] if 'head.weight' in sd else 0
  return dict(num_classes=int(num_classes), patch_size=int(patch), width=int(width), depth=depth,
              mlp_dim=int(mlp_dim), num_heads=int(num_heads), posemb_grid=(side, side))


def params_from_torch(state_dict: Mapping[str, Any], num_heads: int) -> dict[str, Any]:
  """Converts a timm/DINO ViT state dict (NumPy arrays) to big_vision-layout params for `ViT`.

  Expected keys: patch_embed.proj.{weight [D, C, p, p], bias}, cls_token [1, 1, D], pos_embed [1, 1+N, D],
  blocks.{i}.norm1, blocks.{i}.attn.qkv (fused [3D, D], rows ordered (q|k|v, head, head_dim)),
  blocks.{i}.attn.proj, blocks.{i}.norm2, blocks.{i}.mlp.fc1, blocks.{i}.mlp.fc2, norm; optional head.
  Other keys (LayerScale `ls1/ls2`, register tokens, `fc_norm`, as in DINOv2) are not modelled and raise a
  ValueError rather than being dropped. PyTorch Linear weights are [out, in] and become [in, out] kernels. The class token's position embedding
  `pos_embed[:, 0]` is folded into `cls` (big_vision adds position embeddings to patch tokens only); this is
  exact. DINO uses exact GELU and LayerNorm eps 1e-6: build the model with `ViT(**config_from_torch(sd, heads),
  exact_gelu=True, ln_eps=1e-6)`.

  Args:
    state_dict: mapping from PyTorch parameter names to arrays (convert tensors with `.numpy()` first).
    num_heads: number of attention heads (not recoverable from the shapes).

  Returns:
    Nested dict of float32 NumPy arrays, the contents of the 'params' collection.
  """
  sd = {k: np.asarray(v, dtype=np.float32) for k, v in state_dict.items()}
  for key in ('patch_embed.proj.weight', 'cls_token', 'pos_embed', 'norm.weight'):
    if key not in sd:
      raise ValueError(f'state_dict lacks {key!r}; expected a timm/DINO ViT state dict')
  width = sd['patch_embed.proj.weight'].shape[0]
  if width % num_heads:
    raise ValueError(f'num_heads={num_heads} does not divide the width {width}')
  head_dim = width // num_heads

  def ln(prefix):
    return {'scale': sd[f'{prefix}.weight'], 'bias': sd[f'{prefix}.bias']}

  def dense(prefix):
    return {'kernel': sd[f'{prefix}.weight'].T, 'bias': sd[f'{prefix}.bias']}

  params: dict[str, Any] = {
      'embedding': {'kernel': sd['patch_embed.proj.weight'].transpose(2, 3, 1, 0),
                    'bias': sd['patch_embed.proj.bias']},
      'cls': sd['cls_token'] + sd['pos_embed'][:, :1],
      'pos_embedding': sd['pos_embed'][:, 1:],
  }
  depth = len({k.split('.')[1] for k in sd if k.startswith('blocks.')})
  transformer: dict[str, Any] = {}
  for i in range(depth):
    b = f'blocks.{i}'
    qkv_w = sd[f'{b}.attn.qkv.weight'].reshape(3, width, width)  # (q|k|v, out, in)
    qkv_b = sd[f'{b}.attn.qkv.bias'].reshape(3, width)
    attn = {}
    for j, name in enumerate(('query', 'key', 'value')):
      attn[name] = {'kernel': qkv_w[j].T.reshape(width, num_heads, head_dim),
                    'bias': qkv_b[j].reshape(num_heads, head_dim)}
    attn['out'] = {'kernel': sd[f'{b}.attn.proj.weight'].T.reshape(num_heads, head_dim, width),
                   'bias': sd[f'{b}.attn.proj.bias']}
    transformer[f'encoderblock_{i}'] = {
        'LayerNorm_0': ln(f'{b}.norm1'),
        'MultiHeadDotProductAttention_0': attn,
        'LayerNorm_1': ln(f'{b}.norm2'),
        'MlpBlock_0': {'Dense_0': dense(f'{b}.mlp.fc1'), 'Dense_1': dense(f'{b}.mlp.fc2')},
    }
  transformer['encoder_norm'] = ln('norm')
  params['Transformer'] = transformer
  if 'head.weight' in sd:
    params['head'] = dense('head')
  used = {'patch_embed.proj.weight', 'patch_embed.proj.bias', 'cls_token', 'pos_embed', 'norm.weight',
          'norm.bias', 'head.weight', 'head.bias'}
  for i in range(depth):
    used |= {f'blocks.{i}.{n}.{t}' for n in ('norm1', 'attn.qkv', 'attn.proj', 'norm2', 'mlp.fc1', 'mlp.fc2')
             for t in ('weight', 'bias')}
  unknown = sorted(set(sd) - used)
  if unknown:
    raise ValueError(f'state_dict has keys this ViT does not model (LayerScale, register tokens, fc_norm, ...?): '
                     f'{unknown[:6]}{" ..." if len(unknown) > 6 else ""}')
  return params
