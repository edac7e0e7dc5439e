"""Core data types shared by environments, rollouts, learners and the driver."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax

PRNGKey = jax.Array


def default_float():
    """The floating dtype new parameters and buffers get: float64 when JAX runs with
    x64 enabled (`JAX_ENABLE_X64=1`), else float32. Everything else follows the dtype
    of the parameters and tasks it is given."""
    return jax.dtypes.canonicalize_dtype(jax.numpy.float64)
Params = Any  # a pytree of arrays
Task = Any  # a pytree of arrays describing one task
EnvState = Any


class TimeStep(NamedTuple):
    """What an environment returns after `reset` or `step`."""

    obs: jax.Array
    reward: jax.Array  # reward for the transition that led here (0 at reset)
    terminated: jax.Array  # bool: episode ended by the task (no bootstrap)
    truncated: jax.Array  # bool: episode cut by the horizon
    info: dict = {}


class Trajectory(NamedTuple):
    """A batch of episodes, time-major: every leaf is [T, E, ...].

    `valid_t` is 1 for steps that belong to an episode and 0 for padding after an
    episode terminated early; rewards of padding steps are 0.
    """

    obs: jax.Array  # [T, E, obs_dim]
    action: jax.Array  # [T, E, ...]
    reward: jax.Array  # [T, E]
    valid: jax.Array  # [T, E] float mask
    log_prob: jax.Array  # [T, E] log-probability of the action under the acting policy
    # [T, E] float, 1 where the simulator reported success on this step (Meta-World's
    # info['success']); None where the environment has no notion of success
    success: jax.Array | None = None


class AdaptationCurve(NamedTuple):
    """Mean return on held-out tasks after 0, 1, ..., K adaptation steps (or episodes),
    and, where the environment reports success, the fraction of successful episodes."""

    returns: jax.Array  # [K+1] mean over tasks
    per_task: jax.Array  # [num_tasks, K+1]
    success: jax.Array | None = None  # [K+1] mean success rate over tasks
    per_task_success: jax.Array | None = None  # [num_tasks, K+1]
