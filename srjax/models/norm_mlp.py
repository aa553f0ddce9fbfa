"""A ConvNeXt block's channel branch, LayerNorm -> Dense -> exact GELU -> Dense -> layer scale, with a hand-written
gradient, fast on XLA:CPU.

Forward, per position n with channels c (eps = 1e-6, as timm and the paper):

  zhat = (z - mean_c z) * r,   r = 1 / sqrt(var_c z + eps)          LayerNorm statistics over the channels
  u = zhat * scale + beta
  h = u @ W1 + b1                                                    [N, 4C]
  a = h * Phi(h),  Phi(h) = (1 + erf(h / sqrt 2)) / 2               exact GELU (torch's and timm's formula)
  y = gamma * (a @ W2 + b2)

Automatic differentiation of that chain on XLA:CPU spends about twice torch's time in the LayerNorm's gradient
(several separate passes for the mean, the variance and their broadcasts) and saves both h and a. The
`jax.custom_vjp` below keeps only the residuals zhat, r and h, recomputes a = h * Phi(h) in the backward pass from
the Phi(h) that GELU's derivative needs anyway, and writes the standard gradients:

  P = a^T g                                 [D, C]: the one product with the incoming gradient g
  dW2 = P * gamma,  db2 = gamma * sum_n g   (= a^T go and sum_n go with go = g * gamma)
  dgamma = sum_d W2 * P + b2 * sum_n g      (= sum_n g * o with o = a W2 + b2, without o)
  ga = go W2^T
  gh = ga * (Phi(h) + h phi(h))             phi the standard normal density
  dW1 = u^T gh,  db1 = sum_n gh             gu = gh W1^T
  dscale = sum_n gu * zhat,  dbeta = sum_n gu
  dz = r * (gz - mean_c gz - zhat * mean_c(gz * zhat)),   gz = gu * scale

Not saving o matters where the forward pass is recomputed in the backward pass (diffrax's checkpointed adjoint
recomputes each block of the NSDE from its input): the recomputed fc2 product and GELU feed only the block's
output, which the backward pass does not use, so XLA drops them as dead code. The function runs as its own XLA
computation (`srjax.models.isolate`).

Measured side by side (batch 32 of 64 x 64, the 'cpu' ConvNeXt, 2 cores, AVX-512), the custom gradient cut the
ConvNeXt's gradient from 52.8 to 45.5 ms; with each stage in a checkpointed loop (an earlier form), dropping o
from the residuals took the train step from 30.9 to 29.7 ms (NSDE 36.5 to 35.7; medians of 11 interleaved
rounds). tests/test_norm_mlp.py checks the values and every gradient against the same chain written with flax's
`nn.LayerNorm`, `nn.Dense` and `nn.gelu(approximate=False)` under automatic differentiation in float64, and
against finite differences.

References:
  Liu et al. 2022, "A ConvNet for the 2020s", Fig. 4 (the block); Ba et al. 2016, "Layer Normalization";
  Hendrycks & Gimpel 2016, "Gaussian Error Linear Units (GELUs)".
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from srjax.models import isolate

LN_EPS = 1e-6
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _cdf(h: jax.Array) -> jax.Array:
  """Phi(h), the standard normal CDF."""
  return 0.5 + 0.5 * jax.lax.erf(h * _SQRT_HALF)


def _forward(z2: jax.Array, p: dict[str, Any], eps: float):
  """z2 [N, C] -> (y [N, C], residuals)."""
  mu = z2.mean(axis=-1, keepdims=True)
  var = jnp.maximum((z2 * z2).mean(axis=-1, keepdims=True) - mu * mu, 0.0)
  r = jax.lax.rsqrt(var + eps)
  zhat = (z2 - mu) * r
  u = zhat * p['norm']['scale'] + p['norm']['bias']
  h = u @ p['fc1']['kernel'] + p['fc1']['bias']
  o = (h * _cdf(h)) @ p['fc2']['kernel'] + p['fc2']['bias']
  return o * p['gamma'], (zhat, r, h)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _norm_mlp(z2: jax.Array, p: dict[str, Any], eps: float) -> jax.Array:
  return _forward(z2, p, eps)[0]


def _fwd(z2, p, eps):
  y, res = _forward(z2, p, eps)
  return y, (res, p)


def _bwd(eps, saved, g):
  del eps
  (zhat, r, h), p = saved
  cdf = _cdf(h)
  a = h * cdf
  ag = a.T @ g
  gsum = g.sum(axis=0)
  dgamma = (p['fc2']['kernel'] * ag).sum(axis=0) + p['fc2']['bias'] * gsum
  go = g * p['gamma']
  ga = go @ p['fc2']['kernel'].T
  gh = ga * (cdf + h * _INV_SQRT_2PI * jnp.exp(-0.5 * h * h))
  u = zhat * p['norm']['scale'] + p['norm']['bias']
  gu = gh @ p['fc1']['kernel'].T
  gz = gu * p['norm']['scale']
  dz = r * (gz - gz.mean(axis=-1, keepdims=True) - zhat * (gz * zhat).mean(axis=-1, keepdims=True))
  grads = {'norm': {'scale': (gu * zhat).sum(axis=0), 'bias': gu.sum(axis=0)},
           'fc1': {'kernel': u.T @ gh, 'bias': gh.sum(axis=0)},
           'fc2': {'kernel': ag * p['gamma'], 'bias': gsum * p['gamma']},
           'gamma': dgamma}
  return dz, grads


_norm_mlp.defvjp(_fwd, _bwd)


def norm_mlp(z: jax.Array, params: dict[str, Any], eps: float = LN_EPS) -> jax.Array:
  """gamma * fc2(gelu(fc1(LayerNorm(z)))) over the last axis, with the hand-written gradient above.

  Args:
    z: [..., C] float32 (a ConvNeXt block's depthwise-conv output, channels last).
    params: {'norm': {'scale' [C], 'bias' [C]}, 'fc1': {'kernel' [C, D], 'bias' [D]},
      'fc2': {'kernel' [D, C], 'bias' [C]}, 'gamma' [C]}: the params of flax's `nn.LayerNorm`, two `nn.Dense`
      and the layer scale (D = 4C in a ConvNeXt).
    eps: LayerNorm's epsilon.

  Returns:
    [..., C], the same as the composition of `nn.LayerNorm(epsilon=eps)`, `nn.Dense`, `nn.gelu(approximate=False)`
    and `nn.Dense`, times gamma (to float32 rounding).

  Raises:
    ValueError: params of other shapes.
  """
  c = z.shape[-1]
  want = {('norm', 'scale'): (c,), ('norm', 'bias'): (c,), ('fc1', 'kernel'): (c, None), ('fc2', 'bias'): (c,),
          ('gamma',): (c,)}
  for path, shape in want.items():
    got = functools.reduce(lambda d, k: d[k], path, params).shape
    if len(got) != len(shape) or any(s is not None and s != t for s, t in zip(shape, got)):
      raise ValueError(f"norm_mlp: params{''.join(f'[{k!r}]' for k in path)} has shape {got}; accepted: "
                       f"{tuple('D' if s is None else s for s in shape)} for z with {c} channels")
  d = params['fc1']['kernel'].shape[1]
  if params['fc1']['bias'].shape != (d,) or params['fc2']['kernel'].shape != (d, c):
    raise ValueError(f"norm_mlp: fc1 bias {params['fc1']['bias'].shape} and fc2 kernel "
                     f"{params['fc2']['kernel'].shape}; accepted: ({d},) and ({d}, {c})")
  return isolate.isolated(lambda z2, p: _norm_mlp(z2, p, eps), z.reshape(-1, c), params).reshape(z.shape)
