"""Mazes: an adapter for gymnax's MetaMaze (Miconi et al. 2019) to the MetaEnv contract.

A task is the goal cell of a fixed maze layout. Every episode starts at the maze's
centre; the agent sees the walls in its `rf_size` x `rf_size` receptive field, moves in
one of 4 directions, gets `reward` on reaching the goal, and the episode then ends
(terminated), or is truncated after `horizon` steps. gymnax also appends the last
action, last reward and time to its observation; the trial inputs already carry the
previous action and reward, so only the receptive field is kept.

gymnax is imported when a maze is built, never when this module is imported, and the
rest of the library never imports it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmeta.config import ConfigError, check_float, check_int
from jaxmeta.envs.base import Box, Discrete, TaskDistribution
from jaxmeta.types import TimeStep, default_float


class MazeTask(NamedTuple):
    goal: jax.Array  # [2] int32 goal cell (row, col)


class MazeState(NamedTuple):
    inner: Any  # gymnax MetaMaze EnvState
    t: jax.Array  # [] int32


@dataclass(frozen=True)
class MetaMaze:
    """gymnax MetaMaze with the goal as the task."""

    maze_size: int = 9
    rf_size: int = 3
    horizon: int = 50
    reward: float = 10.0
    _gym: Any = field(default=None, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        check_int("maze_size", self.maze_size, 3, 101)
        if self.maze_size % 2 == 0:
            raise ConfigError(f"maze_size must be odd, got {self.maze_size}")
        check_int("rf_size", self.rf_size, 3, 15)
        if self.rf_size % 2 == 0:
            raise ConfigError(f"rf_size must be odd, got {self.rf_size}")
        check_int("horizon", self.horizon, 1, 1_000_000)
        check_float("reward", self.reward, 0.0, 1e6, low_open=True)
        from gymnax.environments.misc.meta_maze import MetaMaze as GymnaxMetaMaze

        object.__setattr__(self, "_gym", GymnaxMetaMaze(maze_size=self.maze_size, rf_size=self.rf_size))

    @property
    def _params(self):
        return self._gym.default_params.replace(reward=self.reward, punishment=0.0,
                                                max_steps_in_episode=self.horizon)

    @property
    def observation_space(self) -> Box:
        return Box(0.0, 1.0, (self.rf_size**2,))

    @property
    def action_space(self) -> Discrete:
        return Discrete(4)

    def task_distribution(self) -> TaskDistribution:
        goals = self._gym.available_goals  # [G, 2]

        def sample(key):
            return MazeTask(goals[jax.random.randint(key, (), 0, goals.shape[0])].astype(jnp.int32))

        return TaskDistribution(sample)

    def _obs(self, gym_obs):
        return gym_obs[: self.rf_size**2].astype(default_float())

    def _typed(self, inner, task: MazeTask):
        """gymnax's state with the task's goal, positions in one integer dtype (with x64
        enabled gymnax mixes int32 and int64 positions, which its `lax.select`s refuse)."""
        dtype = self._gym.directions.dtype
        return inner.replace(pos=jnp.asarray(inner.pos, dtype), goal=task.goal.astype(dtype))

    def reset(self, key, task: MazeTask):
        gym_obs, inner = self._gym.reset_env(key, self._params)
        inner = self._typed(inner, task)
        false = jnp.zeros((), bool)
        return MazeState(inner, jnp.zeros((), jnp.int32)), TimeStep(
            self._obs(self._gym.get_obs(inner, self._params)), jnp.zeros((), default_float()), false, false, {}
        )

    def step(self, key, state: MazeState, action, task: MazeTask):
        inner = self._typed(state.inner, task)
        gym_obs, inner, reward, _, _ = self._gym.step_env(key, inner, action, self._params)
        reward = jnp.asarray(reward, default_float())
        terminated = reward > 0.0  # the goal was reached (gymnax then respawns the agent)
        t = state.t + 1
        return MazeState(inner, t), TimeStep(self._obs(gym_obs), reward, terminated, t >= self.horizon, {})
