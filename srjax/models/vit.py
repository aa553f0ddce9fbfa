"""Vision Transformer (ViT) in Flax linen with the big_vision parameter layout; converts timm, DINO and DINOv2.

Parameter tree (the contents of the `'params'` collection)::

  embedding/{kernel [p, p, C_in, D], bias [D]}        patch embedding (a stride-p conv)
  cls [1, 1, D]                                        class token (its position embedding folded in)
  reg [1, R, D]                                        register tokens, only when num_registers > 0
  pos_embedding [1, gh*gw, D]                          learned position embedding of the patch tokens
  Transformer/encoderblock_{i}/LayerNorm_0             pre-attention LayerNorm
  Transformer/encoderblock_{i}/MultiHeadDotProductAttention_0/{query,key,value,out}
  Transformer/encoderblock_{i}/LayerScale_0/scale [D]  only when layer_scale (CaiT / DINOv2 LayerScale)
  Transformer/encoderblock_{i}/LayerNorm_1             pre-MLP LayerNorm
  Transformer/encoderblock_{i}/MlpBlock_0/{Dense_0, Dense_1}
  Transformer/encoderblock_{i}/LayerScale_1/scale [D]  only when layer_scale
  Transformer/encoder_norm                             final LayerNorm (absent when final_norm=False)
  fc_norm                                              LayerNorm after pooling, only when fc_norm
  head/{kernel, bias}                                  only when num_classes > 0

The token sequence is [cls, reg_1..reg_R, patches] (timm's and DINOv2's order). As in big_vision the position
embedding is added to the patch tokens only. A checkpoint that also embeds the class (and register) tokens --
timm's default layout and DINO / DINOv2's, where `pos_embed` has 1 (+ R) more rows than patches -- converts
exactly by folding those rows into `cls` (and `reg`), since a constant added before the first block is the same
whichever token order it is added in; timm's `no_embed_class=True` layout (its DINOv2-with-registers models),
where `pos_embed` covers the patches only, maps directly. See `params_from_torch`.

Inputs of another size than the position grid was trained for get an interpolated position embedding
(`posemb_interp`), which matters for SRT on photos of their own size.

The stride trick (Amir et al. 2021): `patch_stride=s` (s a divisor of p, s < p) runs the patch embedding conv at
stride s, so the p x p patches overlap and the token map is (about) p/s times denser on each axis, without any
training; the position embedding is interpolated to the denser grid exactly as for a larger input (for converted
DINO / DINOv2 weights, DINOv2's interpolation, which is also what Amir et al.'s code does). Clone any ViT,
converted or not, with `model.clone(patch_stride=s)`; the params are unchanged.

`features(model, layer, norm)` gives the token map of any block as an `apply_fn(variables, x) -> [B, h, w, D]`
with the class and register tokens dropped: the feature extractor that SRT (`srjax.srt`) averages over shifts.

References:
  Dosovitskiy et al., "An image is worth 16x16 words" (ICLR 2021), Sec. 3.1 (architecture, Eq. 1-4).
  Touvron et al., "Going deeper with image transformers" (CaiT, ICCV 2021), Sec. 2.1 (LayerScale).
  Oquab et al., "DINOv2" (2023), and Darcet et al., "Vision transformers need registers" (ICLR 2024), Sec. 2.
  Amir et al., "Deep ViT features as dense visual descriptors" (2021), Sec. 3.1 (the stride trick, "increasing
    the spatial resolution").
  Lao et al., "Sub-token ViT embedding via stochastic resonance transformers", Sec. 2 (SRT features).
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
POSEMB_INTERPS = ('jax_bicubic', 'torch_bicubic', 'dinov2')
POOLS = ('tok', 'gap')
STRIDE_PADS = ('centre', 'valid')


def patch_padding(patch_size: int, stride: int, mode: str = 'centre') -> tuple[int, int]:
  """(before, after) zero padding, per spatial axis, of the patch embedding at `stride` (see `ViT.patch_stride`).

  'centre' pads p - s pixels in all, floor((p - s) / 2) before, so an H-pixel side gives H / s tokens and token i
  is centred on the pixel cell [s i, s i + s) (to half a pixel when p - s is odd); 'valid' pads nothing (Amir et
  al.'s layout: (H - p) / s + 1 tokens). At stride p both are (0, 0).
  """
  checks.one_of('patch_stride_pad', mode, STRIDE_PADS)
  if mode == 'valid':
    return 0, 0
  return (patch_size - stride) // 2, (patch_size - stride + 1) // 2


def decode_variant(variant: str) -> dict[str, int]:
  """Parses a big_vision variant string such as 'S/16' or 'B/8' into ViT keyword arguments.

  Args:
    variant: '<size>/<patch>' with size in Ti, S, M, B, L.

  Returns:
    dict with width, depth, mlp_dim, num_heads and patch_size.

  Raises:
    ValueError: a string of another form.
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


class LayerScale(nn.Module):
  """Per-channel scaling of a residual branch, `x * scale` (CaiT Sec. 2.1; timm / DINOv2 `ls1`, `ls2`)."""
  init_value: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param('scale', nn.initializers.constant(self.init_value), (x.shape[-1],), jnp.float32)
    return x * scale


class Encoder1DBlock(nn.Module):
  """Pre-norm transformer block: x + LS(MHA(LN(x))), then x + LS(MLP(LN(x))) (LS = LayerScale or identity)."""
  mlp_dim: int
  num_heads: int
  exact_gelu: bool = False
  ln_eps: float = 1e-6
  layer_scale: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.LayerNorm(epsilon=self.ln_eps)(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads,
                                        kernel_init=nn.initializers.xavier_uniform(),
                                        deterministic=True)(y, y)
    if self.layer_scale:
      y = LayerScale(name='LayerScale_0')(y)
    x = x + y
    y = nn.LayerNorm(epsilon=self.ln_eps)(x)
    y = MlpBlock(mlp_dim=self.mlp_dim, exact_gelu=self.exact_gelu)(y)
    if self.layer_scale:
      y = LayerScale(name='LayerScale_1')(y)
    return x + y


class Encoder(nn.Module):
  """Stack of `depth` blocks named encoderblock_{i}, then `encoder_norm` (when final_norm).

  `layer` stops after block `layer` (0-based); `norm` applies encoder_norm to the returned tokens (a no-op when
  the model has no final norm, as timm's `forward_features` then returns the block output).
  """
  depth: int
  mlp_dim: int
  num_heads: int
  exact_gelu: bool = False
  ln_eps: float = 1e-6
  layer_scale: bool = False
  final_norm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, layer: int | None = None, norm: bool = True) -> jax.Array:
    last = self.depth - 1 if layer is None else layer
    for lyr in range(last + 1):
      x = Encoder1DBlock(mlp_dim=self.mlp_dim, num_heads=self.num_heads, exact_gelu=self.exact_gelu,
                         ln_eps=self.ln_eps, layer_scale=self.layer_scale, name=f'encoderblock_{lyr}')(x)
    if not self.final_norm:
      return x
    encoder_norm = nn.LayerNorm(epsilon=self.ln_eps, name='encoder_norm')
    return encoder_norm(x) if norm else x


def torch_bicubic_matrix(n_in: int, n_out: int, scale_factor: float | None = None) -> np.ndarray:
  """[n_out, n_in] float64 matrix of PyTorch's 1-D bicubic resampling (`F.interpolate(mode='bicubic')`).

  PyTorch's kernel (align_corners=False, antialias=False): source coordinate
  `src = (dst + 0.5) / s - 0.5` with s = scale_factor when given, else n_out / n_in; taps at floor(src) - 1 ..
  floor(src) + 2 with Keys' cubic convolution weights at A = -0.75, indices clamped to [0, n_in - 1] (the border
  value repeats; the weights are not renormalised). The 2-D resize is separable: `Wy @ X @ Wx^T`.

  Args:
    n_in: input length.
    n_out: output length.
    scale_factor: the scale used for the coordinate mapping (DINOv2 passes (n_out + 0.1) / n_in); None uses
      n_out / n_in (PyTorch's `size=` form).

  Returns:
    The resampling matrix.
  """
  a = -0.75
  s = n_out / n_in if scale_factor is None else scale_factor
  src = (np.arange(n_out) + 0.5) / s - 0.5
  base = np.floor(src)
  t = src - base

  def near(x):  # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + 1

  def far(x):  # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)  # [n_out, 4]
  mat = np.zeros((n_out, n_in))
  for k in range(4):
    idx = np.clip(base.astype(np.int64) - 1 + k, 0, n_in - 1)
    np.add.at(mat, (np.arange(n_out), idx), weights[:, k])
  return mat


def _resize_posemb(posemb: jax.Array, grid: tuple[int, int], new_grid: tuple[int, int],
                   method: str = 'jax_bicubic') -> jax.Array:
  """Resizes a [1, gh*gw, D] position embedding to [1, nh*nw, D] (see `ViT.posemb_interp`)."""
  d = posemb.shape[-1]
  pe = posemb.reshape(grid[0], grid[1], d)
  if method == 'jax_bicubic':
    pe = jax.image.resize(pe, (new_grid[0], new_grid[1], d), method='bicubic')
  else:
    offset = 0.1 if method == 'dinov2' else None
    wy = torch_bicubic_matrix(grid[0], new_grid[0], None if offset is None else (new_grid[0] + offset) / grid[0])
    wx = torch_bicubic_matrix(grid[1], new_grid[1], None if offset is None else (new_grid[1] + offset) / grid[1])
    pe = jnp.einsum('ai,ijd,bj->abd', jnp.asarray(wy, jnp.float32), pe, jnp.asarray(wx, jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)
  return pe.reshape(1, new_grid[0] * new_grid[1], d)


class ViT(nn.Module):
  """Vision Transformer with big_vision parameter names (see module docstring).

  Attributes:
    num_classes: size of the classification head; 0 means no head (the model returns the pooled pre-logits).
    patch_size: patch side p (the embedding conv has kernel = stride = p); 14 for DINOv2, 16 or 8 for others.
    width: token width D.
    depth: number of blocks.
    mlp_dim: hidden width of the MLPs.
    num_heads: attention heads.
    posemb_grid: (gh, gw), the token grid the position embedding was trained for (224/16 -> (14, 14);
      DINOv2's 518/14 -> (37, 37)).
    exact_gelu: erf GELU (DINO, DINOv2, timm) if True, tanh approximation (big_vision default) if False.
    ln_eps: LayerNorm epsilon (1e-6 for big_vision, timm ViTs, DINO and DINOv2).
    num_registers: register tokens after the class token (Darcet et al.; 4 in DINOv2's `*_reg` models).
    layer_scale: per-channel LayerScale on both residual branches (DINOv2 and timm `init_values` models).
    final_norm: whether the encoder ends with `encoder_norm` (timm drops it when `fc_norm` replaces it).
    pool: 'tok' (the class token) or 'gap' (mean of the patch tokens, the class and register tokens excluded,
      as timm's global_pool='avg') for the head.
    fc_norm: a LayerNorm `fc_norm` on the pooled vector before the head (timm's `fc_norm`).
    posemb_interp: how the position embedding is resized for inputs of another grid:
      'jax_bicubic' (default, big_vision-like: `jax.image.resize` bicubic, Keys a = -0.5, antialiased when
      shrinking); 'torch_bicubic' (PyTorch `F.interpolate(mode='bicubic', size=..., antialias=False)`: A = -0.75,
      clamped borders); 'dinov2' (what DINO and DINOv2's `interpolate_pos_encoding` do, so a converted DINOv2
      computes the same features at any size as the authors' model: the PyTorch bicubic kernel, no antialias,
      with the scale factor (n + 0.1) / M instead of n / M, their "historical kludge" against float rounding in
      the output size, which shifts the sampling positions slightly). timm's own runtime resize
      (`dynamic_img_size`) uses antialias=True and is not reproduced.
    patch_stride: None (default) or p: the patch embedding runs at stride p (the ViT as trained). An int s that
      divides p, s < p: the stride trick of Amir et al. (Sec. 3.1): the embedding conv runs at stride s over
      overlapping p x p patches, giving a denser token map from the same weights (no training; p/2 and p/4 are
      the usual choices; 4x / 16x the tokens of stride p/2 / p/4, and attention cost grows with their square).
      The position embedding is interpolated to the denser grid with `posemb_interp`.
    patch_stride_pad: the border of the strided embedding (only used when patch_stride < p): 'centre' (default)
      zero-pads the image by p - s pixels per axis (floor((p - s)/2) before, the rest after; see
      `patch_padding`), so an H x W image gives H/s x W/s tokens and token (i, j) sits on pixel cell
      [s i, s i + s) x [s j, s j + s): the layout `srjax.srt` and the nearest / bilinear upsamplers expect (the
      model declares stride s to them). 'valid' pads nothing, as Amir et al.'s code does: (H - p)/s + 1 tokens,
      token i over pixels [s i, s i + p); `features` then declares no stride (SRT needs 'centre'). The zero
      fill is in the model's input space, as SRT's shift fill is. Either way, token (i, j) at stride s is the
      stride-p token of the image translated by the matching offset (the test's brute-force reference).
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
  num_registers: int = 0
  layer_scale: bool = False
  final_norm: bool = True
  pool: str = 'tok'
  fc_norm: bool = False
  posemb_interp: str = 'jax_bicubic'
  patch_stride: int | None = None
  patch_stride_pad: str = 'centre'

  def token_stride(self) -> int:
    """The stride of the token map in pixels: patch_stride when set, else patch_size (validated)."""
    p = self.patch_size
    if self.patch_stride is None:
      return p
    checks.one_of('patch_stride_pad', self.patch_stride_pad, STRIDE_PADS)
    checks.integer('patch_stride', self.patch_stride, 1, p)
    if p % self.patch_stride:
      checks.fail('patch_stride', self.patch_stride, f'None or a divisor of the patch size {p} (such as {p // 2} '
                  f'or {p // 4 if p % 4 == 0 else 1})')
    return int(self.patch_stride)

  @nn.compact
  def __call__(self, x: jax.Array, *, layer: int | None = None, norm: bool = True) -> jax.Array:
    """Runs the ViT.

    Args:
      x: images [B, H, W, C_in] float32; H and W multiples of patch_size (anything else is a ValueError: the
        patch embedding would crop it). With patch_stride = s < p: multiples of s ('centre'), or H - p and
        W - p non-negative multiples of s ('valid').
      layer: None for the full model; an int L (0-based, negative counts from the end) to return the token map
        of block L with the class and register tokens dropped (later blocks are not run).
      norm: with `layer`, whether to apply the final `encoder_norm` to that token map.

    Returns:
      layer=None: logits [B, num_classes] (or the pooled pre-logits [B, width] when num_classes == 0).
      layer=L: token map [B, H/p, W/p, width] (H/s, W/s at patch_stride s, 'centre'; (H-p)/s + 1 ... 'valid').
    """
    checks.one_of('posemb_interp', self.posemb_interp, POSEMB_INTERPS)
    checks.one_of('pool', self.pool, POOLS)
    p = self.patch_size
    s = self.token_stride()
    if s == p:
      if x.ndim != 4 or x.shape[1] % p or x.shape[2] % p:
        checks.fail('x', x, f'images [B, H, W, C] with H and W multiples of the patch size {p} (the patch '
                    f'embedding would crop the rest): resize, or pad (srjax.srt pads with pad_mode=)')
      x = nn.Conv(self.width, (p, p), strides=(p, p), padding='VALID', name='embedding')(x)
    else:
      lo, hi = patch_padding(p, s, self.patch_stride_pad)
      if x.ndim != 4 or any((n + lo + hi - p) % s or n + lo + hi < p for n in x.shape[1:3]):
        need = f'multiples of the stride {s}' if lo + hi else f'at least {p} with H - {p} and W - {p} multiples of {s}'
        checks.fail('x', x, f'images [B, H, W, C] with H and W {need} (patch_stride={s}, '
                    f'patch_stride_pad={self.patch_stride_pad!r}; the strided embedding would crop the rest)')
      x = nn.Conv(self.width, (p, p), strides=(s, s), padding=((lo, hi), (lo, hi)), name='embedding')(x)
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c)
    grid = tuple(self.posemb_grid)
    posemb = self.param('pos_embedding', nn.initializers.normal(stddev=1 / math.sqrt(c)),
                        (1, grid[0] * grid[1], c), jnp.float32)
    if (h, w) != grid:
      posemb = _resize_posemb(posemb, grid, (h, w), self.posemb_interp)
    x = x + posemb
    prefix = [jnp.tile(self.param('cls', nn.initializers.zeros, (1, 1, c), jnp.float32), (b, 1, 1))]
    if self.num_registers:
      reg = self.param('reg', nn.initializers.normal(stddev=1e-6), (1, self.num_registers, c), jnp.float32)
      prefix.append(jnp.tile(reg, (b, 1, 1)))
    n_prefix = 1 + self.num_registers
    x = jnp.concatenate(prefix + [x], axis=1)
    if layer is not None:
      if not -self.depth <= layer < self.depth:
        checks.fail('layer', layer, f'an int in [-{self.depth}, {self.depth})')
      layer = layer % self.depth
    x = Encoder(depth=self.depth, mlp_dim=self.mlp_dim, num_heads=self.num_heads, exact_gelu=self.exact_gelu,
                ln_eps=self.ln_eps, layer_scale=self.layer_scale, final_norm=self.final_norm,
                name='Transformer')(x, layer, norm)
    if layer is not None:
      return x[:, n_prefix:].reshape(b, h, w, c)
    x = x[:, 0] if self.pool == 'tok' else jnp.mean(x[:, n_prefix:], axis=1)
    if self.fc_norm:
      x = nn.LayerNorm(epsilon=self.ln_eps, name='fc_norm')(x)
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
    norm: apply the final `encoder_norm` LayerNorm to the token map (no-op for a model without one).

  Returns:
    A hashable `apply_fn(variables, x)` (`variables` is `{'params': ...}` or the bare params tree, see
    `srjax.models`), `x` [B, H, W, C_in] float32 with H, W multiples of the patch size; the result is
    [B, H/p, W/p, width] float32. It declares `.stride = (p, p)`; for a strided model
    (`model.clone(patch_stride=s)`, 'centre' padding) [B, H/s, W/s, width] and `.stride = (s, s)`, so `srjax.srt`
    runs on it unchanged; with patch_stride_pad='valid' no stride is declared.

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
  s = model.token_stride()
  declared = None if s != model.patch_size and model.patch_stride_pad == 'valid' else (s, s)
  return ModuleApply(model, None, (), (('layer', int(layer)), ('norm', bool(norm))), stride=declared)


# ----------------------------------------------------------------------------------------------------------
# timm / DINO / DINOv2 checkpoints.

_BLOCK_PARTS = ('norm1', 'attn.qkv', 'attn.proj', 'norm2', 'mlp.fc1', 'mlp.fc2')
_IGNORED = ('mask_token',)  # DINOv2's masked-image-modelling token: unused at inference


def _square(n: int) -> int | None:
  side = int(round(math.sqrt(n))) if n > 0 else 0
  return side if side > 0 and side * side == n else None


def _layout(sd: Mapping[str, Any]) -> dict[str, Any]:
  """Reads the structural choices of a timm / DINO / DINOv2 state dict from its keys and shapes."""
  for key in ('patch_embed.proj.weight', 'pos_embed', 'blocks.0.attn.qkv.weight', 'blocks.0.mlp.fc1.weight'):
    if key not in sd:
      if key.startswith('blocks.0.mlp') and 'blocks.0.mlp.w12.weight' in sd:
        checks.fail('state_dict', 'blocks.0.mlp.w12.weight', 'a ViT with a GELU MLP (fc1/fc2); the SwiGLU MLP '
                    "of DINOv2's giant models is not supported")
      if key == 'blocks.0.attn.qkv.weight' and any(k.startswith('blocks.0.0.') for k in sd):
        checks.fail('state_dict', 'blocks.0.0.*', "unchunked block keys 'blocks.<i>.*' (DINOv2's block_chunks "
                    "layout: rename 'blocks.<chunk>.<i>.' to 'blocks.<i>.')")
      checks.fail('state_dict', sorted(sd)[:6], f'a timm / DINO / DINOv2 ViT state dict; it lacks {key!r}')
  width, c_in, ph, pw = np.shape(sd['patch_embed.proj.weight'])
  if ph != pw:
    checks.fail('state_dict', (ph, pw), 'square patches (patch_embed.proj.weight [D, C, p, p])')
  depth = len({k.split('.')[1] for k in sd if k.startswith('blocks.')})
  blocks = sorted({int(k.split('.')[1]) for k in sd if k.startswith('blocks.')})
  if blocks != list(range(depth)):
    checks.fail('state_dict', blocks, 'blocks numbered 0 .. depth-1')
  has_cls = 'cls_token' in sd
  if not has_cls:
    checks.fail('state_dict', 'cls_token', 'a ViT with a class token (models without one, class_token=False, '
                'are not supported)')
  reg_key = 'reg_token' if 'reg_token' in sd else ('register_tokens' if 'register_tokens' in sd else None)
  n_reg = int(np.shape(sd[reg_key])[1]) if reg_key else 0
  n_pos = int(np.shape(sd['pos_embed'])[1])
  n_prefix = 1 + n_reg
  # pos_embed covers the patches only (timm no_embed_class), or the class (and, in timm, register) tokens too:
  # timm's layout has 1 + R + N rows, DINOv2's official one 1 + N rows (registers get no position embedding).
  # Which prefix rows a layout may embed: timm with reg_token: none (no_embed_class) or all; DINOv2's
  # register_tokens: the class token only; no registers: none or the class token.
  allowed = {'reg_token': (0, n_prefix), 'register_tokens': (1,), None: (0, 1)}[reg_key]
  candidates = [(n_pos - k, k) for k in allowed if _square(n_pos - k)]
  candidates = sorted(set(candidates), key=lambda c: -c[1])
  if not candidates:
    checks.fail('state_dict', f'pos_embed with {n_pos} rows', f'N patch rows (a square grid), plus 1 or {n_prefix} '
                f'rows for the class{" and register" if n_reg else ""} tokens')
  if len({rows for rows, _ in candidates}) > 1:
    checks.fail('state_dict', f'pos_embed with {n_pos} rows and {n_reg} register tokens',
                'an unambiguous layout (the patch grid is square for more than one count of embedded prefix '
                'tokens; such a checkpoint is not supported)')
  rows, n_embedded = candidates[0]
  ls = [k for k in sd if re.fullmatch(r'blocks\.\d+\.ls[12]\.(gamma|weight)', k)]
  if ls and len(ls) != 2 * depth:
    checks.fail('state_dict', sorted(ls)[:4], f'LayerScale (ls1, ls2) in every one of the {depth} blocks')
  final_norm = 'norm.weight' in sd
  fc_norm = 'fc_norm.weight' in sd
  return dict(width=int(width), c_in=int(c_in), patch=int(ph), depth=depth, n_reg=n_reg, reg_key=reg_key,
              side=_square(rows), n_embedded=n_embedded, layer_scale=bool(ls), final_norm=final_norm,
              fc_norm=fc_norm, mlp_dim=int(np.shape(sd['blocks.0.mlp.fc1.weight'])[0]))


def config_from_torch(state_dict: Mapping[str, Any], num_heads: int | None = None) -> dict[str, Any]:
  """ViT keyword arguments inferred from the keys and shapes of a timm / DINO / DINOv2 state dict.

  Inferred: patch size, width, depth, MLP width, the position grid and whether `pos_embed` includes the class
  (and register) tokens, register tokens (`reg_token` in timm, `register_tokens` in DINOv2), LayerScale
  (`blocks.N.ls1.gamma`), a final norm (`norm`) or a pooled `fc_norm` (timm's global-average-pool models, whose
  head then pools the patch tokens: pool='gap'), and the head size. The head count is not in the shapes: it
  defaults to width // 64 (the head width of every timm, DINO and DINOv2 ViT: Ti 3, S 6, B 12, L 16, g 24).
  The position embedding is interpolated as DINO / DINOv2 do (posemb_interp='dinov2'). Build the model with
  `ViT(**config_from_torch(sd), exact_gelu=True, ln_eps=1e-6)` (timm's and DINO's GELU and epsilon), or call
  `from_torch`.

  Args:
    state_dict: mapping from PyTorch parameter names to arrays.
    num_heads: attention heads; None means width // 64.

  Returns:
    dict of `ViT` fields (without exact_gelu and ln_eps).

  Raises:
    ValueError: a key the layout needs is missing, or the state dict holds a part this ViT does not model
      (SwiGLU MLPs, chunked blocks, no class token, partial LayerScale), with the key named.
  """
  lay = _layout(state_dict)
  if num_heads is None:
    num_heads = max(lay['width'] // 64, 1)
  checks.integer('num_heads', num_heads, 1)
  if lay['width'] % num_heads:
    checks.fail('num_heads', num_heads, f'a divisor of the width {lay["width"]}')
  num_classes = np.shape(state_dict['head.weight'])[0] if 'head.weight' in state_dict else 0
  return dict(num_classes=int(num_classes), patch_size=lay['patch'], width=lay['width'], depth=lay['depth'],
              mlp_dim=lay['mlp_dim'], num_heads=int(num_heads), posemb_grid=(lay['side'], lay['side']),
              num_registers=lay['n_reg'], layer_scale=lay['layer_scale'], final_norm=lay['final_norm'],
              pool='gap' if lay['fc_norm'] else 'tok', fc_norm=lay['fc_norm'], posemb_interp='dinov2')


def params_from_torch(state_dict: Mapping[str, Any], num_heads: int | None = None) -> dict[str, Any]:
  """Converts a timm / DINO / DINOv2 ViT state dict (NumPy arrays) to big_vision-layout params for `ViT`.

  Keys read: patch_embed.proj.{weight [D, C, p, p], bias}, cls_token [1, 1, D], optional reg_token /
  register_tokens [1, R, D], pos_embed [1, (1 (+R)) + N, D] or [1, N, D], blocks.{i}.norm1,
  blocks.{i}.attn.qkv (fused [3D, D], rows ordered (q|k|v, head, head_dim); a missing bias is zero),
  blocks.{i}.attn.proj, optional blocks.{i}.ls1.gamma / ls2.gamma, blocks.{i}.norm2, blocks.{i}.mlp.fc1,
  blocks.{i}.mlp.fc2, norm and/or fc_norm, optional head. `mask_token` (DINOv2's, unused at inference) is
  skipped; any other key is a ValueError naming it rather than being dropped. PyTorch Linear weights are
  [out, in] and become [in, out] kernels. Position rows of the class / register tokens are folded into `cls` /
  `reg` (exact: the same constant is added to the same token).

  Args:
    state_dict: mapping from PyTorch parameter names to arrays (convert tensors with `.numpy()` first, or read
      the file with `srjax.models.pretrained.load_state_dict`).
    num_heads: attention heads; None means width // 64 (see `config_from_torch`).

  Returns:
    Nested dict of float32 NumPy arrays, the contents of the 'params' collection.

  Raises:
    ValueError: see `config_from_torch`; also keys this ViT does not model.
  """
  sd = {k: np.asarray(v, dtype=np.float32) for k, v in state_dict.items()}
  cfg = config_from_torch(sd, num_heads)
  lay = _layout(sd)
  width, heads = cfg['width'], cfg['num_heads']
  head_dim = width // heads
  used = set(_IGNORED) & set(sd)

  def get(key):
    if key not in sd:
      checks.fail('state_dict', key, 'a ViT state dict with this key (its layout needs it)')
    used.add(key)
    return sd[key]

  def ln(prefix):
    return {'scale': get(f'{prefix}.weight'), 'bias': get(f'{prefix}.bias')}

  def dense(prefix):
    return {'kernel': get(f'{prefix}.weight').T, 'bias': get(f'{prefix}.bias')}

  pos = get('pos_embed')
  k = lay['n_embedded']
  cls = get('cls_token') + (pos[:, :1] if k >= 1 else 0.0)
  params: dict[str, Any] = {
      'embedding': {'kernel': get('patch_embed.proj.weight').transpose(2, 3, 1, 0),
                    'bias': get('patch_embed.proj.bias')},
      'cls': cls,
      'pos_embedding': pos[:, k:],
  }
  if lay['n_reg']:
    reg = get(lay['reg_key'])
    params['reg'] = reg + (pos[:, 1:1 + lay['n_reg']] if k == 1 + lay['n_reg'] else 0.0)
  transformer: dict[str, Any] = {}
  for i in range(lay['depth']):
    b = f'blocks.{i}'
    qkv_w = get(f'{b}.attn.qkv.weight').reshape(3, width, width)  # (q|k|v, out, in)
    qkv_b = (get(f'{b}.attn.qkv.bias') if f'{b}.attn.qkv.bias' in sd else np.zeros(3 * width, np.float32))
    qkv_b = qkv_b.reshape(3, width)
    attn = {}
    for j, name in enumerate(('query', 'key', 'value')):
      attn[name] = {'kernel': qkv_w[j].T.reshape(width, heads, head_dim), 'bias': qkv_b[j].reshape(heads, head_dim)}
    attn['out'] = {'kernel': get(f'{b}.attn.proj.weight').T.reshape(heads, head_dim, width),
                   'bias': get(f'{b}.attn.proj.bias')}
    block = {
        'LayerNorm_0': ln(f'{b}.norm1'),
        'MultiHeadDotProductAttention_0': attn,
        'LayerNorm_1': ln(f'{b}.norm2'),
        'MlpBlock_0': {'Dense_0': dense(f'{b}.mlp.fc1'), 'Dense_1': dense(f'{b}.mlp.fc2')},
    }
    if lay['layer_scale']:
      for j in (1, 2):
        key = f'{b}.ls{j}.gamma' if f'{b}.ls{j}.gamma' in sd else f'{b}.ls{j}.weight'
        block[f'LayerScale_{j - 1}'] = {'scale': get(key)}
    transformer[f'encoderblock_{i}'] = block
  if lay['final_norm']:
    transformer['encoder_norm'] = ln('norm')
  params['Transformer'] = transformer
  if lay['fc_norm']:
    params['fc_norm'] = ln('fc_norm')
  if 'head.weight' in sd:
    params['head'] = dense('head')
  unknown = sorted(set(sd) - used)
  if unknown:
    checks.fail('state_dict', unknown[:6], 'only the keys of a timm / DINO / DINOv2 ViT this module models '
                '(q/k norms, norm_pre, attention pooling, SwiGLU and other extras are not supported)')
  return params


def from_torch(state_dict: Mapping[str, Any], num_heads: int | None = None) -> tuple[ViT, dict[str, Any]]:
  """(model, params) for a timm / DINO / DINOv2 ViT state dict: `config_from_torch` + `params_from_torch`.

  The model uses exact GELU and LayerNorm epsilon 1e-6 (timm's, DINO's and DINOv2's) and interpolates its
  position embedding as DINOv2 does for inputs of other sizes.

  Args:
    state_dict: see `params_from_torch`.
    num_heads: see `config_from_torch`.

  Returns:
    (ViT, the contents of its 'params' collection).
  """
  params = params_from_torch(state_dict, num_heads)
  model = ViT(**config_from_torch(state_dict, num_heads), exact_gelu=True, ln_eps=1e-6)
  return model, params
