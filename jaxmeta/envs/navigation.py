"""2D point navigation, the MAML paper's (Finn et al. 2017) first RL benchmark.

Matches pytorch-maml-rl's 2DNavigation-v0: the agent starts at the origin, the goal is
uniform in [low, high]^2, the action (a displacement) is clipped to [-0.1, 0.1]^2, the
reward is minus the distance to the goal after the move, and an episode ends when both
coordinates are within 0.01 of the goal or after `horizon` steps.

`Navigation2DDynamics` is the dynamics-task variant for model-based meta-RL (GrBAL):
a fixed goal, and a task that rotates, scales and drifts the point's motion. Both
expose their reward and termination as pure functions of a transition,
`transition_reward(obs, action, next_obs, task)` and `transition_done(...)`, for
planners and learned models.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmeta.config import check_float, check_int, ConfigError
from jaxmeta.envs.base import Box, TaskDistribution
from jaxmeta.types import TimeStep


class NavTask(NamedTuple):
    goal: jax.Array  # [2]


class NavState(NamedTuple):
    pos: jax.Array  # [2]
    t: jax.Array  # [] int32


class _PointMass:
    """Spaces and shared checks of the point-mass environments (a displacement per step)."""

    def _check_point(self):
        check_int("horizon", self.horizon, 1, 100_000)
        check_float("max_action", self.max_action, 0.0, 1e3, low_open=True)
        check_float("goal_tolerance", self.goal_tolerance, 0.0, 1e3)

    @property
    def observation_space(self) -> Box:
        return Box(-jnp.inf, jnp.inf, (2,))

    @property
    def action_space(self) -> Box:
        return Box(-self.max_action, self.max_action, (2,))


@dataclass(frozen=True)
class Navigation2D(_PointMass):
    """Point navigation to a goal drawn per task."""

    low: float = -0.5
    high: float = 0.5
    horizon: int = 100
    max_action: float = 0.1
    goal_tolerance: float = 0.01

    def __post_init__(self):
        check_float("low", self.low, -1e3, 1e3)
        check_float("high", self.high, -1e3, 1e3)
        if not self.high > self.low:
            raise ConfigError(f"high must be greater than low, got low={self.low}, high={self.high}", "high")
        self._check_point()

    def task_distribution(self) -> TaskDistribution:
        def sample(key):
            return NavTask(goal=jax.random.uniform(key, (2,), minval=self.low, maxval=self.high))

        return TaskDistribution(sample)

    def reset(self, key, task: NavTask):
        del key
        pos = jnp.zeros_like(task.goal)
        state = NavState(pos=pos, t=jnp.zeros((), jnp.int32))
        false = jnp.zeros((), bool)
        return state, TimeStep(pos, jnp.zeros((), pos.dtype), false, false, {})

    def transition_reward(self, obs, action, next_obs, task: NavTask):
        """The reward of one transition as a pure function (used by planners and learned models)."""
        del obs, action
        return -jnp.sqrt(jnp.sum((next_obs - task.goal) ** 2))

    def transition_done(self, obs, action, next_obs, task: NavTask):
        """Whether the transition ends the episode (both coordinates within the tolerance)."""
        del obs, action
        return jnp.all(jnp.abs(next_obs - task.goal) < self.goal_tolerance)

    def step(self, key, state: NavState, action, task: NavTask):
        del key
        action = jnp.clip(action, -self.max_action, self.max_action)
        pos = state.pos + action
        reward = self.transition_reward(state.pos, action, pos, task)
        terminated = self.transition_done(state.pos, action, pos, task)
        t = state.t + 1
        truncated = t >= self.horizon
        return NavState(pos, t), TimeStep(pos, reward, terminated, truncated, {})


class NavDynamicsTask(NamedTuple):
    rotation: jax.Array  # [] radians the commanded displacement is turned by
    scale: jax.Array  # [] gain on the displacement
    drift: jax.Array  # [2] displacement added at every step, whatever the action


@dataclass(frozen=True)
class Navigation2DDynamics(_PointMass):
    """Point navigation to a fixed goal whose task changes the dynamics.

    The commanded displacement a (clipped to [-max_action, max_action]^2) is rotated by
    the task's angle, scaled by its gain, and the task's drift is added:
    p' = p + scale * R(rotation) a + drift. The reward, -|p' - goal|, does not depend on
    the task, so a controller that knows the reward but not the dynamics has to adapt
    its model of them (the setting of GrBAL, Nagabandi et al. 2019). The episode ends
    when both coordinates are within `goal_tolerance` of the goal, or after `horizon`.
    """

    horizon: int = 50
    max_action: float = 0.1
    goal_x: float = 0.5
    goal_y: float = 0.5
    max_rotation: float = 1.5707963267948966  # rotation ~ U[-max_rotation, max_rotation]
    scale_low: float = 0.5
    scale_high: float = 1.5
    max_drift: float = 0.02  # drift ~ U[-max_drift, max_drift]^2
    goal_tolerance: float = 0.01

    reward_uses_task = False  # the reward is the same for every task; only the dynamics change

    def __post_init__(self):
        self._check_point()
        check_float("goal_x", self.goal_x, -1e3, 1e3)
        check_float("goal_y", self.goal_y, -1e3, 1e3)
        check_float("max_rotation", self.max_rotation, 0.0, 3.141592653589793)
        check_float("scale_low", self.scale_low, 0.0, 1e3, low_open=True)
        check_float("scale_high", self.scale_high, 0.0, 1e3, low_open=True)
        if self.scale_high < self.scale_low:
            raise ConfigError(f"scale_high must be >= scale_low, got {self.scale_low}, {self.scale_high}",
                              "scale_high")
        check_float("max_drift", self.max_drift, 0.0, 1e3)

    def task_distribution(self) -> TaskDistribution:
        def sample(key):
            k_r, k_s, k_d = jax.random.split(key, 3)
            return NavDynamicsTask(
                rotation=jax.random.uniform(k_r, (), minval=-self.max_rotation, maxval=self.max_rotation),
                scale=jax.random.uniform(k_s, (), minval=self.scale_low, maxval=self.scale_high),
                drift=jax.random.uniform(k_d, (2,), minval=-self.max_drift, maxval=self.max_drift),
            )

        return TaskDistribution(sample)

    def nominal_task(self) -> NavDynamicsTask:
        """No rotation, unit gain, no drift (the unperturbed point mass)."""
        return NavDynamicsTask(jnp.zeros(()), jnp.ones(()), jnp.zeros((2,)))

    def goal(self, dtype) -> jax.Array:
        return jnp.asarray([self.goal_x, self.goal_y], dtype)

    def transition_reward(self, obs, action, next_obs, task=None):
        """-|p' - goal| (the task is not used: it changes the dynamics only)."""
        del obs, action, task
        return -jnp.sqrt(jnp.sum((next_obs - self.goal(next_obs.dtype)) ** 2))

    def transition_done(self, obs, action, next_obs, task=None):
        """Whether the transition ends the episode (both coordinates within the tolerance of the goal)."""
        del obs, action, task
        return jnp.all(jnp.abs(next_obs - self.goal(next_obs.dtype)) < self.goal_tolerance)

    def next_position(self, pos, action, task: NavDynamicsTask):
        """The true dynamics: p + scale * R(rotation) clip(a) + drift."""
        a = jnp.clip(action, -self.max_action, self.max_action)
        c, s = jnp.cos(task.rotation), jnp.sin(task.rotation)
        turned = jnp.stack([c * a[0] - s * a[1], s * a[0] + c * a[1]])
        return pos + task.scale * turned + task.drift

    def reset(self, key, task: NavDynamicsTask):
        del key
        pos = jnp.zeros_like(task.drift)
        false = jnp.zeros((), bool)
        return NavState(pos, jnp.zeros((), jnp.int32)), TimeStep(pos, jnp.zeros((), pos.dtype), false, false, {})

    def step(self, key, state: NavState, action, task: NavDynamicsTask):
        del key
        pos = self.next_position(state.pos, action, task)
        reward = self.transition_reward(state.pos, action, pos, task)
        terminated = self.transition_done(state.pos, action, pos, task)
        t = state.t + 1
        return NavState(pos, t), TimeStep(pos, reward, terminated, t >= self.horizon, {})
