"""The attacks' per-example losses on logits: cross-entropy, DLR, targeted DLR and the margin; target ranking.

References:
  Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
  attacks", ICML 2020, Sec. 4: the Difference of Logits Ratio (DLR) loss, Eq. (5), and its targeted version,
  Eq. (6).
  Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial attack via random search",
  ECCV 2020, Sec. 3: the margin loss.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from srjax import checks

_DLR_GUARD = 1e-12  # keeps the DLR denominator positive when the top logits tie


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  """-log softmax(logits)_y per example [B]."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]


def _sorted_desc(logits):
  return -jnp.sort(-logits, axis=-1)


def _pick(z, labels):
  """z[b, labels[b]] per example [B]."""
  return jnp.take_along_axis(z, labels[:, None], axis=-1)[:, 0]


def dlr_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
  """DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), per example [B].

  pi orders the logits decreasingly (z_pi1 >= z_pi2 >= ...). The loss is invariant to shifting and positively
  rescaling the logits (Croce & Hein 2020, Eq. 5); it is positive exactly when the point is misclassified.

  Args:
    logits: [B, C] with C >= 3.
    y: true labels [B] int.

  Returns:
    [B] float32.
  """
  zs = _sorted_desc(logits.astype(jnp.float32))
  return -margin(logits, y) / (zs[:, 0] - zs[:, 2] + _DLR_GUARD)


def dlr_targeted_loss(logits: jax.Array, y: jax.Array, target: jax.Array) -> jax.Array:
  """Targeted DLR(z, y, t) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12), per example [B].

  Maximising it raises the target logit z_t over the true one z_y (Croce & Hein 2020, Eq. 6).

  Args:
    logits: [B, C] with C >= 4.
    y: true labels [B] int.
    target: target labels [B] int.

  Returns:
    [B] float32.
  """
  z = logits.astype(jnp.float32)
  zs = _sorted_desc(z)
  return -(_pick(z, y) - _pick(z, target)) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + _DLR_GUARD)


def margin(logits: jax.Array, y: jax.Array) -> jax.Array:
  """z_y - max_{i != y} z_i per example [B]: <= 0 when the point is misclassified (Square's loss)."""
  z = logits.astype(jnp.float32)
  others = jnp.where(jax.nn.one_hot(y, z.shape[-1], dtype=bool), -jnp.inf, z)
  return _pick(z, y) - others.max(-1)


def target_classes(scores, y, k: int) -> np.ndarray:
  """The k classes other than y with the highest scores, best first: int [B, k] (host array).

  For a correctly classified point these are AutoAttack's targets: the 2nd, ..., (k+1)-th ranked classes
  (Croce & Hein 2020, Sec. 4: APGD-T and FAB-T run once per target among the top-k classes).

  Args:
    scores: [B, C] logits or probabilities of the clean inputs.
    y: true labels [B].
    k: 1 <= k <= C - 1.
  """
  scores = np.asarray(scores, np.float64)
  checks.integer('k', k, 1, scores.shape[1] - 1)
  y = np.asarray(y)
  masked = scores.copy()
  masked[np.arange(scores.shape[0]), y] = -np.inf
  # stable sort on the negated scores: ties go to the lower class index
  return np.argsort(-masked, axis=1, kind='stable')[:, :k].astype(np.int32)
