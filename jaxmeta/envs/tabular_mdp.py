"""Random tabular MDPs, as in RL^2 (Duan et al. 2016).

A task is a transition tensor P[s, a] ~ flat Dirichlet over next states and reward
means R[s, a] ~ N(1, 1); a step's reward is N(R[s, a], 1). Episodes start in state 0
and last `horizon` steps. The observation is the one-hot current state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmeta.config import check_int
from jaxmeta.envs.base import Box, Discrete, TaskDistribution
from jaxmeta.types import TimeStep


class MDPTask(NamedTuple):
    transitions: jax.Array  # [S, A, S] rows sum to 1
    reward_mean: jax.Array  # [S, A]


class MDPState(NamedTuple):
    s: jax.Array  # [] int32 current state
    t: jax.Array  # [] int32


@dataclass(frozen=True)
class TabularMDP:
    """Random tabular MDP: Dirichlet transitions, N(1, 1) reward means, one-hot states."""

    num_states: int = 10
    num_actions: int = 5
    horizon: int = 10

    def __post_init__(self):
        check_int("num_states", self.num_states, 2, 10_000)
        check_int("num_actions", self.num_actions, 2, 10_000)
        check_int("horizon", self.horizon, 1, 1_000_000)

    @property
    def observation_space(self) -> Box:
        return Box(0.0, 1.0, (self.num_states,))

    @property
    def action_space(self) -> Discrete:
        return Discrete(self.num_actions)

    def task_distribution(self) -> TaskDistribution:
        S, A = self.num_states, self.num_actions

        def sample(key):
            k_p, k_r = jax.random.split(key)
            p = jax.random.dirichlet(k_p, jnp.ones((S,)), shape=(S, A))  # [S, A, S]
            r = 1.0 + jax.random.normal(k_r, (S, A))  # [S, A]
            return MDPTask(p, r)

        return TaskDistribution(sample)

    def _obs(self, s, dtype):
        return jax.nn.one_hot(s, self.num_states, dtype=dtype)

    def reset(self, key, task: MDPTask):
        del key
        dtype = task.reward_mean.dtype
        s = jnp.zeros((), jnp.int32)
        false = jnp.zeros((), bool)
        return MDPState(s, jnp.zeros((), jnp.int32)), TimeStep(
            self._obs(s, dtype), jnp.zeros((), dtype), false, false, {}
        )

    def step(self, key, state: MDPState, action, task: MDPTask):
        k_r, k_s = jax.random.split(key)
        dtype = task.reward_mean.dtype
        mean = task.reward_mean[state.s, action]
        reward = mean + jax.random.normal(k_r, (), dtype)
        s_next = jax.random.categorical(k_s, jnp.log(task.transitions[state.s, action])).astype(jnp.int32)
        t = state.t + 1
        return MDPState(s_next, t), TimeStep(
            self._obs(s_next, dtype), reward, jnp.zeros((), bool), t >= self.horizon, {}
        )
