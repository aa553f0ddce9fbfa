"""Adversarial attacks on classifiers, and AutoAttack for JAX.

One concept per module:
  * `gradient`: `pgd`, `apgd`, `apgd_targeted`: PGD (Madry et al. 2018), APGD on the cross-entropy or the
    DLR loss and APGD-T (Croce & Hein 2020);
  * `boundary`: `fab`, FAB-T, the targeted fast adaptive boundary attack, minimum-norm (Croce & Hein 2020);
  * `random_search`: `square`, the Square attack, score-based random search (Andriushchenko et al. 2020);
  * `ensemble`: `autoattack`, attack after attack on the points still robust ('standard', 'rand', 'custom');
  * `losses`: cross-entropy, DLR, targeted DLR, margin, target ranking; `common`: checks, norms, projections.
All attacks work in L2 and Linf, on inputs in [0, 1], with one model protocol, `apply_fn(params, x, key) ->
logits` (a deterministic model wrapped once with `srjax.models.apply_fn.deterministic(f)`), and compile their
iterations into one XLA loop. `apgd` and `pgd` return an `AttackResult(x_adv, success)`.
"""
from srjax.attack.common import NORMS
from srjax.attack.common import AttackResult
from srjax.attack.losses import cross_entropy
from srjax.attack.losses import dlr_loss
from srjax.attack.losses import dlr_targeted_loss
from srjax.attack.losses import margin
from srjax.attack.losses import target_classes
from srjax.attack.gradient import apgd
from srjax.attack.gradient import apgd_targeted
from srjax.attack.gradient import checkpoints
from srjax.attack.gradient import pgd
from srjax.attack.random_search import square
from srjax.attack.boundary import FabResult
from srjax.attack.boundary import fab
from srjax.attack.boundary import hyperplane_step
from srjax.attack.ensemble import ATTACKS
from srjax.attack.ensemble import VERSIONS
from srjax.attack.ensemble import AttackLog
from srjax.attack.ensemble import AutoAttackResult
from srjax.attack.ensemble import autoattack
