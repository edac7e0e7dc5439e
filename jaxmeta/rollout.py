"""Rollouts as `lax.scan` over time, vectorised over episodes (and, by vmap, tasks).

Two kinds of experience, each for a batch of tasks:

- episodes (`rollout_episodes`): E independent episodes of one task under a stateless
  policy (MAML's inner and outer batches);
- trials (`rollout_trials`): E parallel trials of n consecutive episodes of one task
  under a policy with memory that is kept across the episodes of a trial (RL^2, SNAIL).

A `Collector` is where a learner gets them from: `JaxCollector` runs the rollouts
below inside the learner's XLA program; `jaxmeta.host.HostCollector` steps CPU
simulators outside it and returns the same arrays. Learners are written against the
collector, so the host path needs no learner-specific code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax import lax

from jaxmeta.envs.base import Discrete, MetaEnv, action_dim, obs_dim
from jaxmeta.types import Params, PRNGKey, Task, Trajectory

# (params, obs [E, D], key) -> (action [E, ...], log_prob [E])
ActFn = Callable[[Params, jax.Array, PRNGKey], tuple[jax.Array, jax.Array]]


def rollout_episodes(
    env: MetaEnv,
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


def episode_success(success: jax.Array, valid: jax.Array, axis: int = 0) -> jax.Array:
    """1 for an episode in which any valid step succeeded, else 0 (max over `axis`, time).

    Args:
      success: [..., T, ...] per-step success flags; valid: the same shape, float mask.
    """
    return jnp.max(success * valid, axis=axis)


# ----------------------------------------------------------------------------- trials
#
# A trial (Duan et al. 2016, "RL^2") is n consecutive episodes of one task. The policy
# sees, at every step, the observation, the previous action (one-hot when discrete),
# the previous reward and a flag "the previous step ended an episode"; its memory (the
# carry) persists across episode boundaries and is reset only between trials.

# (params, carry, x [E, D_in], key) -> (carry, action [E, ...], log_prob [E], value [E])
TrialActFn = Callable[[Params, Any, jax.Array, PRNGKey], tuple[Any, jax.Array, jax.Array, jax.Array]]


class TrialTrajectory(NamedTuple):
    """A batch of trials, time-major: every leaf is [T, E, ...] with T = n * horizon.

    Step t belongs to episode t // horizon. `valid` is 0 on padding steps after an
    episode terminated early (their reward is 0); `done` is 1 on the last step of
    every episode; `inputs` are the exact policy inputs, so training can replay them.
    """

    inputs: jax.Array  # [T, E, D_in]
    action: jax.Array  # [T, E, ...]
    reward: jax.Array  # [T, E]
    valid: jax.Array  # [T, E] float mask
    done: jax.Array  # [T, E] float, 1 where an episode ends after this step
    log_prob: jax.Array  # [T, E]
    value: jax.Array  # [T, E] the acting policy's value estimate
    success: jax.Array | None = None  # [T, E] as `Trajectory.success` (None: not reported)


def trial_input_dim(env: MetaEnv) -> int:
    """Size of the policy input: obs + previous action + previous reward + done flag."""
    return obs_dim(env) + action_dim(env) + 2


def trial_inputs(env: MetaEnv, obs: jax.Array, prev_action: jax.Array, prev_reward: jax.Array,
                 prev_done: jax.Array) -> jax.Array:
    """Concatenate [obs, one-hot or raw previous action, previous reward, done flag].

    Args:
      obs: [..., obs_dim]; prev_action: [...] int (discrete, -1 = none) or [..., A];
      prev_reward: [...]; prev_done: [...].
    Returns:
      [..., obs_dim + A + 2] policy inputs.
    """
    dtype = prev_reward.dtype
    obs = obs.reshape(obs.shape[: prev_reward.ndim] + (-1,)).astype(dtype)
    space = env.action_space
    if isinstance(space, Discrete):
        a = jax.nn.one_hot(prev_action, space.n, dtype=dtype)  # -1 -> all zeros
    else:
        a = prev_action.reshape(prev_action.shape[: prev_reward.ndim] + (-1,)).astype(dtype)
    return jnp.concatenate([obs, a, prev_reward[..., None], prev_done[..., None].astype(dtype)], -1)


def rollout_trials(
    env: MetaEnv,
    act: TrialActFn,
    params: Params,
    task: Task,
    key: PRNGKey,
    num_episodes: int,
    carry: Any,
    num_trials: int,
    horizon: int | None = None,
) -> tuple[TrialTrajectory, Any]:
    """Run `num_trials` trials of `num_episodes` episodes of one task in parallel.

    One `lax.scan` over the T = num_episodes * horizon steps of a trial; the env is
    reset at each episode boundary, the policy carry is not. Vmap over tasks (with
    `carry` built per task) for a batch of tasks.

    Args:
      env: a MetaEnv.
      act: the acting function (see `TrialActFn`).
      params: policy parameters.
      task: one task.
      key: PRNG key.
      num_episodes: episodes per trial (n).
      carry: the policy memory at the start of a trial, for `num_trials` trials.
      num_trials: trials run in parallel (E).
      horizon: steps per episode (default `env.horizon`).
    Returns:
      (TrialTrajectory with leaves [T, E, ...], the carry after the last step).
    """
    H = env.horizon if horizon is None else horizon
    T = num_episodes * H
    E = num_trials
    k_reset, k_steps = jax.random.split(key)
    reset = jax.vmap(env.reset, in_axes=(0, None))
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    state, ts = reset(jax.random.split(k_reset, E), task)
    dtype = ts.reward.dtype
    if isinstance(env.action_space, Discrete):
        prev_action = jnp.full((E,), -1, jax.dtypes.canonicalize_dtype(jnp.int64))  # the policy's action dtype
    else:
        prev_action = jnp.zeros((E,) + tuple(env.action_space.shape), dtype)
    zeros = jnp.zeros((E,), dtype)

    def body(c, xs):
        state, obs, prev_action, prev_reward, prev_done, alive, carry = c
        t, key = xs
        k_act, k_env, k_reset = jax.random.split(key, 3)
        x = trial_inputs(env, obs, prev_action, prev_reward, prev_done)  # [E, D_in]
        carry, action, log_prob, value = act(params, carry, x, k_act)
        next_state, ts = step(jax.random.split(k_env, E), state, action, task)
        reward = ts.reward * alive  # [E]
        terminated = ts.terminated.astype(dtype) * alive  # [E]
        if H == 1:
            last = jnp.ones((), bool)  # every step ends an episode
            state, r_ts = reset(jax.random.split(k_reset, E), task)
            next_obs = r_ts.obs
        else:
            last = (t % H) == H - 1  # [] shared by the batch
            r_state, r_ts = reset(jax.random.split(k_reset, E), task)
            state = jax.tree.map(lambda a, b: jnp.where(last, a, b), r_state, next_state)
            next_obs = jnp.where(last, r_ts.obs, ts.obs)
        lastf = last.astype(dtype)
        done = jnp.maximum(lastf, terminated)  # [E]
        out = TrialTrajectory(x, action, reward, alive, jnp.broadcast_to(lastf, (E,)), log_prob, value)
        alive = jnp.where(last, jnp.ones_like(alive), alive - terminated)
        return (state, next_obs, action, reward, done, alive, carry), out

    init = (state, ts.obs, prev_action, zeros, zeros, jnp.ones((E,), dtype), carry)
    xs = (jnp.arange(T), jax.random.split(k_steps, T))
    final, traj = lax.scan(body, init, xs)
    return traj, final[-1]


def trial_episode_returns(traj: TrialTrajectory, num_episodes: int) -> jax.Array:
    """Undiscounted return of each episode of each trial: [E, n]."""
    T, E = traj.reward.shape[:2]
    return jnp.sum(traj.reward.reshape(num_episodes, T // num_episodes, E), axis=1).T


def trial_episode_success(traj: TrialTrajectory, num_episodes: int) -> jax.Array:
    """1 for each episode of each trial in which any step succeeded: [E, n] (needs `success`)."""
    T, E = traj.reward.shape[:2]
    split = lambda x: x.reshape(num_episodes, T // num_episodes, E)
    return episode_success(split(traj.success), split(traj.valid), axis=1).T


# ----------------------------------------------------------------------------- collectors


class Collector(Protocol):
    """Where a learner's experience comes from: a batch of tasks in, arrays out.

    Both methods take M tasks (a task pytree with leading axis M) and M keys and
    return leaves [M, T, E, ...], exactly as `jax.vmap` of the rollouts above would.
    `stage(fn)` is how a learner runs its pure processing between two collections:
    unchanged inside a jitted program, compiled once on a host collector (whose
    collection runs in Python). A collector may also have `prepare(keys, num_episodes)`
    (`jaxmeta.host.HostCollector`): a learner that dispatches work between collections
    calls it first for each later collection's keys (MAML's `sample_tasks`).
    """

    env: Any  # spaces and horizon of the simulated task
    jittable: bool  # False: collection steps a simulator outside XLA

    def episodes(self, act: ActFn, params: Params, tasks: Task, keys: PRNGKey, num_episodes: int,
                 params_axis: int | None = None) -> Trajectory: ...

    def trials(self, act: TrialActFn, carry: Any, params: Params, tasks: Task, keys: PRNGKey,
               num_episodes: int, num_trials: int) -> TrialTrajectory: ...

    def stage(self, fn: Callable, static_argnames: tuple[str, ...] = ()) -> Callable: ...


@dataclass(frozen=True)
class JaxCollector:
    """Rollouts of a jittable `MetaEnv`, inside the caller's XLA program."""

    env: Any
    jittable = True

    def episodes(self, act, params, tasks, keys, num_episodes, params_axis=None) -> Trajectory:
        """`rollout_episodes` on each task; `params` shared (axis None) or per task (axis 0)."""

        def one(p, task, key):
            return rollout_episodes(self.env, act, p, task, key, num_episodes)

        return jax.vmap(one, in_axes=(params_axis, 0, 0))(params, tasks, keys)

    def trials(self, act, carry, params, tasks, keys, num_episodes, num_trials) -> TrialTrajectory:
        """`rollout_trials` on each task, every trial starting from `carry`."""

        def one(task, key):
            return rollout_trials(self.env, act, params, task, key, num_episodes, carry, num_trials)[0]

        return jax.vmap(one)(tasks, keys)

    def stage(self, fn, static_argnames=()):
        return fn
