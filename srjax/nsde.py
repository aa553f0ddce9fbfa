"""ConvNeXt as a neural SDE (Liu et al. 2019, "Neural SDE"; the NSDE ConvNeXt of arXiv 2409.01532) on diffrax.

Each ConvNeXt stage s with blocks f_0..f_{d-1} becomes one SDE on [0, d],

  dx = f_{floor(t)}(x) dt + sigma * S dW_t,

solved by Euler-Maruyama at dt = 1: x_{k+1} = x_k + f_k(x_k) + sigma * S * (W_{k+1} - W_k). The drift f_k is the
residual branch of block k, gamma * MLP(LN(dwconv(x))), with untied weights (block k's own params), so with
sigma = 0 the solution is exactly the ConvNeXt with the same params. Stem, downsampling layers and head are the
ConvNeXt's. The noise is on in training and at test; `predict` averages the softmax over M draws (Liu et al.
2019, Sec. 3: "noise at test time" and averaged predictions; arXiv 2409.01532, Sec. 2: noise injected into the
residual connections during training).

Noise shapes S (`noise=`), always a lineax `DiagonalLinearOperator` of sigma * S acting on the Brownian increment:

  'brownian'     S = 1: independent Brownian motion per feature (Var x_T - x_0 = sigma^2 T with zero drift).
  'smoothed'     S = 1 on a spatially correlated Brownian motion: each increment is white noise blurred by a
                 separable Gaussian of std `smoothing` feature-map pixels (circular boundary), with the kernel
                 scaled to unit L2 norm so that every feature keeps variance dt; sigma means the same as for
                 'brownian'.
  'attribution'  S = a per-example map [B, H, W] (or [B, H, W, 1]) at input resolution, area-averaged to each
                 stage's resolution and broadcast over channels: more noise where the map is large. Build it
                 from integrated-gradients attributions with `srjax.attribution.noise_map` (Jha et al.'s attribution-shaped
                 noise); the library takes the map as an input and stays pure.

Brownian path (`path=`): 'folded' (default) draws the increment of step k from `fold_in(key, k)`, a valid
Brownian path on the integer grid that is cheap and differentiable under diffrax's `RecursiveCheckpointAdjoint`
(diffrax's `UnsafeBrownianPath` is not); 'tree' uses diffrax's `VirtualBrownianTree`. `solver='diffrax'` runs
`diffeqsolve(MultiTerm(ODETerm, ControlTerm), Euler(), dt0=1)`; `solver='scan'` is the same math as a plain
`lax.scan` (the benchmark's baseline, `scan_solve`). With the 'folded' path both give the same draws.

The drift is called through `Block.apply` with the stage's stacked block params passed in diffrax's `args` and
indexed by floor(t), never through bound submodules (a bound module inside the solver leaks tracers).

References:
  Liu, Xiao, Si, Cao, Kumar, Hsieh 2019, "Neural SDE: Stabilizing Neural ODE Networks with Stochastic Noise".
  Improving Robustness of Spectrogram Classifiers with Neural SDEs, arXiv 2409.01532, Sec. 2.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from srjax import checks
from srjax.models.convnext import Block, ConvNeXt

NOISES = ('brownian', 'smoothed', 'attribution')
SOLVERS = ('diffrax', 'scan')
PATHS = ('folded', 'tree')


def _blur(z: jax.Array, std: float) -> jax.Array:
  """Separable circular Gaussian blur over axes 1, 2 with a unit-L2-norm kernel (variance preserving)."""
  radius = max(1, int(math.ceil(3 * std)))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / std) ** 2)
  taps = taps / np.sqrt(np.sum(taps ** 2))
  for axis in (1, 2):
    n = z.shape[axis]
    folded = np.zeros(n)
    for offset, tap in zip(range(-radius, radius + 1), taps):  # taps, folded onto a circle of n pixels
      folded[offset % n] += tap
    folded /= np.sqrt(np.sum(folded ** 2))
    z = sum(float(tap) * jnp.roll(z, shift, axis=axis) for shift, tap in enumerate(folded) if tap)
  return z


class FoldedBrownian(diffrax.AbstractPath):
  """Brownian increments on the integer grid: W(k+1) - W(k) = N(0, 1) from fold_in(key, k), blurred when
  `smoothing > 0`. Only increments `evaluate(t0, t1)` with t0 on the grid are defined (what Euler at dt = 1
  asks); an increment over [t0, t1] has variance t1 - t0."""
  t0: float
  t1: float
  key: jax.Array
  shape: tuple[int, ...] = eqx.field(static=True)
  smoothing: float = eqx.field(static=True, default=0.0)

  def evaluate(self, t0, t1=None, left=True):
    del left
    if t1 is None:
      raise ValueError('FoldedBrownian defines increments only: call evaluate(t0, t1)')
    step = jnp.floor(t0 + 0.5).astype(jnp.int32)
    z = jax.random.normal(jax.random.fold_in(self.key, step), self.shape)
    if self.smoothing > 0:
      z = _blur(z, self.smoothing)
    return jnp.sqrt(t1 - t0) * z


class SmoothedTree(diffrax.AbstractPath):
  """A `VirtualBrownianTree` whose increments are blurred as in `FoldedBrownian` (when smoothing > 0)."""
  tree: diffrax.VirtualBrownianTree
  smoothing: float = eqx.field(static=True, default=0.0)

  @property
  def t0(self):
    return self.tree.t0

  @property
  def t1(self):
    return self.tree.t1

  def evaluate(self, t0, t1=None, left=True):
    z = self.tree.evaluate(t0, t1, left)
    return _blur(z, self.smoothing) if self.smoothing > 0 else z


def brownian_path(key: jax.Array, shape: tuple[int, ...], depth: int, *, path: str = 'folded',
                  smoothing: float = 0.0) -> diffrax.AbstractPath:
  """The Brownian control of one stage on [0, depth] ('folded' or diffrax's 'tree')."""
  checks.one_of('path', path, PATHS)
  if path == 'folded':
    return FoldedBrownian(0.0, float(depth), key, tuple(shape), float(smoothing))
  tree = diffrax.VirtualBrownianTree(0.0, float(depth), tol=1e-3, shape=jax.ShapeDtypeStruct(shape, jnp.float32),
                                     key=key)
  return SmoothedTree(tree, float(smoothing))


def _stage_shape(noise: str, noise_map: jax.Array | None, y: jax.Array) -> jax.Array:
  """S for a stage state y [B, h, w, C], broadcast to y's shape."""
  if noise != 'attribution':
    return jnp.ones_like(y)
  m = noise_map[..., 0] if noise_map.ndim == 4 else noise_map
  b, big_h, big_w = m.shape
  h, w = y.shape[1], y.shape[2]
  pooled = m.reshape(b, h, big_h // h, w, big_w // w).mean(axis=(2, 4))
  return jnp.broadcast_to(pooled[..., None], y.shape)


def _input_channels(params: Any) -> int | None:
  """C_in of the stem's patchify kernel [p, p, C_in, D], or None when params lack it (then x is checked without it)."""
  try:
    return int(params['stem']['conv']['kernel'].shape[2])
  except (KeyError, TypeError, AttributeError, IndexError):
    return None


def _stack(trees: list[Any]) -> Any:
  return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def _drift_fn(block: Block, rates: jax.Array, depth: int, train: bool):
  """f(t, y, args) with args = (stacked block params, drop-path key): block floor(t)'s residual branch."""
  def drift(t, y, args):
    stacked, key = args
    k = jnp.clip(jnp.floor(t).astype(jnp.int32), 0, depth - 1)
    params = jax.tree.map(lambda a: a[k], stacked)
    out = block.apply({'params': params}, y, method=Block.residual)
    if train:  # stochastic depth, per example, with block k's rate (a rate of 0 keeps every example)
      keep = 1.0 - rates[k]
      mask = jax.random.bernoulli(jax.random.fold_in(key, k), keep, (y.shape[0],) + (1,) * (y.ndim - 1))
      out = out * mask / keep
    return out
  return drift


def solve_stage(block: Block, stacked: Any, y0: jax.Array, key: jax.Array, *, sigma: float | jax.Array,
                shape: jax.Array, rates: jax.Array, smoothing: float = 0.0, path: str = 'folded',
                solver: str = 'diffrax', train: bool = False) -> jax.Array:
  """Euler-Maruyama at dt = 1 of one stage's SDE dx = f_{floor(t)}(x) dt + sigma S dW on [0, depth].

  Args:
    block: the stage's `Block` module (unbound; its own drop_path is ignored: `rates` holds each block's).
    stacked: the stage's block params stacked on a leading axis of size depth.
    y0: [B, h, w, C] stage input.
    key: PRNG key of this stage's Brownian path (and drop-path masks).
    sigma: noise scale (>= 0).
    shape: S, broadcastable to y0.
    rates: [depth] stochastic-depth rates.
    smoothing: spatial blur std of the increments (pixels; 0 = none).
    path: 'folded' or 'tree'.
    solver: 'diffrax' (Euler on MultiTerm(ODETerm, ControlTerm), RecursiveCheckpointAdjoint) or 'scan'.
    train: stochastic depth on.

  Returns:
    [B, h, w, C], the state at t = depth.
  """
  depth = int(jax.tree.leaves(stacked)[0].shape[0])
  noise_key, drop_key = jax.random.split(key)
  drift = _drift_fn(block, rates, depth, train)
  diag = sigma * jnp.broadcast_to(shape, y0.shape).astype(y0.dtype)
  control = brownian_path(noise_key, y0.shape, depth, path=path, smoothing=smoothing)
  args = (stacked, drop_key)
  if solver == 'scan':
    return scan_solve(drift, diag, control, y0, args, depth)
  terms = diffrax.MultiTerm(diffrax.ODETerm(drift),
                            diffrax.ControlTerm(lambda t, y, a: lx.DiagonalLinearOperator(diag), control))
  sol = diffrax.diffeqsolve(terms, diffrax.Euler(), 0.0, float(depth), 1.0, y0, args=args,
                            saveat=diffrax.SaveAt(t1=True), max_steps=depth,
                            adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=depth))
  return sol.ys[0]


def scan_solve(drift: Callable, diag: jax.Array, control: diffrax.AbstractPath, y0: jax.Array, args: Any,
               depth: int) -> jax.Array:
  """The same Euler-Maruyama as `solve_stage`'s diffrax path, as a plain `lax.scan` (the benchmark baseline):
  y_{k+1} = y_k + drift(k, y_k, args) + diag * control.evaluate(k, k + 1)."""
  def step(y, k):
    t = k.astype(jnp.float32)
    return y + drift(t, y, args) * 1.0 + diag * control.evaluate(t, t + 1.0), None
  return jax.lax.scan(step, y0, jnp.arange(depth))[0]


def check_options(*, sigma: Any = 0.0, noise: str = 'brownian', solver: str = 'diffrax', path: str = 'folded',
                  smoothing: float = 1.0) -> None:
  """Validates the NSDE options at the public boundary (a traced sigma is not range-checked).

  Raises:
    ValueError: unknown noise, solver or path name; sigma < 0; smoothing <= 0 with noise 'smoothed'.
  """
  checks.one_of('noise', noise, NOISES)
  checks.one_of('solver', solver, SOLVERS)
  checks.one_of('path', path, PATHS)
  if not isinstance(sigma, jax.core.Tracer):
    checks.in_range('sigma', float(np.asarray(sigma)), 0.0)
  if noise == 'smoothed':
    checks.in_range('smoothing', smoothing, 0.0, low_open=True)


def apply(model: ConvNeXt, variables: Any, x: jax.Array, key: jax.Array, *, sigma: float | jax.Array,
          noise: str = 'brownian', noise_map: jax.Array | None = None, smoothing: float = 1.0,
          solver: str = 'diffrax', path: str = 'folded', train: bool = False) -> jax.Array:
  """Logits of the NSDE ConvNeXt for one noise draw.

  Args:
    model: the `ConvNeXt` whose params `variables` holds (same tree: an NSDE and its ConvNeXt share params).
    variables: {'params': ...} from `model.init`.
    x: [B, H, W, C_in] float32 inputs, channels last (C_in the stem's input channels; a channels-first batch is
      a ValueError that says so).
    key: PRNG key of the draw (one Brownian path per stage, folded from it).
    sigma: diffusion scale, >= 0; 0 gives exactly `model.apply(variables, x)`.
    noise: 'brownian', 'smoothed' or 'attribution' (see the module docstring).
    noise_map: [B, H, W] or [B, H, W, 1] non-negative map at the input's size (B, H, W) = x.shape[:3], required
      for noise='attribution': `srjax.attribution.noise_map(attributions)` (without `size=`) of attributions of
      x. It is area-averaged to each stage's resolution here, so H and W must be divisible by each stage's.
    smoothing: blur std in feature-map pixels for noise='smoothed'.
    solver: 'diffrax' or 'scan' (same math).
    path: 'folded' or 'tree'.
    train: stochastic depth on (when the model has drop_path_rate > 0).

  Returns:
    [B, num_classes] float32 logits.

  Raises:
    ValueError: bad option names, sigma < 0, a missing or misshapen noise_map, x not [B, H, W, C_in], or
      sides that are not multiples of `model.input_multiple()`.

  References:
    Liu et al. 2019 (Neural SDE), Sec. 3; arXiv 2409.01532, Sec. 2.
  """
  check_options(sigma=sigma, noise=noise, solver=solver, path=path, smoothing=smoothing)
  p = variables['params']
  checks.image_batch('x', x, channels=_input_channels(p))
  model.check_input(x.shape)
  if noise == 'attribution':
    if noise_map is None:
      checks.fail('noise_map', None, "a [B, H, W] map for noise='attribution'")
    if noise_map.ndim not in (3, 4) or noise_map.shape[:3] != x.shape[:3]:
      checks.fail('noise_map', noise_map, f'a [B, H, W] or [B, H, W, 1] map at the input\'s size (B, H, W) = '
                  f'{tuple(x.shape[:3])}: srjax.attribution.noise_map(attributions) without size= (the map is '
                  'pooled to each stage here)')
  parts = model.parts()
  y = parts['stem'].apply({'params': p['stem']}, model.standardize(x))
  smooth = smoothing if noise == 'smoothed' else 0.0
  for s, blocks in enumerate(parts['blocks']):
    if s:
      y = parts['down'][s].apply({'params': p[f'stage{s}_down']}, y)
    if noise == 'attribution' and (x.shape[1] % y.shape[1] or x.shape[2] % y.shape[2]):
      checks.fail('noise_map', noise_map, f'a map whose size divides by the stage resolution {y.shape[1:3]}')
    stacked = _stack([p[f'stage{s}_block{j}'] for j in range(len(blocks))])
    rates = jnp.asarray([b.drop_path for b in blocks], jnp.float32)
    y = solve_stage(blocks[0], stacked, y, jax.random.fold_in(key, s), sigma=sigma,
                    shape=_stage_shape(noise, noise_map, y), rates=rates, smoothing=smooth, path=path,
                    solver=solver, train=train)
  return parts['head'].apply({'params': p['head']}, y)


@dataclasses.dataclass(frozen=True)
class NSDEApply:
  """Hashable `apply_fn(variables, x, rng, noise_map=None) -> logits` of an NSDE ConvNeXt (one noise draw).

  Attributes: as the keyword arguments of `apply` (train is False).
  """
  model: ConvNeXt
  sigma: float = 0.1
  noise: str = 'brownian'
  smoothing: float = 1.0
  solver: str = 'diffrax'
  path: str = 'folded'

  def __post_init__(self):
    check_options(sigma=self.sigma, noise=self.noise, solver=self.solver, path=self.path,
                  smoothing=self.smoothing)

  def __call__(self, variables: Any, x: jax.Array, rng: jax.Array, noise_map: jax.Array | None = None):
    return apply(self.model, variables, x, rng, sigma=self.sigma, noise=self.noise, noise_map=noise_map,
                 smoothing=self.smoothing, solver=self.solver, path=self.path)


@dataclasses.dataclass(frozen=True)
class IgnoreRng:
  """Hashable `apply_fn(variables, x, rng) -> apply_fn(variables, x)`: a deterministic model (the ConvNeXt)
  behind the stochastic protocol."""
  apply_fn: Callable[[Any, jax.Array], jax.Array]

  def __call__(self, variables: Any, x: jax.Array, rng: jax.Array, noise_map: jax.Array | None = None):
    del rng, noise_map
    return self.apply_fn(variables, x)


def predict(apply_fn: Callable, variables: Any, x: jax.Array, key: jax.Array, *, draws: int,
            noise_map: jax.Array | None = None) -> jax.Array:
  """Mean softmax over `draws` noise draws (vmapped over draws).

  Args:
    apply_fn: `(variables, x, rng[, noise_map]) -> logits`, e.g. an `NSDEApply`.
    variables: the model's variables.
    x: [B, H, W, C] inputs, channels last.
    key: PRNG key; draw i uses fold_in(key, i).
    draws: M >= 1.
    noise_map: forwarded to apply_fn when given.

  Returns:
    [B, K] float32 class probabilities.

  References:
    Liu et al. 2019 (Neural SDE), Sec. 3 (averaging predictions over noise at test time).
  """
  checks.apply_fn('apply_fn', apply_fn, 'a function (variables, x, rng) -> logits, e.g. srjax.nsde.NSDEApply(model)')
  checks.integer('draws', draws, 1)
  checks.image_batch('x', x)
  extra = () if noise_map is None else (noise_map,)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(draws))
  probs = jax.vmap(lambda k: jax.nn.softmax(apply_fn(variables, x, k, *extra), axis=-1))(keys)
  return probs.mean(axis=0)


@dataclasses.dataclass(frozen=True)
class Predict:
  """Hashable `(variables, x, rng) -> mean softmax over draws` of `apply_fn` (see `predict`)."""
  apply_fn: Callable
  draws: int = 8

  def __call__(self, variables: Any, x: jax.Array, rng: jax.Array, noise_map: jax.Array | None = None):
    return predict(self.apply_fn, variables, x, rng, draws=self.draws, noise_map=noise_map)
