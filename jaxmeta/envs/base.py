"""The environment contract: tasks are data, environments take the task as an argument.

A `MetaEnv` is gymnax-like, but every call receives the task pytree, so a batch of
tasks is just a `jax.vmap` axis. A `TaskDistribution` samples one task from a key.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Protocol

import jax

from jaxmeta.types import EnvState, PRNGKey, Task, TimeStep


class Box(NamedTuple):
    """A continuous space with per-dimension bounds."""

    low: float
    high: float
    shape: tuple[int, ...]


class Discrete(NamedTuple):
    """A finite space {0, ..., n-1}."""

    n: int


Space = Box | Discrete


class TaskDistribution(NamedTuple):
    """Samples one task (a pytree of arrays) from a key; `jax.vmap` it for a batch.

    `sample_test` samples the benchmark's held-out (test) tasks where it has its own
    split (Meta-World); None means held-out tasks come from `sample` too.
    """

    sample: Callable[[PRNGKey], Task]
    sample_test: Callable[[PRNGKey], Task] | None = None

    def sample_batch(self, key: PRNGKey, num_tasks: int) -> Task:
        """`num_tasks` tasks stacked on a leading axis."""
        return jax.vmap(self.sample)(jax.random.split(key, num_tasks))

    def held_out_batch(self, key: PRNGKey, num_tasks: int) -> Task:
        """`num_tasks` held-out tasks: from `sample_test` if the benchmark has a test split."""
        sample = self.sample if self.sample_test is None else self.sample_test
        return jax.vmap(sample)(jax.random.split(key, num_tasks))


class MetaEnv(Protocol):
    """What every environment provides. `horizon` is the episode length in steps."""

    horizon: int
    observation_space: Space
    action_space: Space

    def reset(self, key: PRNGKey, task: Task) -> tuple[EnvState, TimeStep]: ...

    def step(
        self, key: PRNGKey, state: EnvState, action: jax.Array, task: Task
    ) -> tuple[EnvState, TimeStep]: ...

    def task_distribution(self) -> TaskDistribution: ...


def obs_dim(env: Any) -> int:
    """Flat size of the observation vector."""
    space = env.observation_space
    return int(space.n) if isinstance(space, Discrete) else math.prod(space.shape)


def action_dim(env: Any) -> int:
    """Number of discrete actions, or the flat size of a continuous action."""
    space = env.action_space
    return int(space.n) if isinstance(space, Discrete) else math.prod(space.shape)
