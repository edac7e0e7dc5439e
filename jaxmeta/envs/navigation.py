"""2D point navigation, the MAML paper's (Finn et al. 2017) first RL benchmark.

Matches pytorch-maml-rl's 2DNavigation-v0: the agent starts at the origin, the goal is
uniform in [low, high]^2, the action (a displacement) is clipped to [-0.1, 0.1]^2, the
reward is minus the distance to the goal after the move, and an episode ends when both
coordinates are within 0.01 of the goal or after `horizon` steps.
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


@dataclass(frozen=True)
class Navigation2D:
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
        check_int("horizon", self.horizon, 1, 100_000)
        check_float("max_action", self.max_action, 0.0, 1e3, low_open=True)
        check_float("goal_tolerance", self.goal_tolerance, 0.0, 1e3)

    @property
    def observation_space(self) -> Box:
        return Box(-jnp.inf, jnp.inf, (2,))

    @property
    def action_space(self) -> Box:
        return Box(-self.max_action, self.max_action, (2,))

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

    def step(self, key, state: NavState, action, task: NavTask):
        del key
        action = jnp.clip(action, -self.max_action, self.max_action)
        pos = state.pos + action
        delta = pos - task.goal  # [2]
        reward = -jnp.sqrt(jnp.sum(delta**2))
        terminated = jnp.all(jnp.abs(delta) < self.goal_tolerance)
        t = state.t + 1
        truncated = t >= self.horizon
        return NavState(pos, t), TimeStep(pos, reward, terminated, truncated, {})
