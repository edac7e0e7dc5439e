"""Discounted returns and generalised advantage estimation, single stream (rlax style).

Every function takes time-indexed arrays of shape [T]; `jax.vmap` over episodes and
tasks. `discount_t` is gamma times 0/1 for "the episode continues after step t".
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def discounted_returns(r_t: jax.Array, discount_t: jax.Array, v_T: jax.Array | float = 0.0) -> jax.Array:
    """G_t = r_t + discount_t * G_{t+1}, with G_T = v_T.

    Args:
      r_t: [T] rewards.
      discount_t: [T] discounts applied to the next step's return.
      v_T: bootstrap value after the last step.
    Returns:
      [T] discounted returns.
    """
    v_T = jnp.asarray(v_T, r_t.dtype)

    def body(g_tp1, x):
        r, d = x
        g = r + d * g_tp1
        return g, g

    _, g_t = lax.scan(body, v_T, (r_t, discount_t), reverse=True)
    return g_t


def gae(
    r_t: jax.Array,
    discount_t: jax.Array,
    v_t: jax.Array,
    v_T: jax.Array | float,
    lambda_: float,
) -> jax.Array:
    """Generalised advantage estimation (Schulman et al. 2016).

    Args:
      r_t: [T] rewards.
      discount_t: [T] discounts.
      v_t: [T] value estimates of the states at t = 0..T-1.
      v_T: value of the state after the last step (bootstrap).
      lambda_: GAE mixing parameter in [0, 1].
    Returns:
      [T] advantages A_t = sum_k (prod discount*lambda) delta_{t+k}.
    """
    v_T = jnp.asarray(v_T, v_t.dtype)
    v_tp1 = jnp.concatenate([v_t[1:], v_T[None]])  # [T]
    delta_t = r_t + discount_t * v_tp1 - v_t  # [T]

    def body(a_tp1, x):
        delta, d = x
        a = delta + d * lambda_ * a_tp1
        return a, a

    _, a_t = lax.scan(body, jnp.zeros((), v_t.dtype), (delta_t, discount_t), reverse=True)
    return a_t
