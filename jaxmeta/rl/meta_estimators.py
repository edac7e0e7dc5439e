"""Inner-loop policy-gradient objectives for gradient-based meta-RL, as losses to minimise.

All three have the same gradient at the sampling policy (the vanilla policy gradient);
they differ in the Hessian, i.e. in the meta-gradient that flows through an inner step.
Arrays are time-major [T, E]; `valid` masks padding; the reduction is `episode_mean`
(pytorch-maml-rl's), so the three are directly comparable.

- VPG (`jaxmeta.rl.reinforce_loss`): -E[log pi * A]; Hessian E[A grad^2 log pi]
  (the estimator of Finn et al. 2017 as implemented by pytorch-maml-rl).
- LVC (Rothfuss et al. 2019, "ProMP", eq. 7): -E[pi / pi_old * A]; Hessian
  E[A (grad^2 log pi + grad log pi grad log pi^T)] per time step -- the low-variance
  curvature estimator, unbiased for the per-step part, dropping cross-step terms.
- DiCE (Foerster et al. 2018, with the baseline of Farquhar et al. 2019, "Loaded DiCE",
  lambda = 1): -E[sum_t (box(L_<=t) - box(L_<t)) A_t], box(x) = exp(x - stop_grad(x)),
  L_<=t the cumulative log-probability of the episode up to t; its Hessian adds the
  cross-step terms grad log pi_t grad L_<t^T + transpose to LVC's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmeta.rl.losses import episode_mean


def magic_box(x: jax.Array) -> jax.Array:
    """exp(x - stop_gradient(x)): 1 in value, d/dx box(x) = box(x) (Foerster et al. 2018)."""
    return jnp.exp(x - jax.lax.stop_gradient(x))


def lvc_loss(log_prob: jax.Array, old_log_prob: jax.Array, advantage: jax.Array, valid: jax.Array) -> jax.Array:
    """ProMP's low-variance-curvature inner objective, negated.

    Args:
      log_prob: [T, E] log pi_theta(a_t | s_t) under the parameters being adapted.
      old_log_prob: [T, E] log-probability under the sampling policy (data, no gradient).
      advantage: [T, E]; valid: [T, E] float mask.
    Returns:
      -episode_mean(pi / pi_old * A): at the sampling policy its gradient is the VPG.
    """
    ratio = jnp.exp(log_prob - jax.lax.stop_gradient(old_log_prob))  # [T, E]
    return -episode_mean(ratio * advantage, valid)


def dice_loss(log_prob: jax.Array, advantage: jax.Array, valid: jax.Array) -> jax.Array:
    """Loaded-DiCE inner objective with advantages (lambda = 1), negated.

    Args:
      log_prob: [T, E] log pi_theta(a_t | s_t); advantage: [T, E]; valid: [T, E].
    Returns:
      -episode_mean((box(L_<=t) - box(L_<t)) * A_t): value 0, first derivative the VPG,
      second derivative with the cross-step terms of the exact policy Hessian.
    """
    lp = log_prob * valid  # [T, E]
    cum = jnp.cumsum(lp, axis=0)  # [T, E] L_<=t
    weight = magic_box(cum) - magic_box(cum - lp)  # [T, E]
    return -episode_mean(weight * advantage, valid)
