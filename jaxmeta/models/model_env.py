"""A learned dynamics model as a jittable `MetaEnv`: imagined experience is one more env.

`ModelEnv` steps a `DynamicsModel` with the real environment's known reward
(`env.transition_reward(obs, action, next_obs, task)`) and termination
(`env.transition_done(...)`, never if the env has none). Its task is a `ModelTask`:
which ensemble member to imagine with, and the real environment's task (whose reward
the imagined episodes earn). Episodes start from observations the real environment
was seen to start from (the first observation of stored real episodes), so the model
env needs neither the real env's reset nor its simulator, only its reward, and works
for host simulators too.

So any learner that takes a `MetaEnv` learns from imagination unchanged:
`MAML(ModelEnv(...), tasks, config)` is MB-MPO's inner meta-learner (Clavera et al.
2018), its imagined meta-batch is that MAML's `sample_tasks`, its update is MAML's.

The model env ends episodes as the real env would (its known termination): without
it an imagined navigation episode would have to hover at the goal for the rest of the
horizon, a different MDP from the real one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmeta.config import ConfigError
from jaxmeta.envs.base import Box, TaskDistribution
from jaxmeta.models.dynamics import DynamicsModel, ModelState
from jaxmeta.types import Task, TimeStep


class ModelTask(NamedTuple):
    member: jax.Array  # [] int32 ensemble member that imagines the task's episodes
    task: Task  # the real environment's task (its reward)


class ModelEnvState(NamedTuple):
    obs: jax.Array  # [D]
    t: jax.Array  # [] int32


def transition_done(env: Any, obs, action, next_obs, task) -> jax.Array:
    """The env's known termination of a transition (`env.transition_done`), False without one."""
    fn = getattr(env, "transition_done", None)
    return fn(obs, action, next_obs, task) if callable(fn) else jnp.zeros((), bool)


def check_planning_env(env: Any, what: str) -> None:
    """Refuse an environment without a reward that planning can use."""
    if not callable(getattr(env, "transition_reward", None)):
        raise ConfigError(f"{what} needs an environment with a transition_reward(obs, action, next_obs, task) "
                          f"method (its known reward); {type(env).__name__} has none", "env")
    if not isinstance(env.action_space, Box):
        raise ConfigError(f"{what} needs a Box action space", "env")


@dataclass(frozen=True, eq=False)
class ModelEnv:
    """Imagined episodes of `env`'s tasks under a learned model.

    Args:
      env: the real environment (spaces, horizon, `transition_reward`).
      model: the dynamics model; state: its parameters and normaliser (arrays).
      initial_obs: [N, D] observations to start from (uniformly among the first
        `num_initial` rows; the zero vector when there are none yet).
      num_initial: [] int32.
      horizon: imagined episode length (default: the env's).
      use_mean: imagine with the ensemble mean instead of the task's member.
    """

    env: Any
    model: DynamicsModel
    state: ModelState
    initial_obs: jax.Array
    num_initial: jax.Array
    horizon: int = 0
    use_mean: bool = False

    def __post_init__(self):
        check_planning_env(self.env, "a model environment")
        if self.horizon == 0:
            object.__setattr__(self, "horizon", self.env.horizon)

    @property
    def observation_space(self):
        return self.env.observation_space

    @property
    def action_space(self):
        return self.env.action_space

    def task_distribution(self, tasks: TaskDistribution | None = None) -> TaskDistribution:
        """(a uniform member, a task of `tasks` (default: the env's distribution))."""
        tasks = self.env.task_distribution() if tasks is None else tasks
        K = self.model.num_members

        def sample(key):
            k_m, k_t = jax.random.split(key)
            return ModelTask(jax.random.randint(k_m, (), 0, K), tasks.sample(k_t))

        return TaskDistribution(sample)

    def reset(self, key, task: ModelTask):
        del task
        n = jnp.maximum(self.num_initial, 1)
        i = jax.random.randint(key, (), 0, n)
        obs = jnp.where(self.num_initial > 0, self.initial_obs[i], jnp.zeros_like(self.initial_obs[0]))
        false = jnp.zeros((), bool)
        return ModelEnvState(obs, jnp.zeros((), jnp.int32)), TimeStep(obs, jnp.zeros((), obs.dtype), false, false, {})

    def step(self, key, state: ModelEnvState, action, task: ModelTask):
        del key
        space = self.env.action_space
        a = jnp.clip(action, space.low, space.high).astype(state.obs.dtype)
        if self.use_mean:
            next_obs = self.model.predict_mean(self.state, state.obs, a)
        else:
            next_obs = self.model.predict_member(self.state, task.member, state.obs, a)
        reward = self.env.transition_reward(state.obs, a, next_obs, task.task)
        done = transition_done(self.env, state.obs, a, next_obs, task.task)
        t = state.t + 1
        return ModelEnvState(next_obs, t), TimeStep(next_obs, reward.astype(next_obs.dtype), done,
                                                    t >= self.horizon, {})
