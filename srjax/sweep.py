"""Stochastic-resonance sweeps for any classifier: accuracy over (contrast x noise level x draw) in one compiled call.

The experiment of arXiv 2502.14442 (Sec. 2-3): lower the contrast of the test images by a factor t, add
non-negative noise of level s, and measure the accuracy of a classifier trained on clean images. With a
"no-signal" class the accuracy against s is bell-shaped for sub-threshold contrasts (stochastic resonance).

    curves = srjax.sweep.sr_curves(apply_fn, variables, images, labels, contrasts=(1., .4, .2), levels=(0., .05, .1),
                                   noise='uniform', draws=5, key=jax.random.key(0))
    srjax.sweep.summarize(curves).optimal_level       # [C] the noise level of each contrast's peak

The input for contrast t, level s, image i and draw d is

    clip(x_i * t + s * u_{i,d}, 0, 1)

where u_{i,d} is a standard draw: U(0, 1) for 'uniform' (so the noise is U(0, s)), the positive part of N(0, 1) for
'rectified_gaussian' (relu(N(0, s^2))), N(0, 1) for 'gaussian'. The same u_{i,d} is scaled to every level and reused
for every contrast (common random numbers: the curves' differences between levels are not sampling noise), and it
is drawn from its own key, `jax.random.fold_in(jax.random.fold_in(key, d), i)` with i the image's index in `x`,
with `jax.random.uniform` / `jax.random.normal` of the example's shape. So the result does not depend on the chunk
size or on the number of devices.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from srjax import checks
from srjax import stats
from srjax.data.batches import pad_rows

NOISES = ('uniform', 'rectified_gaussian', 'gaussian')

# Forward examples per scan step (chunk x levels x draws) that the default chunk size aims at.
_DEFAULT_STEP_EXAMPLES = 4096


def standard_noise(key: jax.Array, shape: tuple[int, ...], noise: str) -> jax.Array:
  """The standard draw that `sr_curves` scales by the noise level.

  Args:
    key: a JAX PRNG key.
    shape: the shape of the draw.
    noise: 'uniform' (U(0, 1)), 'rectified_gaussian' (max(N(0, 1), 0)) or 'gaussian' (N(0, 1)).

  Returns:
    float32 array of `shape`; `level * standard_noise(...)` has the sweep's noise distribution at `level`.

  Raises:
    ValueError: unknown `noise`.

  References:
    arXiv 2502.14442, Sec. 2 (uniform and Gaussian test-time noise); the authors' notebook clips the Gaussian at
    zero (relu(N(0, level))) before adding it.
  """
  checks.one_of('noise', noise, NOISES)
  if noise == 'uniform':
    return jax.random.uniform(key, shape, jnp.float32)
  draw = jax.random.normal(key, shape, jnp.float32)
  return jax.nn.relu(draw) if noise == 'rectified_gaussian' else draw


def perturb(x: jax.Array, u: jax.Array, contrast: jax.Array | float, level: jax.Array | float) -> jax.Array:
  """The low-contrast noisy input clip(x * contrast + level * u, 0, 1) (arXiv 2502.14442, Sec. 2).

  Args:
    x: images (any shape) in [0, 1].
    u: a standard draw (`standard_noise`), broadcastable against `x`.
    contrast: the contrast (the paper's "thresholding factor") t in [0, 1].
    level: the noise level s in [0, 1].

  Returns:
    float32 array of the broadcast shape, in [0, 1].
  """
  return jnp.clip(x * contrast + level * u, 0.0, 1.0)


class SRCurves(NamedTuple):
  """Accuracy of a classifier over contrasts, noise levels and draws.

  Attributes:
    accuracy: [C, L, D] float32, accuracy for contrast c, level l, draw d.
    mean: [C, L] float32, mean over draws.
    std: [C, L] float32, standard deviation over draws (ddof=0, so 0 for one draw).
    contrasts: [C] float32, the contrasts t.
    levels: [L] float32, the noise levels s.
    correct: [C, L, D, N] bool, whether image n was classified correctly (None in curves built by hand; the
      bell test of `summarize` needs it).
  """
  accuracy: np.ndarray
  mean: np.ndarray
  std: np.ndarray
  contrasts: np.ndarray
  levels: np.ndarray
  correct: np.ndarray | None = None


class SRSummary(NamedTuple):
  """Per-contrast summary of `SRCurves` (all arrays [C]).

  Attributes:
    contrasts: float32, the contrasts.
    optimal_level: float32, the level with the highest mean accuracy (the first, on ties).
    peak_accuracy: float32, the mean accuracy there.
    zero_noise_accuracy: float32, the mean accuracy at level 0.
    gain: float32, peak_accuracy - zero_noise_accuracy (>= 0; in-sample, so biased upward: the peak is the best
      of L levels measured on the same images).
    spread: float32, max(std over draws at the peak, std over draws at level 0) (descriptive only).
    held_out_gain: float32, the held-out gain: the level is chosen on a random half of the images, and its
      accuracy minus the accuracy at level 0 measured on the other half (unbiased under a flat curve).
    gain_low: float32, its one-sided 95% lower confidence bound (bootstrap over images).
    p_value: float32, the one-sided p-value of held_out_gain > 0.
    bell: bool, gain_low > 0: noise helps, beyond the selection of the peak and the test set's sampling error.
  """
  contrasts: np.ndarray
  optimal_level: np.ndarray
  peak_accuracy: np.ndarray
  zero_noise_accuracy: np.ndarray
  gain: np.ndarray
  spread: np.ndarray
  held_out_gain: np.ndarray
  gain_low: np.ndarray
  p_value: np.ndarray
  bell: np.ndarray


def held_out_gains(correct: Any, zero: int, seed: int = 0) -> np.ndarray:
  """Per-image held-out gains [C, N - N // 2] from correctness [C, L, D, N]: choose on one half, test on the other.

  A random half of the images (`np.random.default_rng(seed).permutation(N)[: N // 2]`, the same for every
  contrast) chooses the optimal level: the argmax (first on ties) of its mean accuracy. Each of the other images
  then scores its correctness (mean over draws) at that level minus its correctness at level index `zero`. The
  test images played no part in the choice, so under a curve flat in truth these gains are independent with
  mean 0. (Cross-fitting both ways would use every image, but the two halves' gains are then positively
  correlated through each other's choices and a bootstrap over images is too narrow: 7.6% false bells instead
  of 5% in the flat simulation.)

  Returns:
    [C, N - N // 2] float64 gains of the held-out images, in their original order.
  """
  per_image = np.asarray(correct, np.float64).mean(2)                     # [C, L, N]
  n = per_image.shape[-1]
  choose = np.zeros(n, bool)
  choose[np.random.default_rng(seed).permutation(n)[: n // 2]] = True
  pick = np.argmax(per_image[..., choose].mean(-1), axis=1)                # [C]
  held = per_image[..., ~choose]                                           # [C, L, N - N // 2]
  return held[np.arange(held.shape[0]), pick] - held[:, zero]


def _vector(name: str, values: Any) -> np.ndarray:
  arr = np.asarray(values, np.float32)
  if arr.ndim != 1 or arr.size == 0:
    checks.fail(name, values, 'a non-empty 1-D sequence of numbers in [0, 1]')
  checks.all_in_range(name, arr, 0.0, 1.0)
  return arr


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over every device of every process, axis 'data' (the sweeps', the training loop's and the evals').

  The axis is `Auto`: XLA propagates shardings inside the step, so model code written for one device (a class
  token concatenated to batch-sharded patches, SRT's shifted copies) runs unchanged. With JAX's newer default,
  `Explicit` axes, such code raises ShardingTypeError unless every op spells out its sharding.
  """
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def chunk_dataset(x: np.ndarray, y: np.ndarray, chunk_size: int, mesh: jax.sharding.Mesh
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Pads (x, y) to whole chunks and puts them on the mesh, images of each chunk split over 'data'.

  Args:
    x: [N, ...] float32 images.
    y: [N] int labels.
    chunk_size: images per chunk B, a multiple of the mesh size.
    mesh: the mesh of `make_mesh`.

  Returns:
    (xs [K, B, ...] float32, ys [K, B] int32 with -1 for padding, idx [K, B] int32 image indices), K = ceil(N / B).
  """
  n = x.shape[0]
  num_chunks = int(math.ceil(n / chunk_size))
  x_pad = pad_rows(np.asarray(x, np.float32), num_chunks * chunk_size)
  y_pad = pad_rows(np.asarray(y, np.int32), num_chunks * chunk_size, fill=-1)
  idx = np.arange(num_chunks * chunk_size, dtype=np.int32)
  data = NamedSharding(mesh, P(None, 'data'))
  return (jax.device_put(x_pad.reshape((num_chunks, chunk_size) + x.shape[1:]), data),
          jax.device_put(y_pad.reshape(num_chunks, chunk_size), data),
          jax.device_put(idx.reshape(num_chunks, chunk_size), data))


@functools.partial(jax.jit, static_argnames=('apply_fn', 'noise', 'draws', 'shared', 'repeats', 'mesh',
                                             'per_image'))
def correct_counts(apply_fn, params, xs, ys, idx, contrasts, levels, key, *, noise, draws, shared, repeats, mesh,
                   per_image=False):
  """The compiled core of `sr_curves`: correct-prediction counts over a chunked dataset.

  Args:
    apply_fn, params, key, noise, draws, repeats: as in `sr_curves`; shared: its `shared_noise`.
    xs, ys, idx: the chunked dataset of `chunk_dataset`.
    contrasts: [C] float32; levels: [L] float32.
    mesh: the mesh the chunks are on.
    per_image: also return each image's correctness.

  Returns:
    [C, L, D] int32 counts of correct predictions (divide by N for the accuracy); with per_image, also
    [K, C, L, D, B] bool correctness of each chunk's images (padding False).
  """
  example = xs.shape[2:] if repeats is None else (repeats,) + xs.shape[2:]
  draw_keys = jax.vmap(lambda d: jax.random.fold_in(key, d))(jnp.arange(draws))
  batch_sharding = NamedSharding(mesh, P('data'))
  noise_sharding = NamedSharding(mesh, P(None, 'data'))

  def draw_chunk(ic):
    if shared:
      patterns = jax.vmap(lambda k: standard_noise(k, example, noise))(draw_keys)   # [D, *example]
      return patterns[:, None]
    def one(k, i):
      return standard_noise(jax.random.fold_in(k, i), example, noise)
    u = jax.vmap(lambda k: jax.vmap(lambda i: one(k, i))(ic))(draw_keys)             # [D, B, *example]
    return jax.lax.with_sharding_constraint(u, noise_sharding)

  def body(total, chunk):
    xc, yc, ic = chunk
    xc = jax.lax.with_sharding_constraint(xc, batch_sharding)
    u = draw_chunk(ic)
    xe = xc if repeats is None else xc[:, None]

    def correct(t, s, ud):
      logits = apply_fn(params, perturb(xe, ud, t, s))
      return jnp.argmax(logits, axis=-1) == yc                            # padded labels are -1: never correct

    over_draws = jax.vmap(correct, in_axes=(None, None, 0))
    over_levels = jax.vmap(over_draws, in_axes=(None, 0, None))
    hits = jax.lax.map(lambda t: over_levels(t, levels, u), contrasts)        # [C, L, D, B]
    counts = jnp.sum(hits, axis=-1, dtype=jnp.int32)
    return total + counts, (hits if per_image else None)

  init = jnp.zeros((contrasts.shape[0], levels.shape[0], draws), jnp.int32)
  total, hits = jax.lax.scan(body, init, (xs, ys, idx))
  return (total, hits) if per_image else total


def default_chunk_size(num_levels: int, draws: int, num_devices: int = 1) -> int:
  """The chunk size `sr_curves` uses when none is given: about 4,096 forward examples per scan step
  (chunk x levels x draws), rounded up to a multiple of the device count."""
  chunk = max(1, _DEFAULT_STEP_EXAMPLES // max(1, num_levels * draws))
  return int(math.ceil(chunk / num_devices) * num_devices)


def sr_curves(apply_fn: Callable[[Any, jax.Array], jax.Array], params: Any, x: Any, y: Any, *,
              contrasts: Any, levels: Any, noise: str = 'uniform', draws: int = 1, key: jax.Array,
              shared_noise: bool = False, repeats: int | None = None, chunk_size: int | None = None) -> SRCurves:
  """Accuracy of `apply_fn` on low-contrast, noisy copies of (x, y), for every contrast, level and draw.

  One compiled call: a `lax.scan` over chunks of the dataset carries the correct counts; inside each chunk the
  standard draws are made once, then `lax.map` over contrasts and `vmap` over levels and draws run the
  classifier. Memory is bounded by the chunk (chunk x levels x draws examples at a time), whatever the size of
  the dataset. The last chunk is padded with label -1 (never counted). With several devices the images of each
  chunk are split over a 1-D mesh axis 'data' (Auto axis type) and the counts are summed across devices.

  Cost: one forward per (image, contrast, level, draw), as a Python loop over the grid would do, but each noise
  sample is drawn once per (image, draw) instead of once per grid point, and nothing syncs with the host until
  the end. `python -m eval.bench.sweep` prints the time against such a loop and against the plain forward.

  Args:
    apply_fn: (params, inputs) -> logits [B, K]; hashable (e.g. `srjax.models.apply_fn.ModuleApply`): it is a
      static argument of the compiled function. Inputs are [B, *x.shape[1:]], or [B, repeats, *x.shape[1:]]
      when `repeats` is set.
    params: the first argument of `apply_fn` (e.g. a Flax variables dict).
    x: [N, ...] float32 images in [0, 1].
    y: [N] integer labels in [0, K).
    contrasts: [C] contrasts t in [0, 1] (the paper's thresholding factors).
    levels: [L] noise levels s in [0, 1] (U(0, s), or the standard deviation of the Gaussian).
    noise: 'uniform', 'rectified_gaussian' or 'gaussian'.
    draws: number of independent noise draws D >= 1.
    key: PRNG key; the same key gives the same result.
    shared_noise: False (default): independent noise for every image and draw. True: one pattern per draw,
      shared by every image of the dataset, which reproduces the authors' notebook (it draws one noise tensor of
      shape (1, seq_len, 784) and adds it to the whole test set).
    repeats: None, or T >= 1: each image is presented T times, with independent noise at each presentation (the
      paper's repeated image for the LSTM: `apply_fn` gets [B, T, *x.shape[1:]]).
    chunk_size: images per scan step (rounded up to a multiple of the device count); None uses
      `default_chunk_size`. It changes speed and memory only, never the result.

  Returns:
    `SRCurves` with accuracy [C, L, D] (NumPy float32), its mean and std over draws, and each image's
    correctness `correct` [C, L, D, N] (bool; what `summarize`'s bell test resamples).

  Raises:
    TypeError: apply_fn is a Flax module (pass `model.apply` or a `ModuleApply`).
    ValueError: contrasts or levels outside [0, 1] or empty, x and y of mismatched lengths, draws < 1, an unknown
      noise, x outside [0, 1], negative labels, repeats or chunk_size < 1.
    TypeError: draws, repeats or chunk_size not integers.

  References:
    arXiv 2502.14442, Sec. 2 (test input clip(x * t + noise, 0, 1), contrasts and noise levels) and Sec. 3
    (accuracy against noise per contrast).
  """
  checks.apply_fn('apply_fn', apply_fn, 'a function (params, inputs) -> logits [B, K]')
  checks.one_of('noise', noise, NOISES)
  checks.integer('draws', draws, 1)
  if repeats is not None:
    checks.integer('repeats', repeats, 1)
  if chunk_size is not None:
    checks.integer('chunk_size', chunk_size, 1)
  contrasts_np, levels_np = _vector('contrasts', contrasts), _vector('levels', levels)
  x_np, y_np = np.asarray(x, np.float32), np.asarray(y)
  if x_np.ndim < 2 or x_np.shape[0] == 0:
    checks.fail('x', x_np, 'an [N, ...] array of images with N >= 1')
  if y_np.shape != x_np.shape[:1]:
    checks.fail('y', y_np, f'an [N] array of labels with N = {x_np.shape[0]} (the length of x)')
  if not np.issubdtype(y_np.dtype, np.integer):
    checks.fail('y', y_np, 'integer labels', error=TypeError)
  if (y_np < 0).any():
    checks.fail('y', int(y_np.min()), 'labels >= 0')
  checks.all_in_range('x', x_np, 0.0, 1.0)

  mesh = make_mesh()
  n = x_np.shape[0]
  devices = jax.device_count()
  chunk = chunk_size or default_chunk_size(levels_np.size, draws, devices)
  chunk = int(math.ceil(min(chunk, n) / devices) * devices)
  xs, ys, ids = chunk_dataset(x_np, y_np, chunk, mesh)
  counts, hits = correct_counts(apply_fn, params, xs, ys, ids, jnp.asarray(contrasts_np), jnp.asarray(levels_np),
                                key, noise=noise, draws=draws, shared=bool(shared_noise), repeats=repeats, mesh=mesh,
                                per_image=True)
  accuracy = np.asarray(jax.device_get(counts), np.float64) / n
  hits = np.moveaxis(np.asarray(jax.device_get(hits)), 0, -2)                   # [C, L, D, K, B]
  correct = hits.reshape(hits.shape[:3] + (-1,))[..., :n]
  return SRCurves(accuracy=accuracy.astype(np.float32), mean=accuracy.mean(-1).astype(np.float32),
                  std=accuracy.std(-1).astype(np.float32), contrasts=contrasts_np, levels=levels_np,
                  correct=correct)


def summarize(curves: SRCurves, *, resamples: int = stats.RESAMPLES, seed: int = 0) -> SRSummary:
  """Per contrast: the optimal noise level, the peak gain over zero noise, and whether the curve is bell-shaped.

  With m(s) the mean accuracy over draws and images at level s, s* = argmax_s m(s) (the first maximum) and
  gain = m(s*) - m(0). That gain is biased upward: s* is the best of L noisy levels measured on the same
  images. The bell test accounts for both the selection and the test set's sampling error: the level is chosen
  on a random half of the images and its gain over level 0 measured on the other half (`held_out_gains`). The
  curve is called bell-shaped when the one-sided 95% lower bound of that held-out gain is above 0:
  `srjax.stats.compare` of the per-image gains, a bootstrap over images (one seed; draws are averaged per
  image), at level 1 - 2 alpha.

  Calibration (tests/test_sweep.py): a curve flat in truth (n = 1,100 images, accuracy 0.5 at every one of 10
  levels, 2 draws) is called a bell in at most 5% of simulated sweeps; a bell whose best level is 7 points above
  zero noise (flanked by +3.5-point levels) is detected in >= 80% of them (6 points: 78%). Half the images
  choose the level, so the bell must be about sqrt(2) larger than a comparison of two fixed levels would need.

  Args:
    curves: the `SRCurves` of `sr_curves` (with its per-image `correct`).
    resamples: bootstrap replicates of the bell test.
    seed: NumPy seed of the split into halves and of the bootstrap.

  Returns:
    `SRSummary`, each field [C].

  Raises:
    ValueError: the levels do not include 0; curves without per-image correctness.

  References:
    arXiv 2502.14442, Sec. 3 (bell-shaped accuracy against noise; the optimal noise per contrast);
    Efron & Tibshirani (1993) (the bootstrap).
  """
  levels = np.asarray(curves.levels)
  zero = np.flatnonzero(levels == 0)
  if zero.size == 0:
    checks.fail('curves.levels', levels, 'levels that include 0 (the zero-noise reference)')
  if curves.correct is None:
    checks.fail('curves.correct', None, 'the per-image correctness [C, L, D, N] that sr_curves returns (the '
                                        'bell test resamples images)')
  zero = int(zero[0])
  correct = np.asarray(curves.correct)
  if correct.ndim != 4 or correct.shape[:2] != np.shape(curves.mean) or correct.shape[-1] < 2:
    checks.fail('curves.correct', correct, f'a [C, L, D, N] array with [C, L] = {np.shape(curves.mean)}, N >= 2')
  mean, std = np.asarray(curves.mean, np.float64), np.asarray(curves.std, np.float64)
  peak = np.argmax(mean, axis=1)
  rows = np.arange(mean.shape[0])
  gain = mean[rows, peak] - mean[:, zero]
  spread = np.maximum(std[rows, peak], std[:, zero])
  test = stats.compare(held_out_gains(correct, zero, seed)[:, None, :], level=1 - 2 * stats.ALPHA,
                       resamples=resamples, seed=seed)
  low = np.asarray(test.low).reshape(-1)
  effect = np.asarray(test.effect).reshape(-1)
  p_one = np.where(effect > 0, np.asarray(test.p_value).reshape(-1) / 2, 1 - np.asarray(test.p_value).reshape(-1) / 2)
  return SRSummary(contrasts=np.asarray(curves.contrasts, np.float32),
                   optimal_level=levels[peak].astype(np.float32),
                   peak_accuracy=mean[rows, peak].astype(np.float32),
                   zero_noise_accuracy=mean[:, zero].astype(np.float32),
                   gain=gain.astype(np.float32), spread=spread.astype(np.float32),
                   held_out_gain=effect.astype(np.float32), gain_low=low.astype(np.float32),
                   p_value=p_one.astype(np.float32), bell=low > 0)
