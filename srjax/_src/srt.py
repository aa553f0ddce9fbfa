"""Stochastic Resonance Transformer (SRT): sub-token features by averaging over input shifts.

The public names are re-exported by `srjax.srt_lib` (and the function itself as `srjax.srt`); import them from
there. This module holds the implementation in three parts: a static `Plan` (the geometry: offsets and their
weights, chunks, strides, coverage counts, all NumPy, fixed at trace time), a sampler (`TokenSampler` or
`PixelSampler`: turns the feature map of one chunk of shifted images into one weighted sample per offset) and
an aggregator (`MeanAggregator`, `VarAggregator`, `MedianAggregator`: `init` / `update` one offset at a time /
`finalize`), driven by one `lax.scan` over chunks (`_srt_impl`).

References:
  Lao et al., "Sub-token ViT Embedding via Stochastic Resonance Transformers" (arXiv 2310.03967), Sec. 2 and
  Algorithm 1; the authors' PyTorch code (`feature_extractor.py`, classes `EnsembledExtractor` and
  `EnsembledExtractorFast`), whose conventions are stated where they are used below.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from srjax import checks

PADDINGS = ('zeros', 'edge', 'reflect')
OUTPUTS = ('token', 'pixel')
AGGREGATES = ('mean', 'var', 'mean_var', 'median')
BACK_FILLS = ('exclude', 'zeros')
# Images per forward pass used to pick the default chunk size: on XLA:CPU a ViT forward costs about the same per
# image at batch 2..10 and more per image at larger batches; `python -m eval.bench.srt --batch-sweep` measures it.
IMAGES_PER_FORWARD = 8

_NP_PAD_MODE = {'zeros': 'constant', 'edge': 'edge', 'reflect': 'reflect'}

Offsets = tuple[tuple[int, int], ...]


# ----------------------------------------------------------------------------------------------------------
# Public functions.


def offsets_grid(d: int, *, step: int = 1, reference: bool = False) -> Offsets:
  """The grid of integer shifts (dy, dx) in {-d, -d + step, ..., d}^2 (Algorithm 1), dy-major.

  Args:
    d: perturbation level, a non-negative int.
    step: grid spacing in pixels, a positive int dividing d (1: the full grid of Algorithm 1).
    reference: append the identity (0, 0) once more, as the authors' code does (it then counts twice).

  Returns:
    Tuple of (2d/step + 1)^2 (+1 if reference) (dy, dx) int pairs.

  Raises:
    TypeError / ValueError: d is not a non-negative int, step not a positive int dividing d.

  References:
    Lao et al., Algorithm 1 (the deterministic grid); the authors' `feature_extractor.py` (the extra identity).
  """
  d = _check_d(d)
  checks.integer('step', step, 1)
  if d % step:
    checks.fail('step', step, f'a positive int dividing d={d}')
  r = range(-d, d + 1, step)
  grid = tuple((dy, dx) for dy in r for dx in r)
  return grid + ((0, 0),) if reference else grid


def shift(img: jax.Array, offset: Any, padding: str = 'zeros', *, max_shift: int | None = None) -> jax.Array:
  """Translates images by integer offsets: `out[b, y, x] = img[b, y - dy_b, x - dx_b]` (content moves down/right).

  Args:
    img: [H, W, C] or [B, H, W, C].
    offset: (dy, dx) Python ints (one static offset for every image), or an int array of shape [2] (one offset)
      or [B, 2] (one offset per image), which may be traced (under jit / vmap / inside a scan).
    padding: fill for pixels that come from outside: 'zeros' (0), 'edge' (nearest border pixel repeated) or
      'reflect' (mirror about the border pixel without repeating it, NumPy's 'reflect': ..., 2, 1 | 0, 1, 2).
    max_shift: static bound on |dy| and |dx| (the width of the padding), required when `offset` is an array.
      Traced offsets beyond it are clipped to +-max_shift (`lax.dynamic_slice` clamps its start index).

  Returns:
    Array of the same shape and dtype as img.

  Raises:
    ValueError / TypeError naming the argument: img not rank 3 or 4, an unknown padding, a static offset that
    is not an integer pair, an array offset without max_shift, or max_shift beyond the image size for 'reflect'.
  """
  checks.one_of('padding', padding, PADDINGS)
  img = jnp.asarray(img)
  if img.ndim not in (3, 4):
    checks.fail('img', img, 'an array [H, W, C] or [B, H, W, C]')
  batched = img if img.ndim == 4 else img[None]
  if isinstance(offset, (tuple, list)) and all(isinstance(v, (int, np.integer)) for v in offset):
    (dy, dx), = _check_offsets([offset], name='offset')
    pad = max(abs(dy), abs(dx)) if max_shift is None else checks.integer('max_shift', max_shift, 0)
    per_image = jnp.broadcast_to(jnp.asarray([dy, dx], jnp.int32), (batched.shape[0], 2))
  else:
    if max_shift is None:
      checks.fail('max_shift', max_shift, 'a non-negative int (required when offset is an array)')
    pad = checks.integer('max_shift', max_shift, 0)
    off = jnp.asarray(offset)
    if off.shape not in ((2,), (batched.shape[0], 2)) or not jnp.issubdtype(off.dtype, jnp.integer):
      checks.fail('offset', off, f'an int pair, or an int array of shape [2] or [{batched.shape[0]}, 2]')
    per_image = jnp.broadcast_to(off, (batched.shape[0], 2))
  if padding == 'reflect' and pad >= min(batched.shape[1:3]):
    checks.fail('max_shift', pad, f"a shift < the image size {batched.shape[1:3]} for padding='reflect'")
  out = _shift_batch(batched, per_image, pad, padding)
  return out if img.ndim == 4 else out[0]


def srt(apply_fn: Callable[[Any, jax.Array], jax.Array], params: Any, img: jax.Array, d: int = 3, *,
        offsets: Sequence[tuple[int, int]] | None = None, padding: str = 'zeros', output: str = 'token',
        aggregate: str = 'mean', back_fill: str = 'exclude', chunk_size: int | None = None,
        pad_mode: str | None = None) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Stochastic Resonance Transformer features: the aggregate of back-shifted feature maps of shifted inputs.

  Translate the image by small integer offsets, run the (frozen) feature extractor on every translated copy,
  undo each translation on the feature map, and aggregate (the mean of Algorithm 1, the variance of Fig. 4, or
  the median).

  Conventions (those of the authors' code, `feature_extractor.py`):
    * An offset is a pair (dy, dx) of integers. The shifted image is `shifted[y, x] = img[y - dy, x - dx]`:
      content moves down by dy and right by dx. Pixels from outside the image are filled according to
      `padding`, in the model's input space: the authors shift AFTER input normalisation with a zero fill,
      which is `padding='zeros'` here.
    * A feature map f [h, w, C'] has stride p (py = H/h and px = W/w may differ). Its nearest upsampling is
      `up[y, x] = f[y // py, x // px]`, and its back-shifted version `b[y, x] = up[y + dy, x + dx]`, undefined
      (zero-filled) where (y + dy, x + dx) falls outside the image. The authors' dense path sums these and
      divides by the number of offsets, then average-pools by p to return to token resolution.
    * `back_fill` says how undefined back-shifted pixels count. The authors' code ('zeros') fills them with 0
      and divides the sum by the number of offsets N, so features near the border shrink towards 0 (by a
      factor 16/49 in a corner for d=3). The default ('exclude') averages each pixel only over the offsets
      whose back-shifted map covers it. Each offset o gets per-pixel weights
          pi_o(x) = m_o mask_o(x) / count(x)   ('exclude'; count(x) = sum_o m_o mask_o(x), 0 if uncovered)
          pi_o(x) = m_o / N                    ('zeros'; N = sum_o m_o)
      where m_o is the multiplicity of o in `offsets`; sum_o pi_o(x) = 1 wherever x is covered.

  Statistics (`b_o` the back-shifted maps, `P` the p-by-p average pooling):
    output='pixel' [.., H, W, C']:
      mean(x)   = sum_o pi_o(x) b_o(x)
      var(x)    = sum_o pi_o(x) (b_o(x) - mean(x))^2 / sum_o pi_o(x)          (population variance)
      median(x) = median of {b_o(x) : pi_o(x) > 0}, repeated offsets counted with their multiplicity
    output='token' [.., h, w, C'], without materialising full resolution: each offset contributes to token T
    the token-resolution sample t_o[T] (the pi-weighted average of b_o over the cell of T) with weight
    w_o[T] = mean_{x in T} pi_o(x):
      mean[T]   = sum_o w_o[T] t_o[T]  ==  P(pixel mean)[T]                   (exact identity)
      var[T]    = sum_o w_o (t_o - m)^2 / sum_o w_o, m = sum_o w_o t_o / sum_o w_o
      median[T] = median of {t_o[T] : w_o[T] > 0}
    With back_fill='zeros', or on interior tokens, w_o = m_o / N and t_o = P(b_o): the token var is the variance
    over offsets of the pooled per-offset maps (NOT the pooled pixel variance, which also holds the
    within-cell spread). Each t_o is a weighted sum of f_o at its own token and its neighbours with area-overlap
    weights ((p-|dy|)(p-|dx|)/p^2, |dy|(p-|dx|)/p^2 and so on: Sec. 2, "bypassing the upsampling", the authors'
    `EnsembledExtractorFast`), which is exact only for |dy| < py and |dx| < px; the authors' code does not check
    this, srt raises a ValueError.

  Pixel path without full-resolution maps: inside a token cell, pixel phases i (= y mod p) fall into classes that
  read the same neighbour token of every back-shifted map; for shifts in [-d, d] with 2d + 1 <= p there are
  2d + 1 classes per axis instead of p. Every pixel statistic is computed on [class_y, class_x, B, h, w, C']
  (exactly, border masks included) and expanded to [B, H, W, C'] once at the end (49 instead of 256 values per
  token and channel for ViT-S/16 at d=3).

  Compute and memory: repeated offsets run once, weighted by their multiplicity (except for the median, which
  keeps every sample). Offsets are processed in chunks (see `plan_chunks`); every chunk is ONE batched forward
  of chunk * B images, chunks run in a `lax.scan`, and only running statistics are carried (a running weighted
  sum for the mean; the weighted merge of Chan, Golub & LeVeque (1979) of (weight, mean, M2) for the variance),
  so peak memory does not grow with the number of offsets. The authors' code also streams chunks (of 32 images)
  with a running sum. The median stores every sample: N * B * h * w * C' floats (token) or
  N * n_cls_y * n_cls_x * B * h * w * C' floats (pixel), e.g. 15 MB (token) and 0.72 GB (pixel) per image for
  49 offsets of ViT-S/16 at 224^2. `python -m eval.bench.srt --memory-sweep` prints the compiled peak memory.

  Strides: an `apply_fn` that knows its stride declares it as an attribute `stride` (an int, or a (py, px) pair;
  every srjax feature extractor does, see `srjax.models`), and srt checks the image against it and the feature
  map against H/py x W/px. An image the model would crop (a side that is not a multiple of the stride, e.g.
  30x32 for a patch-16 ViT) is a ValueError unless `pad_mode` names a fill. Without a declared stride the stride
  is inferred as H/h, W/w and verified on a second, abstract (`jax.eval_shape`) input of (py+1) times the size,
  which a model that crops or pads its input fails.

  Compilation: one `jax.jit` with `apply_fn`, the offsets and all options static, so there is one compile per
  (apply_fn, options, input shapes). `apply_fn` must be hashable, and equal-but-distinct objects should compare
  equal to share the cache: a module-level function, or `srjax.models.vit.features(...)` (any
  `srjax.models.apply_fn.ModuleApply`); a fresh lambda or closure per call recompiles every call.

  Args:
    apply_fn: `apply_fn(params, x [n, H, W, C]) -> [n, h, w, C']`, a hashable feature extractor (static under
      jit), optionally with a `stride` attribute (see Strides above).
    params: pytree passed through to apply_fn.
    img: [H, W, C] or [B, H, W, C] float images, channels last, in the model's input space (already normalised;
      SRT shifts the normalised image, so the zero fill is the mean colour). A batch is processed as B
      independent images (the same offsets for each). Normalisation of the loaded models: a DINO or DINOv2 ViT
      (`srjax.models.pretrained.load`) expects ImageNet's (rgb - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
      with rgb in [0, 1]; a timm ViT the mean and std of its `pretrained_cfg` (0.5 and 0.5 for the augreg ViTs);
      EfficientNet-Lite0 `srjax.models.efficientnet.normalize`. (`srjax.attack` works in [0, 1] pixel space
      instead and normalises inside the model function.)
    d: perturbation level: the default offsets are the (2d+1)^2 grid in [-d, d]^2 (`offsets_grid(d)`). Ignored
      when `offsets` is given. The paper finds d=3 best for ViT-S/16 and ViT-B/16 (Fig. 3).
    offsets: explicit (dy, dx) integer pairs instead of the grid, e.g. `offsets_grid(d, reference=True)`, the
      authors' grid with the identity counted twice. Repeats count with their multiplicity.
    padding: input fill for shifted-in pixels: 'zeros' (the authors'), 'edge' or 'reflect' (see `shift`).
    output: 'token' ([.., h, w, C'], needs every |dy| < py and |dx| < px) or 'pixel' ([.., H, W, C'], the
      nearest-upsampled back-shifted maps aggregated at full resolution).
    aggregate: 'mean' (Algorithm 1), 'var' (Fig. 4; per channel, population variance), 'mean_var' (both in one
      pass) or 'median' (keeps every sample).
    back_fill: 'exclude' (default: average each pixel over the offsets that cover it) or 'zeros' (the authors':
      back-shift zero fill counts, divide by the number of offsets).
    chunk_size: largest number of offsets per forward pass (batch = chunk * B images); None means
      max(1, IMAGES_PER_FORWARD // B). See `plan_chunks`. The result does not depend on it beyond rounding.
    pad_mode: None (default): an image whose sides are not multiples of the declared stride is a ValueError.
      'zeros', 'edge' or 'reflect': pad the bottom and right edges to the next multiple with that fill (in the
      model's input space) before SRT; the pixel output is cropped back to H x W, the token output has
      ceil(H/py) x ceil(W/px) tokens (the last row/column cover padded pixels).

  Returns:
    float32 array [B, h, w, C'] (token) or [B, H, W, C'] (pixel), without the batch axis if img was [H, W, C];
    a (mean, var) tuple for aggregate='mean_var'.

  Raises:
    ValueError / TypeError naming the argument: apply_fn a Flax module (pass a function such as
    `vit.features(model)`), img rank not 3 or 4, channels first ([C, H, W]), or non-float dtype, an image size that is
    not a multiple of the stride (without pad_mode), a feature map that is not [n, h, w, C'] or disagrees with
    the stride, d < 0, a non-integer offset, a shift >= p on the token path, chunk_size < 1, an unknown padding /
    output / aggregate / back_fill / pad_mode.

  References:
    Lao et al., Sec. 2 (Eq. 1-3, "bypassing the upsampling"), Algorithm 1, Fig. 4 (variance).
  """
  return prepare(apply_fn, params, img, d, offsets=offsets, padding=padding, output=output, aggregate=aggregate,
                 back_fill=back_fill, chunk_size=chunk_size, pad_mode=pad_mode)()


@dataclasses.dataclass(frozen=True)
class Prepared:
  """A validated `srt` call: `fn` is the jitted function, `args` / `kwargs` its arguments.

  `prepared()` runs it (the same as `srt(...)`), `prepared.lower()` lowers it (`.compile()` then gives compile
  time and `memory_analysis()`), and the compiled object is called as `compiled(*prepared.dynamic_args)`.
  """
  fn: Any
  args: tuple[Any, ...]
  kwargs: dict[str, Any]
  single: bool

  @property
  def dynamic_args(self) -> tuple[Any, Any]:
    """(params, batched image): what a compiled `prepared.lower().compile()` takes."""
    return self.args[1:]

  def lower(self):
    return self.fn.lower(*self.args, **self.kwargs)

  def unbatch(self, out: Any) -> Any:
    """Drops the batch axis the call added for a single [H, W, C] image."""
    return jax.tree.map(lambda a: a[0], out) if self.single else out

  def __call__(self) -> Any:
    return self.unbatch(self.fn(*self.args, **self.kwargs))


def prepare(apply_fn: Callable[[Any, jax.Array], jax.Array], params: Any, img: jax.Array, d: int = 3, *,
            offsets: Sequence[tuple[int, int]] | None = None, padding: str = 'zeros', output: str = 'token',
            aggregate: str = 'mean', back_fill: str = 'exclude', chunk_size: int | None = None,
            pad_mode: str | None = None) -> Prepared:
  """Validates the arguments of `srt` (same signature and errors) and returns the jitted call unevaluated.

  For benchmarks and tools that need the compiled function itself: `prepare(...).lower().compile()` gives the
  compile time and XLA's memory analysis, and `prepare(...)()` equals `srt(...)`.

  Args:
    apply_fn: see `srt`.
    params: see `srt`.
    img: see `srt`.
    d: see `srt`.
    offsets: see `srt`.
    padding: see `srt`.
    output: see `srt`.
    aggregate: see `srt`.
    back_fill: see `srt`.
    chunk_size: see `srt`.
    pad_mode: see `srt`.

  Returns:
    A `Prepared` call.
  """
  checks.one_of('padding', padding, PADDINGS)
  checks.one_of('output', output, OUTPUTS)
  checks.one_of('aggregate', aggregate, AGGREGATES)
  checks.one_of('back_fill', back_fill, BACK_FILLS)
  checks.one_of('pad_mode', pad_mode, (None,) + PADDINGS)
  d = _check_d(d)
  offs = offsets_grid(d) if offsets is None else _check_offsets(offsets, name='offsets')
  if not hasattr(img, 'ndim') or not hasattr(img, 'dtype'):
    img = np.asarray(img)
  checks.apply_fn('apply_fn', apply_fn, "a feature function (params, x [n, H, W, C]) -> [n, h, w, C']")
  checks.image_batch('img', img, single=True)
  if not jnp.issubdtype(img.dtype, jnp.floating):
    checks.fail('img', img.dtype, 'a float array (the normalised model input)', error=TypeError)
  single = img.ndim == 3
  batched = img[None] if single else img
  try:
    hash(apply_fn)
  except TypeError as e:
    raise TypeError(f'apply_fn: got {apply_fn!r}; accepted: a hashable callable (a static jit argument)') from e
  stride = declared_stride(apply_fn)
  if pad_mode is not None and stride is None:
    checks.fail('pad_mode', pad_mode, 'None unless apply_fn declares its stride (an attribute `stride`)')
  unique, mult = _merge_repeats(offs) if aggregate != 'median' else (offs, (1,) * len(offs))
  plan_chunks(len(unique), batched.shape[0], chunk_size)  # validates chunk_size
  return Prepared(_srt_jit, (apply_fn, params, batched),
                  dict(offsets=unique, multiplicity=mult, padding=padding, output=output, aggregate=aggregate,
                       back_fill=back_fill, chunk_size=chunk_size, stride=stride, pad_mode=pad_mode),
                  single)


def plan_chunks(n_offsets: int, n_images: int, chunk_size: int | None = None) -> tuple[int, int]:
  """How `srt` splits N offsets into equal chunks: returns (n_chunks, offsets per chunk).

  chunk_size None means max(1, IMAGES_PER_FORWARD // n_images). Among chunk sizes c in
  [ceil(chunk_size / 2), chunk_size] the plan takes the one with the fewest forwards ceil(N / c) * c (the last
  chunk is padded with zero-weight offsets, each of which still costs a forward), the largest such c on ties:
  49 offsets with chunk_size 8 -> 7 chunks of 7 (no padding), 9 offsets -> 2 chunks of 5 (one padded slot).
  `srt` counts repeated offsets once (the reference grid's 50 offsets are 49 distinct ones).

  Args:
    n_offsets: number of (distinct) offsets N >= 1.
    n_images: images per srt call B.
    chunk_size: the largest chunk, or None.

  Returns:
    (n_chunks, per_chunk) with n_chunks * per_chunk >= N.
  """
  if chunk_size is None:
    chunk_size = max(1, IMAGES_PER_FORWARD // max(n_images, 1))
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
    checks.fail('chunk_size', chunk_size, 'an int >= 1 or None', error=TypeError)
  checks.integer('chunk_size', int(chunk_size), 1)
  chunk_size = min(int(chunk_size), n_offsets)
  best = min(range((chunk_size + 1) // 2, chunk_size + 1), key=lambda c: (math.ceil(n_offsets / c) * c, -c))
  return math.ceil(n_offsets / best), best


def declared_stride(apply_fn: Any) -> tuple[int, int] | None:
  """The (py, px) stride an apply_fn declares as its attribute `stride` (an int or a pair), or None.

  Raises:
    TypeError: the attribute is neither a positive int nor a pair of them.
  """
  stride = getattr(apply_fn, 'stride', None)
  if stride is None:
    return None
  pair = (stride, stride) if isinstance(stride, (int, np.integer)) else tuple(stride)
  if len(pair) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in pair):
    checks.fail('apply_fn.stride', stride, 'a positive int or a (py, px) pair of them', error=TypeError)
  return int(pair[0]), int(pair[1])


# ----------------------------------------------------------------------------------------------------------
# Argument checks.


def _check_d(d: Any) -> int:
  return int(checks.integer('d', d, 0))


def _check_offsets(offsets: Any, name: str) -> Offsets:
  """Validates a list of (dy, dx) integer pairs and returns it as a hashable tuple of int pairs."""
  if isinstance(offsets, (str, bytes)):
    checks.fail(name, offsets, 'a sequence of (dy, dx) integer pairs', error=TypeError)
  try:
    arr = np.asarray(offsets)
  except (ValueError, TypeError) as e:  # ragged input
    raise ValueError(f'{name}: got {offsets!r}; accepted: a sequence of (dy, dx) pairs, shape [N, 2]') from e
  if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
    checks.fail(name, arr, 'a non-empty sequence of (dy, dx) pairs, shape [N, 2]')
  out = []
  for pair in arr.tolist():
    ints = []
    for v in pair:
      if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        checks.fail(name, tuple(pair), 'integer pixel shifts', error=TypeError)
      if isinstance(v, (float, np.floating)) and not float(v).is_integer():
        checks.fail(name, tuple(pair), 'integer pixel shifts (SRT samples whole-pixel translations)')
      ints.append(int(v))
    out.append((ints[0], ints[1]))
  return tuple(out)


def _merge_repeats(offsets: Offsets) -> tuple[Offsets, tuple[int, ...]]:
  """Distinct offsets in first-seen order and their multiplicities."""
  counts: dict[tuple[int, int], int] = {}
  for o in offsets:
    counts[o] = counts.get(o, 0) + 1
  return tuple(counts), tuple(counts.values())


# ----------------------------------------------------------------------------------------------------------
# Building blocks (traced).


def _shift_batch(img: jax.Array, offsets: jax.Array, pad: int, padding: str) -> jax.Array:
  """img [B, H, W, C], traced per-image offsets [B, 2] with |dy|, |dx| <= pad: out[b, y, x] = img[b, y-dy, x-dx]."""
  _, h, w, c = img.shape
  padded = jnp.pad(img, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=_NP_PAD_MODE[padding])

  def one(image, o):
    return lax.dynamic_slice(image, (pad - o[0], pad - o[1], 0), (h, w, c))
  return jax.vmap(one)(padded, offsets)


def _phase_classes(shifts: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
  """Groups the pixel phases i in [0, p) of a token by which neighbour (i + s) // p every shift s reads.

  Pixels of the same class see the same token of every back-shifted map, so any per-pixel statistic over
  offsets is a function of (token, class) only. For shifts in [-d, d] with 2d + 1 <= p there are 2d + 1
  classes (d phases at each edge of the cell, one for the middle) instead of p phases.

  Returns:
    (reps [n_classes] a representative phase of each class, cls [p] the class of each phase).
  """
  table = np.floor_divide(np.arange(stride)[:, None] + np.unique(shifts)[None, :], stride)  # [p, S]
  _, reps, cls = np.unique(table, axis=0, return_index=True, return_inverse=True)
  return reps.astype(np.int32), np.asarray(cls).reshape(-1).astype(np.int32)


def _neighbour_range(shift_max: int, stride: int) -> tuple[int, int]:
  """Token-row offsets k = (i + s) // p reached for i in [0, p), |s| <= shift_max: returns (kmin, kmax)."""
  return (-shift_max) // stride, (stride - 1 + shift_max) // stride


def _one_hot_rows(s: jax.Array, stride: int, kmin: int, nk: int) -> jax.Array:
  """[p, nk] matrix E[i, r] = 1 if (i + s) // p == kmin + r (which neighbour token pixel row i reads)."""
  k = jnp.floor_divide(jnp.arange(stride) + s, stride) - kmin
  return (k[:, None] == jnp.arange(nk)[None, :]).astype(jnp.float32)


def _neighbours(feat: jax.Array, ky: tuple[int, int], kx: tuple[int, int]) -> list[list[jax.Array]]:
  """feat [..., h, w, C] -> nested list N[r][q] = feat shifted so N[r][q][T] = feat[T + (ky0 + r, kx0 + q)]."""
  h, w = feat.shape[-3], feat.shape[-2]
  lead = [(0, 0)] * (feat.ndim - 3)
  fp = jnp.pad(feat, lead + [(-ky[0], ky[1]), (-kx[0], kx[1]), (0, 0)])
  return [[fp[..., r:r + h, q:q + w, :] for q in range(kx[1] - kx[0] + 1)]
          for r in range(ky[1] - ky[0] + 1)]


def _chan_merge(state: tuple[jax.Array, jax.Array, jax.Array], x: jax.Array,
                w: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Merges weighted samples x [n, ...] (weights w broadcastable to x) into (weight, mean, M2).

  The batch statistics are computed two-pass (exact within the batch), then merged with the pairwise update of
  Chan, Golub & LeVeque (1979), so no large sums of squares are subtracted.
  """
  wa, ma, m2a = state
  wc = jnp.sum(w, axis=0)
  safe_wc = jnp.where(wc > 0, wc, 1.0)
  mc = jnp.sum(w * x, axis=0) / safe_wc
  m2c = jnp.sum(w * jnp.square(x - mc), axis=0)
  wt = wa + wc
  ratio = jnp.where(wt > 0, wc / jnp.where(wt > 0, wt, 1.0), 0.0)
  delta = mc - ma
  return wt, ma + delta * ratio, m2a + m2c + jnp.square(delta) * wa * ratio


# ----------------------------------------------------------------------------------------------------------
# Part 1: the static plan (geometry), NumPy only.


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
  """Everything about an SRT call that is fixed at trace time.

  Attributes:
    n_img: images B.
    height: (padded) image height H.
    width: (padded) image width W.
    chans: input channels.
    h: feature-map height.
    w: feature-map width.
    cf: feature channels C'.
    py: vertical stride H / h.
    px: horizontal stride W / w.
    offsets: [n_chunks, chunk, 2] int32 offsets (padded slots are (0, 0)).
    weights: [n_chunks, chunk] float32 multiplicities (0 for padded slots).
    n_total: N = sum of the multiplicities (the authors' divisor).
    pad: the largest |shift| (input padding width).
    ky: neighbour token-row range (kmin, kmax) read by back-shifted pixels.
    kx: the same for columns.
    reps_y: a representative pixel phase of each row class (see `_phase_classes`).
    cls_y: the row class of each of the py phases.
    reps_x: the same for columns.
    cls_x: the same for columns.
    inv_count: [cy, cx, 1, h, w, 1] 1 / count on (class, token) (0 where uncovered).
    inv_count_px: [H, W] the same per pixel.
    back_fill: 'exclude' or 'zeros'.
  """
  n_img: int
  height: int
  width: int
  chans: int
  h: int
  w: int
  cf: int
  py: int
  px: int
  offsets: np.ndarray
  weights: np.ndarray
  n_total: float
  pad: int
  ky: tuple[int, int]
  kx: tuple[int, int]
  reps_y: np.ndarray
  cls_y: np.ndarray
  reps_x: np.ndarray
  cls_x: np.ndarray
  inv_count: np.ndarray
  inv_count_px: np.ndarray
  back_fill: str

  @property
  def chunk(self) -> int:
    return self.offsets.shape[1]

  @property
  def nky(self) -> int:
    return self.ky[1] - self.ky[0] + 1

  @property
  def nkx(self) -> int:
    return self.kx[1] - self.kx[0] + 1


def make_plan(offsets: Offsets, multiplicity: Sequence[int], img_shape: tuple[int, int, int, int],
              feature_shape: tuple[int, int, int], stride: tuple[int, int], back_fill: str,
              chunk: int) -> Plan:
  """Builds the `Plan` for distinct `offsets` with `multiplicity`, chunks of `chunk` offsets."""
  n_img, height, width, chans = img_shape
  h, w, cf = feature_shape
  py, px = stride
  offs = np.asarray(offsets, dtype=np.int32)
  mult = np.asarray(multiplicity, dtype=np.float64)
  n_off = len(offs)
  n_chunks = math.ceil(n_off / chunk)
  n_pad = n_chunks * chunk - n_off
  all_offs = np.concatenate([offs, np.zeros((n_pad, 2), np.int32)]).reshape(n_chunks, chunk, 2)
  weights = np.concatenate([mult, np.zeros(n_pad)]).astype(np.float32).reshape(n_chunks, chunk)
  reps_y, cls_y = _phase_classes(offs[:, 0], py)
  reps_x, cls_x = _phase_classes(offs[:, 1], px)
  # Coverage: offset o covers pixel (ty, i) iff its neighbour token ty + (i + dy) // p lies in [0, h).
  ty, tx = np.arange(h), np.arange(w)
  cov_y = ty[None, None, :] + np.floor_divide(reps_y[None, :, None] + offs[:, :1, None], py)  # [N, cy, h]
  cov_x = tx[None, None, :] + np.floor_divide(reps_x[None, :, None] + offs[:, 1:, None], px)  # [N, cx, w]
  cov_y = ((cov_y >= 0) & (cov_y < h)).astype(np.float64)
  cov_x = ((cov_x >= 0) & (cov_x < w)).astype(np.float64)
  count = np.einsum('o,oyt,oxu->yxtu', mult, cov_y, cov_x)[:, :, None, :, :, None]  # [cy, cx, 1, h, w, 1]
  inv_count = np.where(count > 0, 1.0 / np.maximum(count, 1), 0.0).astype(np.float32)
  count_px = count[cls_y][:, cls_x][:, :, 0, :, :, 0].transpose(2, 0, 3, 1).reshape(height, width)
  inv_count_px = np.where(count_px > 0, 1.0 / np.maximum(count_px, 1), 0.0).astype(np.float32)
  return Plan(n_img=n_img, height=height, width=width, chans=chans, h=h, w=w, cf=cf, py=py, px=px,
              offsets=all_offs, weights=weights, n_total=float(mult.sum()), pad=int(np.abs(offs).max()),
              ky=_neighbour_range(int(np.abs(offs[:, 0]).max()), py),
              kx=_neighbour_range(int(np.abs(offs[:, 1]).max()), px),
              reps_y=reps_y, cls_y=cls_y, reps_x=reps_x, cls_x=cls_x, inv_count=inv_count,
              inv_count_px=inv_count_px, back_fill=back_fill)


# ----------------------------------------------------------------------------------------------------------
# Part 2: samplers. `chunk_inputs(f, offs, wts)` turns the features of one chunk [c, B, h, w, C'] into per-offset
# inputs (a pytree with leading axis c); `sample(inputs_o)` gives one offset's (x, weight) in the sampler's
# sample space; `shape` / `weight_shape` are that space's shapes; `expand` maps a statistic to the output.


@dataclasses.dataclass(frozen=True, eq=False)
class TokenSampler:
  """Token resolution: x = t_o [B, h, w, C'], weight = w_o [1, h, w, 1] (area-overlap weights)."""
  plan: Plan

  @property
  def shape(self) -> tuple[int, ...]:
    pl = self.plan
    return (pl.n_img, pl.h, pl.w, pl.cf)

  @property
  def weight_shape(self) -> tuple[int, ...]:
    return (1, self.plan.h, self.plan.w, 1)

  def chunk_inputs(self, f: jax.Array, offs: jax.Array, wts: jax.Array) -> tuple[jax.Array, jax.Array]:
    pl = self.plan
    ys, xs = np.arange(pl.height), np.arange(pl.width)
    inv_count_px = jnp.asarray(pl.inv_count_px)

    def area_weights(o, wt):
      if pl.back_fill == 'zeros':
        pi = jnp.full((pl.height, pl.width), wt / pl.n_total, jnp.float32)
      else:
        my = ((ys + o[0]) >= 0) & ((ys + o[0]) < pl.height)
        mx = ((xs + o[1]) >= 0) & ((xs + o[1]) < pl.width)
        pi = (my[:, None] & mx[None, :]).astype(jnp.float32) * inv_count_px * wt
      ey = _one_hot_rows(o[0], pl.py, pl.ky[0], pl.nky)
      ex = _one_hot_rows(o[1], pl.px, pl.kx[0], pl.nkx)
      return jnp.einsum('aibj,ir,jq->abrq', pi.reshape(pl.h, pl.py, pl.w, pl.px), ey, ex) / (pl.py * pl.px)
    a = jax.vmap(area_weights)(offs, wts)  # [c, h, w, nky, nkx]
    nb = _neighbours(f, pl.ky, pl.kx)
    s = sum(a[:, None, :, :, r, q, None] * nb[r][q] for r in range(pl.nky) for q in range(pl.nkx))
    wsum = a.sum(axis=(-2, -1))[:, None, :, :, None]  # [c, 1, h, w, 1]
    return s, wsum

  def sample(self, inputs_o: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    s, wsum = inputs_o
    return s / jnp.where(wsum > 0, wsum, 1.0), wsum

  def expand(self, z: jax.Array) -> jax.Array:
    return z


@dataclasses.dataclass(frozen=True, eq=False)
class PixelSampler:
  """Pixel resolution on (phase class, token): x = b_o [cy, cx, B, h, w, C'], weight = pi_o [cy, cx, 1, h, w, 1]."""
  plan: Plan

  @property
  def shape(self) -> tuple[int, ...]:
    pl = self.plan
    return (len(pl.reps_y), len(pl.reps_x), pl.n_img, pl.h, pl.w, pl.cf)

  @property
  def weight_shape(self) -> tuple[int, ...]:
    pl = self.plan
    return (len(pl.reps_y), len(pl.reps_x), 1, pl.h, pl.w, 1)

  def chunk_inputs(self, f: jax.Array, offs: jax.Array, wts: jax.Array):
    """[c, B, h, w, C'] -> the neighbour stack [c, nky, nkx, B, h, w, C'] (entry (r, q) = f at T + (ky0+r, kx0+q))."""
    nb = _neighbours(f, self.plan.ky, self.plan.kx)
    stack = jnp.stack([jnp.stack(row, axis=1) for row in nb], axis=1)
    return offs, wts, stack

  def _rows(self, o: jax.Array) -> tuple[jax.Array, jax.Array]:
    pl = self.plan
    return (jnp.floor_divide(jnp.asarray(pl.reps_y) + o[0], pl.py) - pl.ky[0],
            jnp.floor_divide(jnp.asarray(pl.reps_x) + o[1], pl.px) - pl.kx[0])

  def sample(self, inputs_o) -> tuple[jax.Array, jax.Array]:
    o, wt, stack_o = inputs_o
    pl = self.plan
    ry, rx = self._rows(o)
    x = stack_o[ry[:, None], rx[None, :]]  # zero where the offset does not cover the pixel
    if pl.back_fill == 'zeros':
      return x, jnp.full(self.weight_shape, 1.0 / pl.n_total, jnp.float32) * wt
    tok_y = jnp.arange(pl.h)[None, :] + ry[:, None] + pl.ky[0]  # [cy, h] neighbour token row read
    tok_x = jnp.arange(pl.w)[None, :] + rx[:, None] + pl.kx[0]  # [cx, w]
    my, mx = (tok_y >= 0) & (tok_y < pl.h), (tok_x >= 0) & (tok_x < pl.w)
    cov = (my[:, None, :, None] & mx[None, :, None, :]).astype(jnp.float32)  # [cy, cx, h, w]
    return x, cov[:, :, None, :, :, None] * jnp.asarray(pl.inv_count) * wt

  def expand(self, z: jax.Array) -> jax.Array:
    """[cy, cx, B, h, w, C'] -> [B, H, W, C'] (every pixel takes its class's value)."""
    pl = self.plan
    z = jnp.transpose(z, (2, 3, 0, 4, 1, 5))  # [B, h, cy, w, cx, C']
    z = jnp.take(jnp.take(z, jnp.asarray(pl.cls_y), axis=2), jnp.asarray(pl.cls_x), axis=4)
    return z.reshape(pl.n_img, pl.height, pl.width, pl.cf)


# ----------------------------------------------------------------------------------------------------------
# Part 3: aggregators: init(sampler, n_slots) -> state; update(state, x, weight) -> state (one offset);
# finalize(state) -> a statistic in sample space (or a tuple of them).


class MeanAggregator:
  """sum_o weight_o x_o (the weights are normalised per pixel / token, so this is the weighted mean)."""

  @staticmethod
  def init(sampler, n_slots: int):
    del n_slots
    return jnp.zeros(sampler.shape, jnp.float32)

  @staticmethod
  def update(state, x, weight):
    return state + weight * x

  @staticmethod
  def finalize(state):
    return state


class VarAggregator:
  """Weighted (weight, mean, M2) merged one offset at a time (Chan et al.); finalize -> var or (mean, var)."""

  def __init__(self, with_mean: bool):
    self.with_mean = with_mean

  @staticmethod
  def init(sampler, n_slots: int):
    del n_slots
    zeros = jnp.zeros(sampler.shape, jnp.float32)
    return jnp.zeros(sampler.weight_shape, jnp.float32), zeros, zeros

  @staticmethod
  def update(state, x, weight):
    return _chan_merge(state, x[None], weight[None])

  def finalize(self, state):
    wt, m, m2 = state
    var = jnp.where(wt > 0, m2 / jnp.where(wt > 0, wt, 1.0), 0.0)
    # mean = sum_o w_o x_o (the 'mean' output); the merged mean is that divided by sum_o w_o.
    return (m * wt, var) if self.with_mean else var


class MedianAggregator:
  """Keeps every sample ([n_slots, ...], NaN where the weight is 0); finalize -> nanmedian (0 if none)."""

  @staticmethod
  def init(sampler, n_slots: int):
    return jnp.zeros((n_slots,) + sampler.shape, jnp.float32), jnp.int32(0)

  @staticmethod
  def update(state, x, weight):
    buf, i = state
    return buf.at[i].set(jnp.where(weight > 0, x, jnp.nan)), i + 1

  @staticmethod
  def finalize(state):
    med = jnp.nanmedian(state[0], axis=0)
    return jnp.where(jnp.isnan(med), 0.0, med)


def _aggregator(aggregate: str):
  return {'mean': MeanAggregator(), 'var': VarAggregator(False), 'mean_var': VarAggregator(True),
          'median': MedianAggregator()}[aggregate]


# ----------------------------------------------------------------------------------------------------------
# The compiled computation.


def _feature_geometry(apply_fn, params, img_shape, dtype, batch: int, stride):
  """(h, w, C', py, px) of apply_fn on [batch, H, W, C] images, checked against the declared stride."""
  _, height, width, chans = img_shape
  fshape = jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((batch, height, width, chans), dtype))
  if not isinstance(fshape, jax.ShapeDtypeStruct) or len(fshape.shape) != 4 or fshape.shape[0] != batch:
    checks.fail('apply_fn', apply_fn, f'a map from [n, H, W, C] to one feature map [n, h, w, C\']; for input '
                f'{(batch, height, width, chans)} it returned {jax.tree.map(lambda s: s.shape, fshape)}')
  _, h, w, cf = fshape.shape
  if stride is not None:
    py, px = stride
    if (h, w) != (height // py, width // px):
      checks.fail('apply_fn', apply_fn, f'a feature map of {height // py}x{width // px} tokens for a '
                  f'{height}x{width} image at its declared stride {stride}; it returned {h}x{w}')
    return h, w, cf, py, px
  if h < 1 or w < 1 or height % h or width % w:
    checks.fail('img', (height, width), f'a size that is a multiple of the feature map size {h}x{w} returned '
                'by apply_fn (the stride p = H/h must divide H and W exactly); resize the image, or declare the '
                'stride on apply_fn (attribute `stride`) and pass pad_mode')
  py, px = height // h, width // w
  k = max(py, px) + 1  # a cropping / padding model fails this probe (floor(k H / s) != k h when H % s != 0)
  try:
    probe = jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((1, k * height, k * width, chans), dtype))
  except Exception:  # pylint: disable=broad-except  # the model accepts only its own size: nothing to verify
    probe = None
  if probe is not None and getattr(probe, 'shape', None) is not None and tuple(probe.shape[1:3]) != (k * h, k * w):
    checks.fail('img', (height, width), f'a multiple of the model\'s stride: apply_fn maps {height}x{width} to '
                f'{h}x{w} tokens but {k * height}x{k * width} to {tuple(probe.shape[1:3])}, so it crops or pads '
                'its input and the stride is not H/h. Resize the image to a multiple of the stride, or declare '
                'the stride on apply_fn (attribute `stride`) and pass pad_mode')
  return h, w, cf, py, px


def _srt_impl(apply_fn: Callable, params: Any, img: jax.Array, *, offsets: Offsets, multiplicity: tuple[int, ...],
              padding: str, output: str, aggregate: str, back_fill: str, chunk_size: int | None,
              stride: tuple[int, int] | None, pad_mode: str | None):
  n_img, height0, width0, _ = img.shape
  if stride is not None:
    py, px = stride
    if height0 % py or width0 % px:
      if pad_mode is None:
        checks.fail('img', (height0, width0), f'a size that is a multiple of the stride {stride} of apply_fn '
                    f'(the model would crop it): resize the image, or pass pad_mode=\'zeros\', \'edge\' or '
                    f'\'reflect\' to pad the bottom and right edges')
      img = jnp.pad(img, ((0, 0), (0, -height0 % py), (0, -width0 % px), (0, 0)), mode=_NP_PAD_MODE[pad_mode])
  n_chunks, per_chunk = plan_chunks(len(offsets), n_img, chunk_size)
  batch = per_chunk * n_img
  h, w, cf, py, px = _feature_geometry(apply_fn, params, img.shape, img.dtype, batch, stride)
  if output == 'token':
    bad = [o for o in offsets if abs(o[0]) >= py or abs(o[1]) >= px]
    if bad:
      checks.fail('offsets', bad[:4], f"shifts with |dy| < {py} and |dx| < {px} (the feature stride) for "
                  f"output='token' (lower d, or use output='pixel')")
  plan = make_plan(offsets, multiplicity, img.shape, (h, w, cf), (py, px), back_fill, per_chunk)
  sampler = TokenSampler(plan) if output == 'token' else PixelSampler(plan)
  agg = _aggregator(aggregate)
  pad = plan.pad
  padded_img = jnp.pad(img, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=_NP_PAD_MODE[padding])

  def forward(chunk_offs: jax.Array) -> jax.Array:
    """[c, 2] offsets -> features [c, B, h, w, C'] float32 of the shifted images, one batched forward."""
    def one(o):
      return lax.dynamic_slice(padded_img, (0, pad - o[0], pad - o[1], 0), img.shape)
    x = jax.vmap(one)(chunk_offs).reshape((batch,) + img.shape[1:])
    return apply_fn(params, x).reshape(per_chunk, n_img, h, w, cf).astype(jnp.float32)

  def per_offset(state, inputs_o):
    x, weight = sampler.sample(inputs_o)
    return agg.update(state, x, weight), None

  def per_chunk_step(state, xs_c):
    chunk_offs, chunk_wts = xs_c
    inputs = sampler.chunk_inputs(forward(chunk_offs), chunk_offs, chunk_wts)
    return lax.scan(per_offset, state, inputs)[0], None

  state = agg.init(sampler, n_chunks * per_chunk)
  state, _ = lax.scan(per_chunk_step, state, (jnp.asarray(plan.offsets), jnp.asarray(plan.weights)))
  out = jax.tree.map(sampler.expand, agg.finalize(state))
  if output == 'pixel' and (plan.height, plan.width) != (height0, width0):
    out = jax.tree.map(lambda a: a[:, :height0, :width0], out)
  return out


_srt_jit = jax.jit(_srt_impl, static_argnames=('apply_fn', 'offsets', 'multiplicity', 'padding', 'output',
                                               'aggregate', 'back_fill', 'chunk_size', 'stride', 'pad_mode'))


def cache_size() -> int:
  """Number of compiled variants of the SRT computation held by jit's cache (for tests of cache reuse)."""
  return _srt_jit._cache_size()  # pylint: disable=protected-access
