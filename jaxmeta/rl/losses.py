"""Policy-gradient losses and KL divergences over weighted batches.

All losses take flat or batched arrays of the same shape plus a 0/1 (or real) mask
`valid` that weighs out padding; `mean_fn` chooses the reduction: `weighted_mean` over
every entry, or `episode_mean` (each episode weighs the same, pytorch-maml-rl's).
"""
from __future__ import annotations

from typing import Callable

import distrax
import jax
import jax.numpy as jnp


def weighted_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
    """sum(valid * x) / sum(valid), over all entries."""
    return jnp.sum(x * valid) / jnp.maximum(jnp.sum(valid), 1e-8)


def episode_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean over episodes of each episode's mean over its valid steps.

    `x` and `valid` are time-major [T, E, ...]; this is pytorch-maml-rl's reduction (each
    episode weighs the same, whatever its length).
    """
    per_episode = jnp.sum(x * valid, axis=0) / jnp.maximum(jnp.sum(valid, axis=0), 1e-8)  # [E, ...]
    return jnp.mean(per_episode)


Reduce = Callable[[jax.Array, jax.Array], jax.Array]


def weighted_normalize(
    x: jax.Array, valid: jax.Array, eps: float = 1e-8, mean_fn: Reduce = weighted_mean
) -> jax.Array:
    """(x - mean) / (std + eps) over valid entries; padded entries become 0."""
    mean = mean_fn(x, valid)
    centred = (x - mean) * valid
    std = jnp.sqrt(mean_fn(centred**2, valid))
    return centred / (std + eps)


def reinforce_loss(
    log_prob: jax.Array, advantage: jax.Array, valid: jax.Array, mean_fn: Reduce = weighted_mean
) -> jax.Array:
    """Vanilla policy gradient (Williams 1992): -E[log pi(a|s) * A]."""
    return -mean_fn(log_prob * advantage, valid)


def trpo_surrogate(
    log_prob: jax.Array,
    old_log_prob: jax.Array,
    advantage: jax.Array,
    valid: jax.Array,
    mean_fn: Reduce = weighted_mean,
) -> jax.Array:
    """Importance-weighted surrogate of TRPO (Schulman et al. 2015), to minimise."""
    ratio = jnp.exp(log_prob - old_log_prob)
    return -mean_fn(ratio * advantage, valid)


def ppo_clip_loss(
    log_prob: jax.Array,
    old_log_prob: jax.Array,
    advantage: jax.Array,
    valid: jax.Array,
    clip_eps: float,
    mean_fn: Reduce = weighted_mean,
) -> jax.Array:
    """Clipped surrogate of PPO (Schulman et al. 2017), to minimise."""
    ratio = jnp.exp(log_prob - old_log_prob)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return -mean_fn(jnp.minimum(ratio * advantage, clipped * advantage), valid)


def gaussian_kl(
    mean_p: jax.Array, log_std_p: jax.Array, mean_q: jax.Array, log_std_q: jax.Array
) -> jax.Array:
    """KL(p || q) of diagonal Gaussians, summed over the last axis (distrax)."""
    p = distrax.MultivariateNormalDiag(mean_p, jnp.exp(log_std_p) * jnp.ones_like(mean_p))
    q = distrax.MultivariateNormalDiag(mean_q, jnp.exp(log_std_q) * jnp.ones_like(mean_q))
    return p.kl_divergence(q)
