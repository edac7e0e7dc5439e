"""The linear feature baseline of rllab / pytorch-maml-rl.

Features of observation and time (obs, obs^2, t/100, (t/100)^2, (t/100)^3, 1), fitted
by ridge regression to the discounted returns of one task's episodes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def linear_features(obs: jax.Array, valid: jax.Array) -> jax.Array:
    """Features for a time-major batch of episodes.

    Args:
      obs: [T, E, D] observations.
      valid: [T, E] 0/1 mask.
    Returns:
      [T, E, 2D + 4] features, zero on padded steps.
    """
    T = obs.shape[0]
    ones = valid[..., None]  # [T, E, 1]
    t = (jnp.arange(T, dtype=obs.dtype) / 100.0)[:, None, None] * ones  # [T, E, 1]
    feats = jnp.concatenate([obs, obs**2, t, t**2, t**3, ones], axis=-1)
    return feats * ones


def fit_linear(
    features: jax.Array, targets: jax.Array, valid: jax.Array, reg_coeff: float = 1e-5
) -> jax.Array:
    """Ridge regression on valid rows; like rllab, retries with 10x the ridge if singular.

    Args:
      features: [..., F]; targets: [...]; valid: [...] weights.
    Returns:
      [F] coefficients.
    """
    F = features.shape[-1]
    X = features.reshape(-1, F) * valid.reshape(-1, 1)
    y = targets.reshape(-1) * valid.reshape(-1)
    xtx = X.T @ X  # [F, F]
    xty = X.T @ y  # [F]
    regs = reg_coeff * 10.0 ** jnp.arange(5, dtype=features.dtype)  # [5]
    eye = jnp.eye(F, dtype=features.dtype)
    sols = jax.vmap(lambda r: jnp.linalg.solve(xtx + r * eye, xty))(regs)  # [5, F]
    ok = jnp.all(jnp.isfinite(sols), axis=-1)  # [5]
    first = jnp.argmax(ok)
    return jnp.where(jnp.any(ok), sols[first], jnp.zeros_like(sols[0]))


def linear_baseline(obs: jax.Array, returns: jax.Array, valid: jax.Array, reg_coeff: float = 1e-5) -> jax.Array:
    """Fit the linear feature baseline to one task's episodes and predict its values.

    Args:
      obs: [T, E, D]; returns: [T, E] discounted returns; valid: [T, E].
    Returns:
      [T, E] baseline values, zero on padded steps.
    """
    feats = linear_features(obs, valid)
    coeffs = fit_linear(feats, returns, valid, reg_coeff)
    return (feats @ coeffs) * valid
