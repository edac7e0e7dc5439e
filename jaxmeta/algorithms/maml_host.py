"""MAML / ProMP meta-training with the environment on the host (policy in jit, env in Python).

`HostMAML` samples a meta-batch through a host simulator (`jaxmeta.envs.host`): the
policy acts, the advantages are processed and the first-order inner steps that produce
the next adaptation batch are taken by jitted functions, the simulator steps in a Python
loop; then the very same jitted outer update as the pure-JAX path runs on the batches
(`MAML.trpo_update` / `MAML.adam_update`, or `ProMP.update`). Batches have MAML's
shapes: adaptation [M, K, T, E, ...], validation [M, T, E, ...].

This is the one place in the library that compiles for the caller: the host loop
cannot live inside `jax.jit`, so its pieces are compiled with `jit` (a constructor
argument, `jax.jit` by default) when the object is built.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmeta.algorithms.base import AdaptationCurve
from jaxmeta.algorithms.maml import MAML, _tree_stack, adaptation_curve
from jaxmeta.envs.host import host_rollout
from jaxmeta.types import PRNGKey


class HostMAML:
    """Meta-training of a MAML (or ProMP) learner on a host simulator.

    Args:
      learner: a `MAML` or `ProMP` built for a jittable env with the same spaces
        (e.g. the Brax task whose MuJoCo twin `sim` runs), or for `sim` itself.
      sim: a host simulator holding meta_batch_size * num_episodes environments.
      jit: how the jittable pieces are compiled (`jax.jit`; `lambda f: f` to debug).
    """

    def __init__(self, learner: MAML, sim: Any, jit: Callable = jax.jit):
        c = learner.config
        need = c.meta_batch_size * c.num_episodes
        if sim.num_envs != need:
            raise ValueError(f"sim.num_envs must be meta_batch_size * num_episodes = {need}, got {sim.num_envs}")
        self.learner, self.sim = learner, sim
        policy = learner.policy
        self._act = jit(jax.vmap(policy.act, in_axes=(0, 0, 0)))
        self._process = jit(jax.vmap(learner.process))
        lr_axes = 0 if c.meta_sgd else None
        self._adapt_step = jit(jax.vmap(
            lambda p, lr, b: learner.adapt_step(p, lr, b, first_order=True), in_axes=(0, lr_axes, 0)
        ))
        self._tasks = jit(learner.tasks.sample_batch, static_argnums=1)
        self._update = jit(self._update_fn)
        self._broadcast = jit(lambda tree: jax.tree.map(
            lambda x: jnp.broadcast_to(x, (c.meta_batch_size,) + x.shape), tree))

    # ----------------------------------------------------------------- sampling
    def _act_fn(self, params, obs, key):
        M = obs.shape[0]
        return self._act(params, obs, jax.random.split(key, M))

    def sample_tasks(self, meta: dict, tasks, key: PRNGKey, num_steps: int | None = None):
        """Adaptation batches [M, K, ...] and the adapted policies' batches [M, ...] for `tasks`."""
        c = self.learner.config
        M, E = c.meta_batch_size, c.num_episodes
        num_steps = c.num_inner_steps if num_steps is None else num_steps
        self.sim.set_tasks(jax.tree.map(lambda x: np.repeat(np.asarray(x), E, axis=0), tasks))
        params = self._broadcast(meta["policy"])
        lr = self.learner.inner_lr(meta)
        lr = self._broadcast(lr) if c.meta_sgd else lr
        keys = jax.random.split(key, num_steps + 1)
        train = []
        for k in range(num_steps + 1):
            k_act, k_seed = jax.random.split(keys[k])
            seed = int(jax.random.randint(k_seed, (), 0, 2**30))
            traj = host_rollout(self.sim, self._act_fn, params, k_act, M, E, self.sim.horizon, seed)
            batch = self._process(traj)
            if k == num_steps:
                # _tree_stack stacks on axis 0 = K; MAML's layout is [M, K, ...]
                stacked = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), _tree_stack(train)) if train else None
                return stacked, batch
            train.append(batch)
            params = self._adapt_step(params, lr, batch)

    def sample(self, meta: dict, key: PRNGKey):
        """Like `MAML.sample`: (tasks, train [M, K, ...], valid [M, ...])."""
        k_tasks, k_eps = jax.random.split(key)
        tasks = self._tasks(k_tasks, self.learner.config.meta_batch_size)
        train, valid = self.sample_tasks(meta, tasks, k_eps)
        return tasks, train, valid

    # ----------------------------------------------------------------- updates
    def _update_fn(self, state, train, valid):
        return self.learner.update(state, train, valid)  # MAML's or ProMP's outer update

    def init(self, key: PRNGKey):
        return self.learner.init(key)

    def train_step(self, state, key: PRNGKey):
        """One meta-iteration: host sampling, then the jitted outer update."""
        _, train, valid = self.sample(state.meta, key)
        return self._update(state, train, valid)

    def evaluate(self, state, key: PRNGKey, num_steps: int | None = None) -> AdaptationCurve:
        """Mean return on held-out tasks after 0..K inner steps (meta_batch_size of them)."""
        c = self.learner.config
        num_steps = c.num_inner_steps if num_steps is None else num_steps
        tasks = self._tasks(jax.random.PRNGKey(c.eval_seed), c.meta_batch_size)
        train, valid = self.sample_tasks(state.meta, tasks, key, num_steps)
        return adaptation_curve(train, valid)


def host_maml(env, config, simulator: str = "mujoco", jit: Callable = jax.jit) -> HostMAML:
    """MAML (a `MAMLConfig`) or ProMP (a `ProMPConfig`) on `env`'s native-simulator twin.

    `env` is a locomotion task (e.g. `HalfCheetahVel`); its task distribution and reward
    are used, its Brax physics is not. The returned object has `init`, `train_step` and
    `evaluate` like an `Algorithm`, but `train_step`/`evaluate` must NOT be wrapped in
    `jax.jit` (they step the simulator in Python and compile their own pieces).
    """
    from jaxmeta.algorithms.promp import ProMPConfig, make_promp
    from jaxmeta.envs.host import MujocoLocomotion

    if simulator != "mujoco":
        raise ValueError(f"unknown host simulator {simulator!r}; known: mujoco")
    if isinstance(config, ProMPConfig):
        learner = make_promp(env, env.task_distribution(), config)
    else:
        learner = MAML(env, env.task_distribution(), config)
    c = learner.config
    return HostMAML(learner, MujocoLocomotion(env, c.meta_batch_size * c.num_episodes), jit=jit)
