"""Native MuJoCo (gymnasium) twins of the Brax locomotion tasks, as host simulators.

`MujocoLocomotion` is a `jaxmeta.host.HostSimulator`: gymnasium's MuJoCo
HalfCheetah-v5 (and Ant-v5) stepped in a Python loop, with the task rewards of
`jaxmeta.envs.locomotion` -- the reward function is the very same
`reward(task, pos0, pos, action, dt)` method, evaluated once per step on the whole
batch -- so Brax and native MuJoCo can be compared on one config. Every learner runs on
it through `jaxmeta.host.HostCollector`. Imports of gymnasium and mujoco are lazy.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxmeta.envs.base import Box
from jaxmeta.types import Task

_GYM_IDS = {
    "halfcheetah": ("HalfCheetah-v5", {}),
    "ant": ("Ant-v5", {"include_cfrc_ext_in_observation": False, "use_contact_forces": False,
                       "terminate_when_unhealthy": False}),
}


class MujocoLocomotion:
    """A batch of gymnasium MuJoCo environments running a `jaxmeta.envs.locomotion` task.

    Observations (joint positions without the root's x [and y], then velocities), the
    initial-state noise, the 5-frame 0.05 s control step and the action clipping to
    [-1, 1] match the Brax task; the reward is the task's own `reward` method.

    Args:
      task_env: a HalfCheetahVel, HalfCheetahDir, AntDir or AntGoal (its physics
        backend is ignored here; only its task distribution and reward are used).
      num_envs: environments stepped in the Python loop.
    """

    def __init__(self, task_env: Any, num_envs: int):
        try:
            import gymnasium as gym
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("the MuJoCo host simulator needs: pip install 'gymnasium[mujoco]'") from e
        import mujoco

        self._mujoco = mujoco
        gym_id, kwargs = _GYM_IDS[task_env._brax_name]
        self.task_env = task_env
        self.num_envs = num_envs
        self.envs = [gym.make(gym_id, **kwargs).unwrapped for _ in range(num_envs)]
        self.dt = float(self.envs[0].dt)
        self._torso = [e.data.body("torso") for e in self.envs]
        obs_dim = self.envs[0].observation_space.shape[0]
        act_dim = self.envs[0].action_space.shape[0]
        self.observation_space = Box(-np.inf, np.inf, (obs_dim,))
        self.action_space = Box(-1.0, 1.0, (act_dim,))
        self._reward = jax.jit(jax.vmap(task_env.reward, in_axes=(0, 0, 0, 0, None)))
        self.tasks = None

    @property
    def horizon(self) -> int:
        return self.task_env.horizon

    def task_distribution(self):
        return self.task_env.task_distribution()

    def set_tasks(self, tasks: Task) -> None:
        """One task per environment: a pytree with leading axis `num_envs`."""
        self.tasks = jax.tree.map(np.asarray, tasks)

    def _pos(self) -> np.ndarray:
        return np.stack([np.array(b.xpos) for b in self._torso])  # [N, 3]

    def reset(self, seed: int) -> np.ndarray:
        obs = [e.reset(seed=int(seed) + i)[0] for i, e in enumerate(self.envs)]
        return np.stack(obs).astype(np.float32)  # [N, D]

    def step(self, action: np.ndarray):
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)  # [N, A]
        pos0 = self._pos()
        obs = []
        for e, a in zip(self.envs, action):
            e.do_simulation(a, e.frame_skip)
            # mj_step leaves body positions at the pre-integration state; refresh them
            self._mujoco.mj_kinematics(e.model, e.data)
            obs.append(e._get_obs())
        pos = self._pos()
        reward, terminated = self._reward(self.tasks, pos0, pos, action, self.dt)
        return np.stack(obs).astype(np.float32), np.asarray(reward, np.float32), np.asarray(terminated)
