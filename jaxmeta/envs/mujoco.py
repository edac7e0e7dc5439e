"""Native MuJoCo (gymnasium) twins of the Brax locomotion tasks, as host simulators.

`MujocoLocomotion` is a `jaxmeta.host.HostSimulator`: gymnasium's MuJoCo
HalfCheetah-v5 (and Ant-v5) stepped in a Python loop, with the task rewards of
`jaxmeta.envs.locomotion` -- the reward function is the very same
`reward(task, pos0, pos, action, dt)` method, evaluated once per step on the whole
batch -- so Brax and native MuJoCo can be compared on one config. Every learner runs on
it through `jaxmeta.host.HostCollector`. Imports of gymnasium and mujoco are lazy.
"""
from __future__ import annotations

import collections
from typing import Any

import jax
import numpy as np

from jaxmeta.envs.base import Box
from jaxmeta.envs.worker_pool import WorkerPool
from jaxmeta.types import Task

_GYM_IDS = {
    "halfcheetah": ("HalfCheetah-v5", {}),
    "ant": ("Ant-v5", {"include_cfrc_ext_in_observation": False,
                       "terminate_when_unhealthy": False}),
}


class MujocoLocomotion:
    """A batch of gymnasium MuJoCo environments running a `jaxmeta.envs.locomotion` task.

    Observations (joint positions without the root's x [and y], then velocities), the
    initial-state noise, the 5-frame 0.05 s control step and the action clipping to
    [-1, 1] match the Brax task; the reward is the task's own `reward` method, computed
    here on the whole batch from the torso positions the physics returns. The physics
    runs in this process or, with `num_workers` >= 1, in worker processes
    (`jaxmeta.envs.worker_pool.WorkerPool`: environment i in worker i * W // N, seeded
    by its index, so the episodes do not depend on W), where stepping can be pipelined
    (`step_send` / `step_recv`).

    Args:
      task_env: a HalfCheetahVel, HalfCheetahDir, AntDir or AntGoal (its physics
        backend is ignored here; only its task distribution and reward are used).
      num_envs: environments in the batch.
      num_workers: processes (default `task_env.num_workers`; 0 steps in this process).
    """

    def __init__(self, task_env: Any, num_envs: int, num_workers: int | None = None):
        from jaxmeta.envs import host_simulator_installed

        if not host_simulator_installed("mujoco"):  # pragma: no cover
            raise ImportError("the MuJoCo host simulator needs: pip install 'gymnasium[mujoco]'")
        gym_id, kwargs = _GYM_IDS[task_env._brax_name]
        self.task_env = task_env
        self.num_envs = num_envs
        W = getattr(task_env, "num_workers", 0) if num_workers is None else num_workers
        self.pool = WorkerPool("mujoco", num_envs, W, {"gym_id": gym_id, "gym_kwargs": kwargs}, name="MuJoCo")
        info = self.pool.call_split("info")[0]
        self.dt = info["dt"]
        self.observation_space = Box(-np.inf, np.inf, (info["obs_dim"],))
        self.action_space = Box(-1.0, 1.0, (info["act_dim"],))
        self._reward = jax.jit(jax.vmap(task_env.reward, in_axes=(0, 0, 0, 0, None)))
        self.tasks = None
        self._sent: collections.deque = collections.deque()  # the rows of each pending step_send
        self._full = None  # whole-batch buffers of the pipelined steps' (action, pos0, pos)

    worker_pids = property(lambda self: self.pool.worker_pids)
    pipelined = property(lambda self: self.pool.pipelined)

    @property
    def horizon(self) -> int:
        return self.task_env.horizon

    def task_distribution(self):
        return self.task_env.task_distribution()

    def set_tasks(self, tasks: Task) -> None:
        """One task per environment: a pytree with leading axis `num_envs`."""
        self.tasks = jax.tree.map(np.asarray, tasks)

    def reset(self, seed: int) -> np.ndarray:
        return self.pool.reset(seed).astype(np.float32)  # [N, D]

    def _outputs(self, rows, action, obs, pos0, pos):
        if rows is not None:  # the rows' reward from a program over the whole batch: the same bits as `step`
            if self._full is None:
                self._full = [np.zeros((self.num_envs,) + x.shape[1:], x.dtype) for x in (action, pos0, pos)]
            full = self._full
            for buf, x in zip(full, (action, pos0, pos)):
                buf[rows] = x
            action, pos0, pos = full
        reward, terminated = self._reward(self.tasks, pos0, pos, action, self.dt)
        if rows is not None:
            reward, terminated = np.asarray(reward)[rows], np.asarray(terminated)[rows]
        return obs.astype(np.float32), np.asarray(reward, np.float32), np.asarray(terminated)

    def step(self, action: np.ndarray):
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)  # [N, A]
        return self._outputs(None, action, *self.pool.step(action))

    def step_send(self, rows: np.ndarray, action: np.ndarray) -> None:
        """Start stepping the environments `rows` with `action`; see `WorkerPool`."""
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        self.pool.step_send(rows, action)
        self._sent.append((np.asarray(rows), action))

    def step_recv(self):
        """(obs, reward, terminated) of the rows of the oldest `step_send`."""
        rows, action = self._sent.popleft()
        return self._outputs(rows, action, *self.pool.step_recv())

    def worker_busy_s(self) -> list[float]:
        """Seconds each worker has spent in MuJoCo's reset and step so far."""
        return self.pool.busy_s()

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        self._sent.clear()
        self.pool.close()
