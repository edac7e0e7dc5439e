"""Rollouts as `lax.scan` over time, vectorised over episodes (and, by vmap, tasks)."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxmeta.types import Params, PRNGKey, Task, Trajectory

# (params, obs [E, D], key) -> (action [E, ...], log_prob [E])
ActFn = Callable[[Params, jax.Array, PRNGKey], tuple[jax.Array, jax.Array]]


def rollout_episodes(
    env: Any,
    act: ActFn,
    params: Params,
    task: Task,
    key: PRNGKey,
    num_episodes: int,
    horizon: int | None = None,
) -> Trajectory:
    """Run `num_episodes` episodes of one task in parallel for `horizon` steps.

    Steps after an episode terminates are padding: `valid` is 0 and the reward is 0.
    Vmap over tasks (with `params` batched or not) for a batch of tasks.

    Returns:
      A time-major `Trajectory` with leaves [T, E, ...].
    """
    horizon = env.horizon if horizon is None else horizon
    k_reset, k_steps = jax.random.split(key)
    reset_keys = jax.random.split(k_reset, num_episodes)
    state, ts = jax.vmap(env.reset, in_axes=(0, None))(reset_keys, task)
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    dtype = ts.reward.dtype

    def body(carry, key):
        state, obs, alive = carry  # alive: [E] 1 while the episode runs
        k_act, k_env = jax.random.split(key)
        action, log_prob = act(params, obs, k_act)
        state, ts = step(jax.random.split(k_env, num_episodes), state, action, task)
        out = Trajectory(obs, action, ts.reward * alive, alive, log_prob)
        alive = alive * (1.0 - ts.terminated.astype(dtype))
        return (state, ts.obs, alive), out

    init = (state, ts.obs, jnp.ones((num_episodes,), dtype))
    _, traj = lax.scan(body, init, jax.random.split(k_steps, horizon))
    return traj


def episode_returns(traj: Trajectory) -> jax.Array:
    """Undiscounted return of every episode: [E] (sums over the time axis)."""
    return jnp.sum(traj.reward, axis=0)
