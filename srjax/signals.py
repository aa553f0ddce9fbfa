"""Test signals for threshold stochastic resonance: 1D benchmark signals and 2D test images.

The multiscale threshold-SR paper (arXiv 2510.20828, Sec. III-A) evaluates its detectors on

* a sine demo, `sin(x)` on `linspace(pi, 8 pi, 1024)` (Sec. III-A1, Table I, Fig. 5);
* a 2D demo image `sin(X) cos(Y)` of size 512^2 (Sec. III-A1, Table I, Fig. 6);
* six 1D benchmark signals of Antoniadis, Bigot & Sapatinas (2001), "Wavelet estimators in nonparametric
  regression: a comparative simulation study", J. Stat. Softw. 6(6): Wave, Doppler, Blip, Angles, Parabolas
  and Time-shifted sine, sampled at t = (1..n)/n (Sec. III-A2, Table II, Fig. 7);
* four images: Barbara, Cameraman, Mandrill and Peppers (Table II, Fig. 8).

Only Cameraman ships in an installed package, so the other three are replaced by named stand-ins taken from
scikit-image's bundled data (see `IMAGE_STANDINS`):

| paper image | stand-in | why |
|---|---|---|
| Barbara | `skimage.data.astronaut()` | a 512^2 portrait of a person with fine periodic texture (flag stripes, suit seams) |
| Mandrill | `skimage.data.chelsea()` | an animal face covered in fine, high-frequency fur texture |
| Peppers | `skimage.data.coffee()` | smooth, curved, shaded objects separated by strong edges |
| Cameraman | `pywt.data.camera()` | the same picture (scikit-image ships the same file) |

Dtypes: every function computes in float64 NumPy and returns a NumPy array of the requested `dtype`
(float32 by default, the JAX default). Nothing here uses randomness, reads files other than the images bundled
with PyWavelets/scikit-image, or keeps state.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from srjax import checks

__all__ = [
    'SIGNALS_1D', 'BENCHMARK_1D', 'IMAGES', 'IMAGE_STANDINS', 'sine', 'wave', 'doppler', 'blip', 'angles',
    'parabolas', 'time_shifted_sine', 'get', 'sinusoid_2d', 'image', 'unit_grid',
]

# Parabolas (Antoniadis et al. 2001): jump locations p_j and curvatures h_j.
_PARABOLA_P = np.array([.1, .2, .3, .35, .37, .41, .43, .5, .7, .9])
_PARABOLA_H = np.array([-30., 60., -30., 500., -1000., 1000., -500., 7.5, -15., 7.5])


def _check_n(n: int, name: str = 'n', minimum: int = 2) -> int:
  if isinstance(n, np.integer):
    n = int(n)
  return checks.integer(name, n, minimum)


def _check_dtype(dtype) -> np.dtype:
  dt = np.dtype(dtype)
  if dt not in (np.float32, np.float64):
    checks.fail('dtype', dt, 'float32 or float64')
  return dt


def unit_grid(n: int) -> np.ndarray:
  """The sampling grid t = (1, ..., n)/n of the benchmark signals (Antoniadis et al. 2001).

  Args:
    n: number of samples, >= 2.

  Returns:
    float64 array [n], t_i = i/n for i = 1..n (so t_n = 1 and t_1 = 1/n).
  """
  n = _check_n(n)
  return np.arange(1, n + 1, dtype=np.float64) / n


def sine(n: int = 1024, *, dtype=np.float32) -> np.ndarray:
  """The paper's 1D demo: sin(x) on x = linspace(pi, 8 pi, n) (Sec. III-A1, Table I, Fig. 5).

  Args:
    n: number of samples (the paper uses 1024).
    dtype: float32 (default) or float64.

  Returns:
    [n] array in [-1, 1].
  """
  n = _check_n(n)
  x = np.linspace(np.pi, 8 * np.pi, n)
  return np.sin(x).astype(_check_dtype(dtype))


def wave(n: int = 1024, *, dtype=np.float32) -> np.ndarray:
  """Wave: 0.5 + 0.2 cos(4 pi t) + 0.1 cos(24 pi t), t = (1..n)/n.

  Args:
    n: number of samples.
    dtype: float32 (default) or float64.

  Returns:
    [n] array.
  """
  t = unit_grid(n)
  return (0.5 + 0.2 * np.cos(4 * np.pi * t) + 0.1 * np.cos(24 * np.pi * t)).astype(_check_dtype(dtype))


def doppler(n: int = 1024, *, dtype=np.float32) -> np.ndarray:
  """Doppler (rescaled as in Antoniadis et al. 2001): 0.6 (sqrt(t(1-t)) sin(2 pi 1.05/(t+0.05)) + 0.5) + 0.2.

  Args:
    n: number of samples.
    dtype: float32 (default) or float64.

  Returns:
    [n] array.
  """
  t = unit_grid(n)
  core = np.sqrt(t * (1 - t)) * np.sin(2 * np.pi * 1.05 / (t + 0.05))
  return (0.6 * (core + 0.5) + 0.2).astype(_check_dtype(dtype))


def blip(n: int = 1024, *, dtype=np.float32) -> np.ndarray:
  """Blip: 0.32 + 0.6t + 0.3 exp(-100(t-0.3)^2) for t <= 0.8, and -0.28 + 0.6t + 0.3 exp(-100(t-1.3)^2) after.

  The signal jumps down by 0.6 (plus a negligible difference of Gaussian tails) at t = 0.8.

  Args:
    n: number of samples.
    dtype: float32 (default) or float64.

  Returns:
    [n] array.
  """
  t = unit_grid(n)
  left = 0.32 + 0.6 * t + 0.3 * np.exp(-100 * (t - 0.3) ** 2)
  right = -0.28 + 0.6 * t + 0.3 * np.exp(-100 * (t - 1.3) ** 2)
  return np.where(t <= 0.8, left, right).astype(_check_dtype(dtype))


def angles(n: int = 1024, *, dtype=np.float32) -> np.ndarray:
  """Angles: a continuous piecewise-linear signal with kinks at t = .15, .2, .5, .6, .65, .85.

  Pieces, in order: 2t+.5, -12(t-.15)+.8, .2, 6(t-.5)+.2, -10(t-.6)+.8, -.5(t-.65)+.3, 2(t-.85)+.2.
  Each interval is closed on the right (t <= break).

  Args:
    n: number of samples.
    dtype: float32 (default) or float64.

  Returns:
    [n] array.
  """
  t = unit_grid(n)
  conds = [t <= .15, t <= .2, t <= .5, t <= .6, t <= .65, t <= .85, t > .85]
  pieces = [2 * t + .5, -12 * (t - .15) + .8, np.full_like(t, .2), 6 * (t - .5) + .2, -10 * (t - .6) + .8,
            -.5 * (t - .65) + .3, 2 * (t - .85) + .2]
  return np.select(conds, pieces).astype(_check_dtype(dtype))


def parabolas(n: int = 1024, *, dtype=np.float32) -> np.ndarray:
  """Parabolas: 0.8 + sum_j h_j (t - p_j)^2 1{t > p_j}.

  p = [.1 .2 .3 .35 .37 .41 .43 .5 .7 .9], h = [-30 60 -30 500 -1000 1000 -500 7.5 -15 7.5].

  Args:
    n: number of samples.
    dtype: float32 (default) or float64.

  Returns:
    [n] array.
  """
  t = unit_grid(n)[:, None]
  terms = _PARABOLA_H * (t - _PARABOLA_P) ** 2 * (t > _PARABOLA_P)
  return (0.8 + terms.sum(axis=1)).astype(_check_dtype(dtype))


def time_shifted_sine(n: int = 1024, *, dtype=np.float32) -> np.ndarray:
  """Time-shifted sine: u = t, then u <- (1 - cos(pi u))/2 four times; 0.3 sin(3 pi (u + t)) + 0.5.

  Args:
    n: number of samples.
    dtype: float32 (default) or float64.

  Returns:
    [n] array.
  """
  t = unit_grid(n)
  u = t
  for _ in range(4):
    u = 0.5 * (1 - np.cos(np.pi * u))
  return (0.3 * np.sin(3 * np.pi * (u + t)) + 0.5).astype(_check_dtype(dtype))


SIGNALS_1D: dict[str, Callable[..., np.ndarray]] = {
    'sine': sine, 'wave': wave, 'doppler': doppler, 'time_shifted_sine': time_shifted_sine,
    'angles': angles, 'blip': blip, 'parabolas': parabolas,
}
# The six benchmark signals of Table II, in the paper's row order.
BENCHMARK_1D = ('wave', 'doppler', 'time_shifted_sine', 'angles', 'blip', 'parabolas')


def _norm_name(name: str, arg: str) -> str:
  if not isinstance(name, str):
    checks.fail(arg, name, 'a str', error=TypeError)
  return name.strip().lower().replace('-', '_').replace(' ', '_')


def get(name: str, n: int = 1024, *, dtype=np.float32) -> np.ndarray:
  """Returns the 1D signal `name` with `n` samples.

  Args:
    name: one of `SIGNALS_1D` ('sine', 'wave', 'doppler', 'time_shifted_sine', 'angles', 'blip',
      'parabolas'); case, hyphens and spaces are ignored ('Time-shifted sine' works).
    n: number of samples.
    dtype: float32 (default) or float64.

  Returns:
    [n] array.

  Raises:
    ValueError: unknown name (the message lists the accepted names), n < 2 or a non-float dtype.
  """
  key = _norm_name(name, 'name')
  if key not in SIGNALS_1D:
    checks.one_of('name', name, sorted(SIGNALS_1D))
  return SIGNALS_1D[key](n, dtype=dtype)


def sinusoid_2d(n: int = 512, *, start: float = np.pi, stop: float = 8 * np.pi, dtype=np.float32) -> np.ndarray:
  """The paper's 2D demo image sin(X) cos(Y) (Sec. III-A1, Table I, Fig. 6).

  The paper's text does not survive with its grid, so srjax uses the 1D demo's grid on both axes:
  X, Y = meshgrid(linspace(start, stop, n)) with start = pi, stop = 8 pi. X varies along columns (axis 1) and Y
  along rows (axis 0), as in MATLAB's meshgrid.

  Args:
    n: side length (the paper uses 512).
    start: first grid value on both axes.
    stop: last grid value on both axes.
    dtype: float32 (default) or float64.

  Returns:
    [n, n] array in [-1, 1].
  """
  n = _check_n(n)
  if not (np.isfinite(start) and np.isfinite(stop) and stop > start):
    checks.fail('start', start, f'a finite number below a finite stop (got stop={stop!r})')
  g = np.linspace(start, stop, n)
  x, y = np.meshgrid(g, g)
  return (np.sin(x) * np.cos(y)).astype(_check_dtype(dtype))


# Paper image name -> the bundled image srjax uses in its place (see the module docstring for the reasons).
IMAGE_STANDINS = {'barbara': 'astronaut', 'cameraman': 'camera', 'mandrill': 'chelsea', 'peppers': 'coffee'}


def _load(name: str) -> np.ndarray:
  if name in ('camera', 'ascent', 'aero'):
    import pywt.data  # pylint: disable=g-import-not-at-top
    return getattr(pywt.data, name)()
  import skimage.data  # pylint: disable=g-import-not-at-top
  return getattr(skimage.data, name)()


# Bundled images that `image` can load directly: three from PyWavelets (grayscale 512^2), three from scikit-image.
_BUNDLED = ('camera', 'ascent', 'aero', 'astronaut', 'chelsea', 'coffee')
IMAGES = tuple(IMAGE_STANDINS) + _BUNDLED


def image(name: str, size: int = 512, *, value_range: str = 'unit', dtype=np.float32) -> np.ndarray:
  """A grayscale test image, centre-cropped to a square and resized to `size` x `size`.

  Colour images are converted with `skimage.color.rgb2gray` (ITU-R 601 luma). Non-square images are cropped to
  the central square, then resized with `skimage.transform.resize` (bilinear, with anti-aliasing when shrinking).

  Args:
    name: a paper name ('barbara', 'cameraman', 'mandrill', 'peppers'; mapped through `IMAGE_STANDINS`) or a
      bundled name ('camera', 'ascent', 'aero', 'astronaut', 'chelsea', 'coffee'). Case is ignored.
    size: output side length, >= 8 (the paper uses 512; 256 is a cheaper choice).
    value_range: 'unit' scales to [0, 1] (pixel/255, the default, used by eval.multiscale); '255' keeps
      [0, 255].
    dtype: float32 (default) or float64.

  Returns:
    [size, size] array. A single image, not NHWC: add the batch and channel axes with `x[None, ..., None]`.

  Raises:
    ValueError: unknown name (listing the accepted names), size < 8 or an unknown value_range.
  """
  key = _norm_name(name, 'name')
  if key not in IMAGES:
    checks.one_of('name', name, IMAGES)
  size = _check_n(size, 'size', minimum=8)
  checks.one_of('value_range', value_range, ('unit', '255'))
  dt = _check_dtype(dtype)
  raw = _load(IMAGE_STANDINS.get(key, key))
  img = raw.astype(np.float64) / 255.0
  if img.ndim == 3:
    from skimage.color import rgb2gray  # pylint: disable=g-import-not-at-top
    img = rgb2gray(img[..., :3])
  h, w = img.shape
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  img = img[top:top + side, left:left + side]
  if side != size:
    from skimage.transform import resize  # pylint: disable=g-import-not-at-top
    img = resize(img, (size, size), order=1, mode='reflect', anti_aliasing=side > size)
  img = np.clip(img, 0.0, 1.0)
  if value_range == '255':
    img = img * 255.0
  return img.astype(dt)
