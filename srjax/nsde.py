"""ConvNeXt as a neural SDE (Liu et al. 2019, "Neural SDE"; the NSDE ConvNeXt of arXiv 2409.01532) on diffrax.

Each ConvNeXt stage s with blocks f_0..f_{d-1} becomes one SDE on [0, d],

  dx = f_{floor(t)}(x) dt + sigma * S dW_t,

solved by Euler-Maruyama at dt = 1: x_{k+1} = x_k + f_k(x_k) + sigma * S * (W_{k+1} - W_k). The drift f_k is the
residual branch of block k, gamma * MLP(LN(dwconv(x))), with untied weights (block k's own params), so with
sigma = 0 the solution is exactly the ConvNeXt with the same params. Stem, downsampling layers and head are the
ConvNeXt's. The noise is on in training and at test; `predict` averages the softmax over M draws (Liu et al.
2019, Sec. 3: "noise at test time" and averaged predictions; arXiv 2409.01532, Sec. 2: noise injected into the
residual connections during training).

The SDE is a value, `SDE(sigma, noise, path, solver)`: frozen, hashable (a static argument of `jax.jit`), and
validated once when it is built; `sigma` is its one pytree leaf, so it may also be traced (one compile for every
sigma). A ConvNeXt is `sde=None`. Its parts are values too:

  noise (S, a lineax `DiagonalLinearOperator` of sigma * S acting on the Brownian increment):
    Brownian()          S = 1: independent Brownian motion per feature (Var x_T - x_0 = sigma^2 T with zero drift).
    Smoothed(std)       S = 1 on a spatially correlated Brownian motion: each increment is white noise blurred by a
                        separable Gaussian of std `std` feature-map pixels (circular boundary), with the kernel
                        scaled to unit L2 norm so that every feature keeps variance dt; sigma means the same as
                        for Brownian().
    AttributionShaped() S = a per-example map [B, H, W] (or [B, H, W, 1]) at input resolution, area-averaged to
                        each stage's resolution and broadcast over channels: more noise where the map is large.
                        Build it from integrated-gradients attributions with `srjax.attribution.noise_map` (Jha et
                        al.'s attribution-shaped noise) and pass it as `noise_map=`; the library stays pure.
  path (the Brownian control):
    Folded()            the increment of step k from `fold_in(key, k)`: a valid Brownian path on the integer grid,
                        cheap and differentiable under diffrax's `RecursiveCheckpointAdjoint` (diffrax's
                        `UnsafeBrownianPath` is not).
    VirtualTree(tol)    diffrax's `VirtualBrownianTree`.
  solver:
    DiffraxEuler()      `diffeqsolve(MultiTerm(ODETerm, ControlTerm), Euler(), dt0=1)`.
    ScanEuler()         the same math as a plain `lax.scan` (the benchmark's baseline, `scan_solve`); with the
                        Folded() path both give the same draws.

`from_config(config.model)` turns a config's plain fields (kind, sigma, noise, smoothing, path, solver) into
the value; it is the only place the option names are spelled.

The ConvNeXt owns its forward pass; this module supplies only how a stage advances (`ConvNeXt.__call__`'s
`advance` hook): one SDE solve per stage. The drift is the block's own residual branch and stochastic depth
(`Block.residual`), called through `Block.apply` on an unbound block with the stage's stacked block params passed
in diffrax's `args` and indexed by floor(t), never through bound submodules (a bound module inside the solver
leaks tracers).

References:
  Liu, Xiao, Si, Cao, Kumar, Hsieh 2019, "Neural SDE: Stabilizing Neural ODE Networks with Stochastic Noise".
  Improving Robustness of Spectrogram Classifiers with Neural SDEs, arXiv 2409.01532, Sec. 2.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from srjax import checks
from srjax.models.apply_fn import ModuleApply, deterministic
from srjax.models.convnext import Block, ConvNeXt



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


# --- the SDE as a value -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Brownian:
  """S = 1: independent Brownian motion per feature."""
  needs_map = False
  blur_std = 0.0

  def scale(self, noise_map: jax.Array | None, y: jax.Array) -> jax.Array:
    """S broadcast to the stage state y [B, h, w, C]."""
    del noise_map
    return jnp.ones_like(y)


@dataclasses.dataclass(frozen=True)
class Smoothed(Brownian):
  """S = 1 on Brownian increments blurred by a unit-L2-norm Gaussian of std `std` feature-map pixels (> 0)."""
  std: float = 1.0

  def __post_init__(self):
    checks.in_range('Smoothed.std', float(self.std), 0.0, low_open=True)

  @property
  def blur_std(self) -> float:
    return float(self.std)


@dataclasses.dataclass(frozen=True)
class AttributionShaped:
  """S = a per-example map at input resolution (`noise_map=`), area-averaged to each stage, over channels."""
  needs_map = True
  blur_std = 0.0

  def scale(self, noise_map: jax.Array, y: jax.Array) -> jax.Array:
    """S for a stage state y [B, h, w, C] from the map [B, H, W] or [B, H, W, 1]: the mean of each block."""
    m = noise_map[..., 0] if noise_map.ndim == 4 else noise_map
    b, big_h, big_w = m.shape
    h, w = y.shape[1], y.shape[2]
    pooled = m.reshape(b, h, big_h // h, w, big_w // w).mean(axis=(2, 4))
    return jnp.broadcast_to(pooled[..., None], y.shape)


@dataclasses.dataclass(frozen=True)
class Folded:
  """Brownian increments from fold_in(key, step) on the integer grid (see `FoldedBrownian`)."""

  def control(self, key: jax.Array, shape: tuple[int, ...], depth: int, blur_std: float) -> diffrax.AbstractPath:
    """The Brownian control of one stage on [0, depth]."""
    return FoldedBrownian(0.0, float(depth), key, tuple(shape), float(blur_std))


@dataclasses.dataclass(frozen=True)
class VirtualTree:
  """diffrax's `VirtualBrownianTree` with tolerance `tol` (> 0), blurred like `Folded` when the noise is."""
  tol: float = 1e-3

  def __post_init__(self):
    checks.in_range('VirtualTree.tol', float(self.tol), 0.0, low_open=True)

  def control(self, key: jax.Array, shape: tuple[int, ...], depth: int, blur_std: float) -> diffrax.AbstractPath:
    tree = diffrax.VirtualBrownianTree(0.0, float(depth), tol=float(self.tol),
                                       shape=jax.ShapeDtypeStruct(tuple(shape), jnp.float32), key=key)
    return SmoothedTree(tree, float(blur_std))


@dataclasses.dataclass(frozen=True)
class DiffraxEuler:
  """Euler-Maruyama by `diffrax.diffeqsolve` on MultiTerm(ODETerm, ControlTerm), RecursiveCheckpointAdjoint."""

  def solve(self, drift: Callable, diag: jax.Array, control: diffrax.AbstractPath, y0: jax.Array, args: Any,
            depth: int) -> jax.Array:
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift),
                              diffrax.ControlTerm(lambda t, y, a: lx.DiagonalLinearOperator(diag), control))
    sol = diffrax.diffeqsolve(terms, diffrax.Euler(), 0.0, float(depth), 1.0, y0, args=args,
                              saveat=diffrax.SaveAt(t1=True), max_steps=depth,
                              adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=depth))
    return sol.ys[0]


@dataclasses.dataclass(frozen=True)
class ScanEuler:
  """The same Euler-Maruyama as a plain `lax.scan` (`scan_solve`)."""

  def solve(self, drift: Callable, diag: jax.Array, control: diffrax.AbstractPath, y0: jax.Array, args: Any,
            depth: int) -> jax.Array:
    return scan_solve(drift, diag, control, y0, args, depth)


NOISES = (Brownian, Smoothed, AttributionShaped)
KINDS = ('nsde', 'convnext')   # a config's model.kind: with an SDE, or the plain ConvNeXt (`from_config`)
PATHS = (Folded, VirtualTree)
SOLVERS = (DiffraxEuler, ScanEuler)


def _check_value(name: str, value: Any, kinds: tuple[type, ...]) -> None:
  if not isinstance(value, kinds):
    checks.fail(name, value, ' or '.join(f'{k.__name__}(...)' for k in kinds))


@functools.partial(jax.tree_util.register_dataclass, data_fields=['sigma'], meta_fields=['noise', 'path', 'solver'])
@dataclasses.dataclass(frozen=True)
class SDE:
  """The NSDE's stochastic part, dx = f(x) dt + sigma S dW per stage (see the module docstring).

  Attributes:
    sigma: diffusion scale, >= 0 (0 gives exactly the ConvNeXt). A pytree leaf: it may be traced.
    noise: Brownian(), Smoothed(std) or AttributionShaped() (the last needs `noise_map=` in `apply`).
    path: Folded() or VirtualTree(tol).
    solver: DiffraxEuler() or ScanEuler() (same math).

  Raises (when built):
    ValueError: sigma < 0 (a traced sigma is not range-checked), or a field that is not one of its values.
  """
  sigma: float | jax.Array = 0.1
  noise: Brownian | Smoothed | AttributionShaped = Brownian()
  path: Folded | VirtualTree = Folded()
  solver: DiffraxEuler | ScanEuler = DiffraxEuler()

  def __post_init__(self):
    if not isinstance(self.sigma, jax.core.Tracer):
      checks.in_range('SDE.sigma', float(np.asarray(self.sigma)), 0.0)
    _check_value('SDE.noise', self.noise, NOISES)
    _check_value('SDE.path', self.path, PATHS)
    _check_value('SDE.solver', self.solver, SOLVERS)


def from_config(model_config: Any) -> SDE | None:
  """The `SDE` of a config's model fields, or None for a ConvNeXt (model.kind 'convnext').

  Reads model.kind ('nsde' | 'convnext'), model.sigma, model.noise ('brownian' | 'smoothed' | 'attribution'),
  model.smoothing (the std of Smoothed), model.path ('folded' | 'tree') and model.solver ('diffrax' | 'scan').

  Raises:
    ValueError: an unknown name in one of those fields (named as `model.<field>`), sigma < 0 or smoothing <= 0.
  """
  m = model_config
  if checks.one_of('model.kind', m.kind, KINDS) == 'convnext':
    return None
  noise = {'brownian': Brownian, 'smoothed': lambda: Smoothed(float(m.smoothing)), 'attribution': AttributionShaped}
  paths = {'folded': Folded, 'tree': VirtualTree}
  solvers = {'diffrax': DiffraxEuler, 'scan': ScanEuler}
  return SDE(sigma=float(m.sigma), noise=noise[checks.one_of('model.noise', m.noise, tuple(noise))](),
             path=paths[checks.one_of('model.path', m.path, tuple(paths))](),
             solver=solvers[checks.one_of('model.solver', m.solver, tuple(solvers))]())


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
    if not train:
      return block.apply({'params': params}, y, method=Block.residual)
    # The block's own stochastic depth, with block k's rate (traced; a rate of 0 keeps every example).
    return block.apply({'params': params}, y, False, rates[k], method=Block.residual,
                       rngs={'drop_path': jax.random.fold_in(key, k)})
  return drift


def solve_stage(block: Block, stacked: Any, y0: jax.Array, key: jax.Array, *, sigma: float | jax.Array,
                shape: jax.Array, rates: jax.Array, smoothing: float = 0.0, path: Folded | VirtualTree = Folded(),
                solver: DiffraxEuler | ScanEuler = DiffraxEuler(), train: bool = False) -> jax.Array:
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
    path: Folded() or VirtualTree(tol).
    solver: DiffraxEuler() or ScanEuler().
    train: stochastic depth on.

  Returns:
    [B, h, w, C], the state at t = depth.
  """
  depth = int(jax.tree.leaves(stacked)[0].shape[0])
  noise_key, drop_key = jax.random.split(key)
  drift = _drift_fn(block, rates, depth, train)
  diag = sigma * jnp.broadcast_to(shape, y0.shape).astype(y0.dtype)
  control = path.control(noise_key, y0.shape, depth, smoothing)
  return solver.solve(drift, diag, control, y0, (stacked, drop_key), depth)


def scan_solve(drift: Callable, diag: jax.Array, control: diffrax.AbstractPath, y0: jax.Array, args: Any,
               depth: int) -> jax.Array:
  """The same Euler-Maruyama as `solve_stage`'s diffrax path, as a plain `lax.scan` (the benchmark baseline):
  y_{k+1} = y_k + drift(k, y_k, args) + diag * control.evaluate(k, k + 1)."""
  def step(y, k):
    t = k.astype(jnp.float32)
    return y + drift(t, y, args) * 1.0 + diag * control.evaluate(t, t + 1.0), None
  return jax.lax.scan(step, y0, jnp.arange(depth))[0]


def _check_sde(sde: Any) -> None:
  if sde is not None and not isinstance(sde, SDE):
    checks.fail('sde', sde, 'srjax.nsde.SDE(sigma, noise, path, solver) or None (the ConvNeXt)', error=TypeError)


def apply(model: ConvNeXt, variables: Any, x: jax.Array, key: jax.Array, *, sde: SDE | None,
          noise_map: jax.Array | None = None, train: bool = False) -> jax.Array:
  """Logits of the NSDE ConvNeXt for one noise draw (of the plain ConvNeXt when `sde` is None).

  Args:
    model: the `ConvNeXt` whose params `variables` holds (same tree: an NSDE and its ConvNeXt share params).
    variables: {'params': ...} from `model.init`.
    x: [B, H, W, C_in] float32 inputs, channels last (C_in the stem's input channels; a channels-first batch is
      a ValueError that says so).
    key: PRNG key of the draw (one Brownian path per stage, folded from it; with sde None, the drop-path key).
    sde: an `SDE` (sigma = 0 gives exactly `model.apply(variables, x)`), or None for the ConvNeXt itself.
    noise_map: [B, H, W] or [B, H, W, 1] non-negative map at the input's size (B, H, W) = x.shape[:3], required
      for AttributionShaped() noise: `srjax.attribution.noise_map(attributions)` (without `size=`) of
      attributions of x. It is area-averaged to each stage's resolution here, so H and W must be divisible by
      each stage's.
    train: stochastic depth on (when the model has drop_path_rate > 0).

  Returns:
    [B, num_classes] float32 logits.

  Raises:
    TypeError: sde is not an `SDE` (or None).
    ValueError: a missing or misshapen noise_map, x not [B, H, W, C_in], or sides that are not multiples of
      `model.input_multiple()`.

  References:
    Liu et al. 2019 (Neural SDE), Sec. 3; arXiv 2409.01532, Sec. 2.
  """
  _check_sde(sde)
  p = variables['params']
  checks.image_batch('x', x, channels=_input_channels(p))
  model.check_input(x.shape)
  if sde is None:
    return model.apply(variables, x, deterministic=not train, rngs={'drop_path': key} if train else {})
  if sde.noise.needs_map:
    if noise_map is None:
      checks.fail('noise_map', None, 'a [B, H, W] map for AttributionShaped() noise')
    if noise_map.ndim not in (3, 4) or noise_map.shape[:3] != x.shape[:3]:
      checks.fail('noise_map', noise_map, f'a [B, H, W] or [B, H, W, 1] map at the input\'s size (B, H, W) = '
                  f'{tuple(x.shape[:3])}: srjax.attribution.noise_map(attributions) without size= (the map is '
                  'pooled to each stage here)')
  def advance(s: int, blocks: list[Block], params: list[Any], y: jax.Array) -> jax.Array:
    """Stage s as one SDE on [0, depth] (ConvNeXt's hook for how a stage advances)."""
    if sde.noise.needs_map and (x.shape[1] % y.shape[1] or x.shape[2] % y.shape[2]):
      checks.fail('noise_map', noise_map, f'a map whose size divides by the stage resolution {y.shape[1:3]}')
    stacked = _stack(params)
    rates = jnp.asarray([b.drop_path for b in blocks], jnp.float32)
    return solve_stage(blocks[0], stacked, y, jax.random.fold_in(key, s), sigma=sde.sigma,
                       shape=sde.noise.scale(noise_map, y), rates=rates, smoothing=sde.noise.blur_std,
                       path=sde.path, solver=sde.solver, train=train)
  return model.apply(variables, x, advance=advance)


@dataclasses.dataclass(frozen=True)
class NSDEApply:
  """Hashable `apply_fn(variables, x, key, noise_map=None) -> logits` of an NSDE ConvNeXt (one noise draw; the
  plain ConvNeXt, which ignores the key, when `sde` is None).

  Attributes:
    model: the `ConvNeXt`.
    sde: the `SDE` (default `SDE()`, sigma 0.1), or None.
    train: stochastic depth on (the training loss's apply).
  """
  model: ConvNeXt
  sde: SDE | None = SDE()
  train: bool = False

  def __post_init__(self):
    _check_sde(self.sde)

  def __call__(self, variables: Any, x: jax.Array, key: jax.Array, noise_map: jax.Array | None = None):
    return apply(self.model, variables, x, key, sde=self.sde, noise_map=noise_map, train=self.train)


def apply_fn_of(model: ConvNeXt, sde: SDE | None, *, train: bool = False) -> Callable[..., jax.Array]:
  """The model as `apply_fn(variables, x, key) -> logits`, the one protocol of `srjax.attack` and
  `srjax.attribution`: an `NSDEApply` for an SDE (or for the ConvNeXt in training, whose stochastic depth takes
  the key), else the ConvNeXt wrapped with `srjax.models.apply_fn.deterministic` (its key is ignored, and the
  attacks know that its draws are all equal)."""
  if sde is None and not train:
    return deterministic(ModuleApply(model))
  return NSDEApply(model, sde, train=train)


def predict(apply_fn: Callable, variables: Any, x: jax.Array, key: jax.Array, *, draws: int,
            noise_map: jax.Array | None = None) -> jax.Array:
  """Mean softmax over `draws` noise draws (vmapped over draws).

  Args:
    apply_fn: `(variables, x, key[, noise_map]) -> logits`, e.g. an `NSDEApply`.
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
  checks.apply_fn('apply_fn', apply_fn, 'a function (variables, x, key) -> logits, e.g. srjax.nsde.NSDEApply(model)')
  checks.integer('draws', draws, 1)
  checks.image_batch('x', x)
  extra = () if noise_map is None else (noise_map,)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(draws))
  probs = jax.vmap(lambda k: jax.nn.softmax(apply_fn(variables, x, k, *extra), axis=-1))(keys)
  return probs.mean(axis=0)


@dataclasses.dataclass(frozen=True)
class Predict:
  """Hashable `(variables, x, key) -> mean softmax over draws` of `apply_fn` (see `predict`)."""
  apply_fn: Callable
  draws: int = 8

  def __call__(self, variables: Any, x: jax.Array, key: jax.Array, noise_map: jax.Array | None = None):
    return predict(self.apply_fn, variables, x, key, draws=self.draws, noise_map=noise_map)
