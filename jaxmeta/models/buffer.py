"""Replay of real experience as a pure structure: fixed-size arrays of whole episodes
and a write index.

Model-based learners keep every real episode they collect (up to a capacity, then the
oldest are overwritten) and read it two ways: as flat transitions (obs_t, a_t,
obs_{t+1}) to fit a dynamics model, and as trajectory segments of consecutive
transitions (GrBAL's past M / future K windows). Storing episodes [N, T, ...] gives
both with static shapes, so adding and reading are jittable and the buffer is a plain
pytree of arrays that the driver checkpoints with the rest of the state.

Why not flashbax: its trajectory buffer would serve, but the two reads above are a few
lines over these arrays, the learners need the valid mask of early-terminated episodes
next to the data, and the project then needs no extra dependency.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class EpisodeBuffer(NamedTuple):
    obs: jax.Array  # [N, T, D] observation before each step
    action: jax.Array  # [N, T, A] the action taken (as the environment applied it)
    valid: jax.Array  # [N, T] 1 for steps of the episode, 0 for padding after it ended
    index: jax.Array  # [] int32 next row to write
    size: jax.Array  # [] int32 rows holding an episode


def buffer_init(capacity: int, horizon: int, obs_dim: int, action_dim: int, dtype=jnp.float32) -> EpisodeBuffer:
    """An empty buffer of `capacity` episodes of `horizon` steps."""
    return EpisodeBuffer(
        jnp.zeros((capacity, horizon, obs_dim), dtype), jnp.zeros((capacity, horizon, action_dim), dtype),
        jnp.zeros((capacity, horizon), dtype), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
    )


def buffer_add(buffer: EpisodeBuffer, obs, action, valid) -> EpisodeBuffer:
    """Append B episodes (obs [B, T, D], action [B, T, A], valid [B, T]), overwriting the
    oldest when full (B <= capacity)."""
    N = buffer.obs.shape[0]
    B = obs.shape[0]
    rows = (buffer.index + jnp.arange(B)) % N  # [B]
    cast = lambda x, like: x.reshape((B,) + like.shape[1:]).astype(like.dtype)
    return EpisodeBuffer(
        buffer.obs.at[rows].set(cast(obs, buffer.obs)),
        buffer.action.at[rows].set(cast(action, buffer.action)),
        buffer.valid.at[rows].set(cast(valid, buffer.valid)),
        (buffer.index + B) % N,
        jnp.minimum(buffer.size + B, N),
    )


def filled(buffer: EpisodeBuffer) -> jax.Array:
    """[N] 1 for rows holding an episode."""
    return (jnp.arange(buffer.obs.shape[0]) < buffer.size).astype(buffer.valid.dtype)


def transitions(buffer: EpisodeBuffer):
    """Every stored transition, flat: (obs [N(T-1), D], action, next_obs, mask [N(T-1)]).

    mask is 1 where step t and step t+1 both belong to a stored episode (the last step of
    an episode has no recorded next observation and is left out).
    """
    N, T, D = buffer.obs.shape
    w = buffer.valid * filled(buffer)[:, None]  # [N, T]
    mask = w[:, :-1] * w[:, 1:]  # [N, T-1]
    flat = lambda x: x.reshape((N * (T - 1),) + x.shape[2:])
    return flat(buffer.obs[:, :-1]), flat(buffer.action[:, :-1]), flat(buffer.obs[:, 1:]), flat(mask)


def initial_observations(buffer: EpisodeBuffer) -> jax.Array:
    """The first observation of every row: [N, D] (rows past `size` are zeros)."""
    return buffer.obs[:, 0]


def segment_mask(buffer: EpisodeBuffer, length: int) -> jax.Array:
    """[N, S] 1 where the `length` transitions starting at step s all exist,
    S = T - length (segments start at s = 0 .. T-1-length)."""
    N, T = buffer.valid.shape
    S = T - length
    _, _, _, mask = transitions(buffer)
    mask = mask.reshape(N, T - 1)
    c = jnp.concatenate([jnp.zeros((N, 1), mask.dtype), jnp.cumsum(mask, axis=1)], axis=1)  # [N, T]
    s = jnp.arange(S)
    return (c[:, s + length] - c[:, s] >= length).astype(mask.dtype)


def segments(buffer: EpisodeBuffer, idx, length: int):
    """The segments with flat indices idx [B] (row * S + start) of `segment_mask`:
    (obs [B, L, D], action [B, L, A], next_obs [B, L, D])."""
    T = buffer.obs.shape[1]
    S = T - length
    row, start = idx // S, idx % S
    t = start[:, None] + jnp.arange(length)  # [B, L]
    obs = buffer.obs[row[:, None], t]
    return obs, buffer.action[row[:, None], t], buffer.obs[row[:, None], t + 1]
