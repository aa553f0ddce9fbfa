"""Feature attributions and attribution-based metrics: integrated gradients, noise tunnel, stability, ABC.

Model protocol (one, as in `srjax.attack`): `apply_fn(params, x, key) -> scores [B, C]` (logits, usually), e.g.
a neural SDE that draws its noise from `key`; a deterministic model is wrapped once with
`srjax.models.apply_fn.deterministic(f)` (then `draws` must be 1 and no key is needed). (Before this version a
`stochastic=` flag said which protocol a function followed.)
  * For a model that takes a key the
    attribution is the average over `draws` model realisations, each held FIXED along the integration
    path (keys `split(key, draws)`, the same at every path point). Integrated gradients are linear in the
    function, so this is exactly the IG of the mean score over those realisations, and completeness holds for
    it: sum(A) = mean_r f_r(x) - mean_r f_r(baseline).
  `apply_fn` is a static argument of the compiled functions: pass a hashable callable (a module-level function,
  `srjax.models.apply_fn.ModuleApply`), not a fresh lambda per call. The model must treat batch elements
  independently: gradients of the summed target scores are used as per-example gradients.

Shapes: `x` is a batch [B, ...] (images [B, H, W, C]); attributions have the shape of `x`; `target` is one class
index per example [B] int (or one int for all). The path points of integrated gradients are evaluated `chunk`
at a time (one vmapped forward/backward of chunk * B inputs), chunks run in a `lax.scan` that carries only the
running sum, so memory grows with `chunk`, not with `steps`.

References:
  Sundararajan, Taly & Yan, "Axiomatic attribution for deep networks", ICML 2017 (integrated gradients, Eq. 1;
  completeness, Prop. 1).
  Kokhlikyan et al., "Captum: a unified and generic model interpretability library for PyTorch", 2020 (the
  method names, the quadrature rules of `captum.attr._utils.approximation_methods`, the NoiseTunnel types and
  defaults, `sensitivity_max`).
  Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017; Adebayo et al., "Local explanation
  methods for deep neural networks lack sensitivity to parameter values", 2018 (VarGrad).
  Yeh et al., "On the (in)fidelity and sensitivity of explanations", NeurIPS 2019 (max-sensitivity).
  Jha et al., "Attribution-based confidence metric for deep neural networks", NeurIPS 2019 (ABC, Algorithm 1).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from srjax import checks
from srjax.models.apply_fn import check_call, takes_key

METHODS = ('riemann_left', 'riemann_right', 'riemann_middle', 'riemann_trapezoid', 'gausslegendre')
NT_TYPES = ('smoothgrad', 'smoothgrad_sq', 'vargrad')
ATTRIBUTIONS = ('integrated_gradients', 'gradient')
NORMALIZE = ('rms', 'max', 'mean')
_TINY = 1e-12


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
  """Path points alpha_k in [0, 1] and weights w_k of the IG integral: int_0^1 g(a) da ~ sum_k w_k g(alpha_k).

  As Captum defines them (`approximation_methods.py`), n = steps:
    riemann_left     alpha = linspace(0, 1 - 1/n, n),         w = 1/n
    riemann_right    alpha = linspace(1/n, 1, n),             w = 1/n
    riemann_middle   alpha = linspace(1/(2n), 1 - 1/(2n), n), w = 1/n
    riemann_trapezoid alpha = linspace(0, 1, n),              w = 1/(n-1), halved at both ends
    gausslegendre    alpha = (1 + t_k)/2, w = v_k/2 for the n-point Gauss-Legendre nodes t_k and weights v_k
  One deliberate difference: Captum's trapezoid uses w = 1/n (halved at the ends) on the n points of
  linspace(0, 1, n), whose weights sum to 1 - 1/n, so its attributions of a linear model are (1 - 1/n) times the
  exact ones (2% short at 50 steps). srjax uses the trapezoid rule's spacing 1/(n-1), which sums to 1.

  Args:
    method: one of `METHODS`.
    steps: number of path points n >= 1 (>= 2 for the Riemann rules, as Captum requires).

  Returns:
    (alphas [n] float64, weights [n] float64).

  Raises:
    ValueError: an unknown method or too few steps.
  """
  checks.one_of('method', method, METHODS)
  checks.integer('steps', steps, 1 if method == 'gausslegendre' else 2)
  n = steps
  if method == 'gausslegendre':
    t, v = np.polynomial.legendre.leggauss(n)
    return 0.5 * (1.0 + t), 0.5 * v
  weights = np.full(n, 1.0 / n)
  if method == 'riemann_left':
    alphas = np.linspace(0.0, 1.0 - 1.0 / n, n)
  elif method == 'riemann_right':
    alphas = np.linspace(1.0 / n, 1.0, n)
  elif method == 'riemann_middle':
    alphas = np.linspace(1.0 / (2 * n), 1.0 - 1.0 / (2 * n), n)
  else:
    alphas = np.linspace(0.0, 1.0, n)
    weights = np.full(n, 1.0 / (n - 1))
    weights[[0, -1]] /= 2.0
  return alphas, weights


def integrated_gradients(apply_fn: Callable[..., jax.Array], params: Any, x: jax.Array, target: Any, *,
                         baseline: Any = None, steps: int = 50, method: str = 'gausslegendre',
                         chunk: int | None = None, key: jax.Array | None = None,
                         draws: int = 1) -> jax.Array:
  """Integrated gradients A = (x - b) * int_0^1 dF_target(b + a (x - b)) / dx da, by quadrature.

  Args:
    apply_fn: `apply_fn(params, x, key) -> scores [B, C]`; a deterministic model wrapped with
      `srjax.models.apply_fn.deterministic(f)`.
    params: the first argument of `apply_fn`.
    x: inputs [B, ...] float.
    target: class index per example [B] int, or one int.
    baseline: b, broadcastable to x (a number, [...] or [B, ...]); None means zeros (Captum's default).
    steps: number of path points (Captum's n_steps, default 50).
    method: a quadrature rule of `quadrature` (Captum's default 'gausslegendre').
    chunk: path points per batched evaluation (memory ~ chunk * B inputs); None means min(steps, 16).
    key: PRNG key of the model's draws (required unless the model is `deterministic`).
    draws: model realisations averaged (stochastic only), each fixed along the path.

  Returns:
    attributions, the shape and dtype of x. They satisfy completeness up to the quadrature error:
    sum over the features of example i = F_target(x_i) - F_target(b_i).

  Raises:
    ValueError: an unknown method, steps/chunk/draws out of range, a missing key, mismatched shapes.

  References:
    Sundararajan et al. 2017, Eq. 1 (IG) and Sec. 3 (Riemann approximation); Captum's quadrature rules.
  """
  x, target, baseline = _validate(apply_fn, x, target, baseline)
  chunk = _validate_model(steps, method, chunk, apply_fn, key, draws)
  return _integrated_gradients(apply_fn, params, x, target, baseline, _key_or_dummy(key), _path(method, steps, chunk),
                               draws=draws)


def noise_tunnel(apply_fn: Callable[..., jax.Array], params: Any, x: jax.Array, target: Any, *, key: jax.Array,
                 n_samples: int = 5, stdev: float = 1.0, nt_type: str = 'smoothgrad',
                 attribution: str = 'integrated_gradients', baseline: Any = None, steps: int = 50,
                 method: str = 'gausslegendre', chunk: int | None = None,
                 model_key: jax.Array | None = None, draws: int = 1) -> jax.Array:
  """SmoothGrad, SmoothGrad^2 or VarGrad of an attribution, as Captum's NoiseTunnel computes them.

  With the noisy inputs x_s = x + stdev * N_s, N_s = normal(fold_in(key, s), x.shape) for s = 0..n_samples-1
  (the baseline stays fixed, as in Captum), and a_s the attribution of x_s:
    'smoothgrad'    mean_s a_s
    'smoothgrad_sq' mean_s a_s^2
    'vargrad'       mean_s a_s^2 - (mean_s a_s)^2   (the population variance over the samples)
  The samples run in a `lax.scan` carrying the running sums of a_s and a_s^2.

  Args:
    apply_fn, params, target, baseline, steps, method, chunk, draws: as `integrated_gradients`.
    x: inputs [B, ...] float.
    key: PRNG key of the input noise.
    n_samples: number of noisy copies (Captum's nt_samples, default 5).
    stdev: standard deviation of the Gaussian input noise, >= 0 (Captum's stdevs, default 1.0; on inputs in
      [0, 1] something like 0.1-0.2 of the input range is the usual choice).
    nt_type: one of `NT_TYPES`.
    attribution: 'integrated_gradients' or 'gradient' (the plain gradient of the target score, SmoothGrad's
      original setting).
    model_key: PRNG key of the model's draws (stochastic only): the same realisations serve every noisy copy.

  Returns:
    aggregated attributions, the shape of x.

  Raises:
    ValueError: an unknown nt_type/attribution/method, n_samples < 1, stdev < 0, and as `integrated_gradients`.

  References:
    Smilkov et al. 2017 (SmoothGrad, Eq. 3); Adebayo et al. 2018 (VarGrad); Captum's NoiseTunnel.
  """
  checks.one_of('nt_type', nt_type, NT_TYPES)
  checks.one_of('attribution', attribution, ATTRIBUTIONS)
  checks.integer('n_samples', n_samples, 1)
  checks.in_range('stdev', stdev, 0.0)
  x, target, baseline = _validate(apply_fn, x, target, baseline)
  chunk = _validate_model(steps, method, chunk, apply_fn, model_key, draws)
  mean, mean_sq = _noise_tunnel(apply_fn, params, x, target, baseline, key, _key_or_dummy(model_key),
                                jnp.float32(stdev), _path(method, steps, chunk), n_samples=n_samples,
                                attribution=attribution, draws=draws)
  if nt_type == 'smoothgrad':
    out = mean
  elif nt_type == 'smoothgrad_sq':
    out = mean_sq
  else:
    out = mean_sq - mean * mean
  return out.astype(x.dtype)


class Stability(NamedTuple):
  """Per-example attribution stability under small input perturbations (lower = more stable).

  Attributes:
    relative_l2: [B] mean over the perturbations of ||A(x + d) - A(x)||_2 / ||A(x)||_2 (the headline measure).
    max_sensitivity: [B] the largest of those ratios (Yeh et al.'s SENS_MAX, estimated by sampling as Captum's
      `sensitivity_max` does, here relative to ||A(x)||_2).
    log_abs_change: [B] log(mean over the perturbations of sum_j |A_j(x + d) - A_j(x)| + 1e-12), the quantity
      the NSDE paper plots ("logarithm of the sum of the change in attributions"); it is not scale-free.
  """
  relative_l2: jax.Array
  max_sensitivity: jax.Array
  log_abs_change: jax.Array


def stability(apply_fn: Callable[..., jax.Array], params: Any, x: jax.Array, target: Any, *, key: jax.Array,
              radius: float = 0.02, n_samples: int = 10, baseline: Any = None, steps: int = 50,
              method: str = 'gausslegendre', chunk: int | None = None,
              model_key: jax.Array | None = None, draws: int = 1, tunnel_samples: int = 0,
              tunnel_stdev: float = 0.1) -> Stability:
  """How much integrated-gradients attributions change when the input moves a little.

  Perturbations d_s ~ uniform[-radius, radius]^D, d_s = radius * uniform(fold_in(key, s), x.shape, -1, 1) for
  s = 0..n_samples-1 (Captum's `sensitivity_max` default perturbation: an Linf ball of radius 0.02, 10 samples);
  they are not clipped to the data range. The target class stays fixed. For a stochastic model the same
  `draws` realisations (from `model_key`) serve x and every x + d_s, so the measure sees the input change only,
  not the model's own noise.

  With `tunnel_samples` T > 0 the attribution is the noise tunnel (SmoothGrad) of integrated gradients:
  A(x) = mean_t IG(x + tunnel_stdev * N_t), N_t = normal(fold_in(fold_in(key, TUNNEL_STREAM), t), x.shape), the
  same T noise samples for x and for every x + d_s (as `noise_tunnel` with nt_type='smoothgrad', but with common
  input noise, so the measure sees the perturbation d_s, not the tunnel's own Monte Carlo error).

  Why the relative L2 change is the headline measure: attributions scale with the model's scores (a model whose
  logits are twice as large has attributions twice as large and twice as large changes), and two models, such as
  a ConvNeXt and its neural-SDE variant, have differently scaled logits. Dividing by ||A(x)|| makes the measure
  invariant to that scale, so a comparison between models measures how the explanation changes, not how large it
  is. `max_sensitivity` reports the worst sampled perturbation instead of the mean, and `log_abs_change` is the
  paper's unnormalised quantity, kept for comparison with its figure.

  Args:
    apply_fn, params, target, baseline, steps, method, chunk, draws: as `integrated_gradients`.
    x: inputs [B, ...] float.
    key: PRNG key of the perturbations.
    radius: Linf radius of the perturbations, >= 0.
    n_samples: number of perturbations >= 1.
    model_key: PRNG key of the model's draws (stochastic only).
    tunnel_samples: noisy copies T of the noise tunnel, >= 0 (0: plain integrated gradients).
    tunnel_stdev: the tunnel's Gaussian input noise std, >= 0.

  Returns:
    `Stability` of [B] float32 arrays.

  Raises:
    ValueError: radius < 0, n_samples < 1, tunnel_samples < 0, tunnel_stdev < 0, and as `integrated_gradients`.

  References:
    Yeh et al. 2019, Sec. 3 (max-sensitivity); Captum's `captum.metrics.sensitivity_max`.
  """
  checks.integer('n_samples', n_samples, 1)
  checks.in_range('radius', radius, 0.0)
  checks.integer('tunnel_samples', tunnel_samples, 0)
  checks.in_range('tunnel_stdev', tunnel_stdev, 0.0)
  x, target, baseline = _validate(apply_fn, x, target, baseline)
  chunk = _validate_model(steps, method, chunk, apply_fn, model_key, draws)
  rel, rel_max, log_abs = _stability(apply_fn, params, x, target, baseline, key, _key_or_dummy(model_key),
                                     jnp.float32(radius), _path(method, steps, chunk), jnp.float32(tunnel_stdev),
                                     n_samples=n_samples, draws=draws,
                                     tunnel_samples=tunnel_samples)
  return Stability(rel, rel_max, log_abs)


class ABC(NamedTuple):
  """Attribution-based confidence per example.

  Attributes:
    score: [B] float32 in [0, 1], the fraction of mutated inputs that keep the predicted label.
    label: [B] int32, the model's prediction on the clean input (whose attributions drive the sampling).
  """
  score: jax.Array
  label: jax.Array


def abc(apply_fn: Callable[..., jax.Array], params: Any, x: jax.Array, *, key: jax.Array, baseline: Any = None,
        n_samples: int = 64, fraction: float = 0.05, steps: int = 50, method: str = 'gausslegendre',
        chunk: int | None = None, sample_chunk: int = 8, draws: int = 1) -> ABC:
  """The ABC confidence metric (Jha et al. 2019, Algorithm 1).

  For each example: L = the predicted label; A = integrated-gradients attributions of the score of L;
  P_j = |A_j / (x_j - b_j)| / sum_k |A_k / (x_k - b_k)| (features with x_j = b_j get P_j = 0, since mutating them
  changes nothing; if every P_j is 0, e.g. a constant model, P is uniform); then `n_samples` mutated inputs, each
  setting m = max(1, round(fraction * D)) features drawn from P (with replacement, so possibly fewer distinct
  ones) to the baseline; ABC = the fraction of mutated inputs whose predicted label is still L.

  Algorithm 1 says "mutate x_j to the baseline with probability P(x_j)" and leaves open how many features one
  mutated input changes; srjax makes that number explicit (`fraction` of the D features per input). Since
  A_j / (x_j - b_j) is the path-averaged gradient, P favours the features the prediction is most sensitive to.

  Randomness: mutation s uses `fold_in(k_mutate, s)` and, for a stochastic model, `draws` realisations from
  `fold_in(k_predict, s)`, with (k_attr, k_label, k_mutate, k_predict) = split(key, 4). The prediction of a
  stochastic model is the argmax of the softmax averaged over `draws` realisations. Mutations run
  `sample_chunk` at a time (vmapped) inside a `lax.scan` that counts the conforming ones.

  Args:
    apply_fn, params, baseline, steps, method, chunk, draws: as `integrated_gradients`.
    x: inputs [B, ...] float.
    key: PRNG key (attributions of a stochastic model, mutations, predictions).
    n_samples: mutated inputs per example (S in the paper), >= 1.
    fraction: share of the D features mutated per input, in (0, 1].
    sample_chunk: mutated inputs per batched prediction (memory ~ sample_chunk * B inputs).

  Returns:
    `ABC(score [B] float32, label [B] int32)`.

  Raises:
    ValueError: n_samples < 1, fraction outside (0, 1], sample_chunk < 1, and as `integrated_gradients`.

  References:
    Jha et al. 2019, Sec. 3 and Algorithm 1.
  """
  checks.integer('n_samples', n_samples, 1)
  checks.in_range('fraction', fraction, 0.0, 1.0, low_open=True)
  checks.integer('sample_chunk', sample_chunk, 1)
  x, _, baseline = _validate(apply_fn, x, 0, baseline)
  chunk = _validate_model(steps, method, chunk, apply_fn, key, draws)
  dim = int(np.prod(x.shape[1:]))
  n_mutate = max(1, int(round(fraction * dim)))
  score, label = _abc(apply_fn, params, x, baseline, key, _path(method, steps, chunk), n_samples=n_samples,
                      n_mutate=n_mutate, sample_chunk=min(sample_chunk, n_samples),
                      draws=draws)
  return ABC(score, label)


def noise_map(attributions: jax.Array, *, size: tuple[int, int] | None = None,
              normalize: str = 'rms') -> jax.Array:
  """A per-sample noise-shape map [B, h, w, 1] from attributions, for attribution-shaped SDE noise.

  S = mean over channels of |A| (optionally resized to `size` with antialiased linear interpolation), scaled per
  sample so that 'rms': sqrt(mean S^2) = 1 (σ·S then injects the same noise power as Brownian σ), 'max':
  max S = 1, or 'mean': mean S = 1. An all-zero map becomes all ones (plain Brownian noise), never NaN. This is
  the "shaping noise" of Jha et al.: more noise where the attributions are large.

  Args:
    attributions: [B, H, W, C] float (e.g. from `integrated_gradients`).
    size: (h, w) of the output; None keeps (H, W). For `srjax.nsde.apply` with `AttributionShaped()` noise keep
      the default: it takes the map at the input's size and area-averages it to each stage's resolution itself.
      `size` is for other uses (e.g. shaping one feature map of your own).
    normalize: 'rms', 'max' or 'mean'.

  Returns:
    [B, h, w, 1] float32, non-negative.

  Raises:
    ValueError: attributions not of rank 4, a bad size, an unknown normalize.

  References:
    Jha et al. 2019 (attribution-shaped noise in the NSDE paper's Sec. on shaping noise).
  """
  checks.one_of('normalize', normalize, NORMALIZE)
  attributions = jnp.asarray(attributions)
  if attributions.ndim != 4:
    checks.fail('attributions', attributions, 'an array [B, H, W, C]')
  if size is not None:
    if len(size) != 2:
      checks.fail('size', size, 'a pair (h, w) of positive integers')
    for s in size:
      checks.integer('size', s, 1)
  return _noise_map(attributions, size=None if size is None else tuple(int(s) for s in size),
                    normalize=normalize)


@functools.partial(jax.jit, static_argnames=('size', 'normalize'))
def _noise_map(attributions, *, size, normalize):
  s = jnp.mean(jnp.abs(attributions.astype(jnp.float32)), axis=-1, keepdims=True)
  if size is not None and tuple(size) != s.shape[1:3]:
    s = jax.image.resize(s, (s.shape[0],) + tuple(size) + (1,), 'linear', antialias=True)
    s = jnp.maximum(s, 0.0)
  if normalize == 'rms':
    scale = jnp.sqrt(jnp.mean(s * s, axis=(1, 2, 3), keepdims=True))
  elif normalize == 'max':
    scale = jnp.max(s, axis=(1, 2, 3), keepdims=True)
  else:
    scale = jnp.mean(s, axis=(1, 2, 3), keepdims=True)
  return jnp.where(scale > 0, s / jnp.where(scale > 0, scale, 1.0), 1.0)


# --- validation -----------------------------------------------------------------------------------------------

def _validate(apply_fn, x, target, baseline):
  x = check_call(apply_fn, x)   # shared with srjax.attack
  target = jnp.asarray(target)
  if not jnp.issubdtype(target.dtype, jnp.integer) or target.shape not in ((), (x.shape[0],)):
    checks.fail('target', target, f'an int or integer class indices of shape ({x.shape[0]},)')
  target = jnp.broadcast_to(target.astype(jnp.int32), (x.shape[0],))
  if baseline is None:
    baseline = jnp.zeros_like(x)
  else:
    baseline = jnp.asarray(baseline, x.dtype)
    try:
      baseline = jnp.broadcast_to(baseline, x.shape)
    except ValueError:
      checks.fail('baseline', baseline, f'an array broadcastable to {tuple(x.shape)}')
  return x, target, baseline


def _validate_model(steps, method, chunk, apply_fn, key, draws):
  stochastic = takes_key(apply_fn)
  quadrature(method, steps)  # validates method and steps
  checks.integer('draws', draws, 1)
  if draws > 1 and not stochastic:
    checks.fail('draws', draws, '1 for a deterministic model (srjax.models.apply_fn.deterministic): its '
                'realisations are all equal')
  if stochastic and key is None:
    checks.fail('key', key, 'a PRNG key of the model draws for a model that takes a key (wrap a deterministic '
                'one with srjax.models.apply_fn.deterministic)')
  if chunk is None:
    return min(steps, 16)
  checks.integer('chunk', chunk, 1)
  return min(chunk, steps)


def _key_or_dummy(key):
  return jax.random.key(0) if key is None else key


# --- compiled cores -------------------------------------------------------------------------------------------

def _score_grad(apply_fn, params, target, keys):
  """x -> d/dx sum_b F_target_b(x_b), averaged over the model realisations `keys` (None: a deterministic model)."""
  stochastic = keys is not None

  def total(xx, rng):
    scores = apply_fn(params, xx, rng if stochastic else None)
    return jnp.sum(jnp.take_along_axis(scores.astype(jnp.float32), target[:, None], axis=-1))

  grad = jax.grad(total)

  def g(xx):
    if not stochastic:
      return grad(xx, None)
    return jax.vmap(grad, in_axes=(None, 0))(xx, keys).mean(0)

  return g


def _path(method, steps, chunk):
  """The quadrature as traced arrays [n_chunks, chunk] (zero-weight padding), so the rule is not a compile key."""
  alphas, weights = quadrature(method, steps)
  n_chunks = -(-steps // chunk)
  pad = n_chunks * chunk - steps
  alphas = np.concatenate([alphas, np.zeros(pad)]).reshape(n_chunks, chunk).astype(np.float32)
  weights = np.concatenate([weights, np.zeros(pad)]).reshape(n_chunks, chunk).astype(np.float32)
  return jnp.asarray(alphas), jnp.asarray(weights)


def _ig_core(apply_fn, params, x, target, baseline, keys, path):
  grad = _score_grad(apply_fn, params, target, keys)
  diff = x - baseline

  def body(acc, aw):
    a, w = aw
    gs = jax.vmap(lambda ai: grad(baseline + ai * diff))(a)
    return acc + jnp.tensordot(w, gs.astype(jnp.float32), axes=1), None

  total, _ = jax.lax.scan(body, jnp.zeros(x.shape, jnp.float32), path)
  return (diff * total).astype(x.dtype)


def _model_keys(key, draws, apply_fn):
  """`draws` keys of the model's realisations, or None for a deterministic model."""
  return jax.random.split(key, draws) if takes_key(apply_fn) else None


@functools.partial(jax.jit, static_argnames=('apply_fn', 'draws'))
def _integrated_gradients(apply_fn, params, x, target, baseline, key, path, *, draws):
  return _ig_core(apply_fn, params, x, target, baseline, _model_keys(key, draws, apply_fn), path)


def _attribute(apply_fn, params, x, target, baseline, keys, path, *, attribution):
  if attribution == 'gradient':
    return _score_grad(apply_fn, params, target, keys)(x).astype(x.dtype)
  return _ig_core(apply_fn, params, x, target, baseline, keys, path)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'n_samples', 'attribution', 'draws'))
def _noise_tunnel(apply_fn, params, x, target, baseline, key, model_key, stdev, path, *, n_samples, attribution,
                  draws):
  keys = _model_keys(model_key, draws, apply_fn)

  def body(carry, s):
    total, total_sq = carry
    noisy = x + stdev * jax.random.normal(jax.random.fold_in(key, s), x.shape, x.dtype)
    a = _attribute(apply_fn, params, noisy, target, baseline, keys, path, attribution=attribution).astype(jnp.float32)
    return (total + a, total_sq + a * a), None

  zeros = jnp.zeros(x.shape, jnp.float32)
  (total, total_sq), _ = jax.lax.scan(body, (zeros, zeros), jnp.arange(n_samples))
  return total / n_samples, total_sq / n_samples


def _flat_norms(v):
  flat = v.reshape(v.shape[0], -1).astype(jnp.float32)
  return jnp.sqrt(jnp.sum(flat * flat, axis=1)), jnp.sum(jnp.abs(flat), axis=1)


TUNNEL_STREAM = 0x7FFFFFFF   # fold_in(key, TUNNEL_STREAM): the noise tunnel's stream in `stability`


@functools.partial(jax.jit, static_argnames=('apply_fn', 'n_samples', 'draws', 'tunnel_samples'))
def _stability(apply_fn, params, x, target, baseline, key, model_key, radius, path, tunnel_stdev, *, n_samples,
               draws, tunnel_samples):
  keys = _model_keys(model_key, draws, apply_fn)
  plain = functools.partial(_ig_core, apply_fn, params, target=target, baseline=baseline, keys=keys, path=path)
  k_tunnel = jax.random.fold_in(key, TUNNEL_STREAM)

  def ig(x):
    if not tunnel_samples:
      return plain(x=x)

    def body(total, t):   # the same noise N_t for x and every x + d_s
      noise = jax.random.normal(jax.random.fold_in(k_tunnel, t), x.shape, x.dtype)
      return total + plain(x=x + tunnel_stdev * noise).astype(jnp.float32), None

    total, _ = jax.lax.scan(body, jnp.zeros(x.shape, jnp.float32), jnp.arange(tunnel_samples))
    return (total / tunnel_samples).astype(x.dtype)
  # Scan index 0 computes A(x) itself (d = 0), so the attribution program is compiled once, not twice.

  def body(carry, s):
    a0, rel_sum, rel_max, abs_sum = carry
    d = radius * jax.random.uniform(jax.random.fold_in(key, s - 1), x.shape, x.dtype, -1.0, 1.0)
    a = ig(x=jnp.where(s == 0, x, x + d))
    a0 = jnp.where(s == 0, a, a0)
    l2, l1 = _flat_norms(a - a0)
    rel = l2 / jnp.maximum(_flat_norms(a0)[0], _TINY)
    return (a0, rel_sum + rel, jnp.maximum(rel_max, rel), abs_sum + l1), None

  zeros = jnp.zeros(x.shape[0], jnp.float32)
  (_, rel_sum, rel_max, abs_sum), _ = jax.lax.scan(body, (jnp.zeros(x.shape, x.dtype), zeros, zeros, zeros),
                                                   jnp.arange(n_samples + 1))
  return rel_sum / n_samples, rel_max, jnp.log(abs_sum / n_samples + _TINY)


def _predict_labels(apply_fn, params, x, keys):
  if keys is None:
    return jnp.argmax(apply_fn(params, x, None), axis=-1).astype(jnp.int32)
  probs = jax.vmap(lambda k: jax.nn.softmax(apply_fn(params, x, k).astype(jnp.float32), axis=-1))(keys)
  return jnp.argmax(probs.mean(0), axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'n_samples', 'n_mutate', 'sample_chunk', 'draws'))
def _abc(apply_fn, params, x, baseline, key, path, *, n_samples, n_mutate, sample_chunk, draws):
  k_attr, k_label, k_mutate, k_predict = jax.random.split(key, 4)
  batch = x.shape[0]
  label = _predict_labels(apply_fn, params, x, _model_keys(k_label, draws, apply_fn))
  attr = _ig_core(apply_fn, params, x, label, baseline, _model_keys(k_attr, draws, apply_fn), path)
  flat_x = x.reshape(batch, -1)
  flat_b = baseline.reshape(batch, -1)
  diff = flat_x - flat_b
  moved = diff != 0
  ratio = jnp.where(moved, jnp.abs(attr.reshape(batch, -1).astype(jnp.float32)
                                   / jnp.where(moved, diff, 1.0).astype(jnp.float32)), 0.0)
  total = jnp.sum(ratio, axis=1, keepdims=True)
  probs = jnp.where(total > 0, ratio / jnp.where(total > 0, total, 1.0), 1.0 / ratio.shape[1])
  log_p = jnp.log(probs)  # -inf where P = 0: never drawn

  def conforming(s):
    idx = jax.random.categorical(jax.random.fold_in(k_mutate, s), log_p, axis=-1, shape=(n_mutate, batch))
    mask = jnp.zeros(flat_x.shape, bool).at[jnp.arange(batch)[None, :], idx].set(True)
    mutated = jnp.where(mask, flat_b, flat_x).reshape(x.shape)
    keys = _model_keys(jax.random.fold_in(k_predict, s), draws, apply_fn)
    return _predict_labels(apply_fn, params, mutated, keys) == label

  n_chunks = -(-n_samples // sample_chunk)
  ids = jnp.arange(n_chunks * sample_chunk).reshape(n_chunks, sample_chunk)

  def body(count, s_ids):
    same = jax.vmap(conforming)(s_ids)                       # [sample_chunk, B]
    valid = (s_ids < n_samples)[:, None]
    return count + jnp.sum(same & valid, axis=0), None

  count, _ = jax.lax.scan(body, jnp.zeros(batch, jnp.int32), ids)
  return count.astype(jnp.float32) / n_samples, label
