"""K-armed Bernoulli bandits, as in RL^2 (Duan et al. 2016).

A task is the vector of arm means, each ~ U[0, 1]. An episode is `horizon` pulls
(RL^2 uses one-pull episodes and trials of n episodes). The observation is a constant
zero vector of size 1: everything the agent learns comes from rewards.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmeta.config import check_int
from jaxmeta.envs.base import Box, Discrete, TaskDistribution
from jaxmeta.types import TimeStep


class BanditTask(NamedTuple):
    probs: jax.Array  # [K] Bernoulli mean of each arm


class BanditState(NamedTuple):
    t: jax.Array  # [] int32


@dataclass(frozen=True)
class BernoulliBandit:
    """K-armed Bernoulli bandit; arm means ~ U[0, 1] per task."""

    num_arms: int = 5
    horizon: int = 1

    def __post_init__(self):
        check_int("num_arms", self.num_arms, 2, 10_000)
        check_int("horizon", self.horizon, 1, 1_000_000)

    @property
    def observation_space(self) -> Box:
        return Box(0.0, 0.0, (1,))

    @property
    def action_space(self) -> Discrete:
        return Discrete(self.num_arms)

    def task_distribution(self) -> TaskDistribution:
        return TaskDistribution(lambda key: BanditTask(jax.random.uniform(key, (self.num_arms,))))

    def reset(self, key, task: BanditTask):
        del key
        dtype = task.probs.dtype
        false = jnp.zeros((), bool)
        obs = jnp.zeros((1,), dtype)
        return BanditState(jnp.zeros((), jnp.int32)), TimeStep(obs, jnp.zeros((), dtype), false, false, {})

    def step(self, key, state: BanditState, action, task: BanditTask):
        p = task.probs[action]
        reward = jax.random.bernoulli(key, p).astype(task.probs.dtype)
        t = state.t + 1
        obs = jnp.zeros((1,), task.probs.dtype)
        return BanditState(t), TimeStep(obs, reward, jnp.zeros((), bool), t >= self.horizon, {})
