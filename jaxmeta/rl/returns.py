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


def n_step_returns(r_t: jax.Array, discount_t: jax.Array, v_t: jax.Array, n: int) -> jax.Array:
    """n-step bootstrapped returns (Sutton & Barto 2018, sec. 7.1; rlax's
    `n_step_bootstrapped_returns` without the lambda mixing).

    G_t = r_t + d_t r_{t+1} + ... + (d_t ... d_{t+n-2}) r_{t+n-1} + (d_t ... d_{t+n-1}) v_{t+n-1},
    where near the end of the sequence the return is cut at the last step and bootstraps
    from v_{T-1}.

    Args:
      r_t: [T] rewards of the transitions t = 0..T-1.
      discount_t: [T] discounts after each transition (0 where the episode ended).
      v_t: [T] values of the states the transitions lead to (bootstrap values).
      n: steps before bootstrapping (1: the one-step TD target r_t + d_t v_t).
    Returns:
      [T] n-step returns.
    """
    T = r_t.shape[0]
    pad = n - 1
    v_last = jnp.broadcast_to(v_t[-1:], (pad,))
    # Pad by n - 1 steps so every window has n entries: zero rewards, unit discounts and
    # the last value, which makes a window that runs past the end bootstrap from v_{T-1}.
    r = jnp.concatenate([r_t, jnp.zeros((pad,), r_t.dtype)])
    d = jnp.concatenate([discount_t, jnp.ones((pad,), discount_t.dtype)])
    v = jnp.concatenate([v_t, v_last.astype(v_t.dtype)])
    g = v[n - 1: n - 1 + T]  # [T] bootstrap values v_{t+n-1}

    def body(g, i):  # i = n-1, ..., 0: fold in the reward i steps ahead
        r_i, d_i = lax.dynamic_slice(r, (i,), (T,)), lax.dynamic_slice(d, (i,), (T,))
        return r_i + d_i * g, None

    g, _ = lax.scan(body, g, jnp.arange(n - 1, -1, -1))
    return g
