"""Environments as task distributions, and a registry of them by name."""
from __future__ import annotations

from typing import Any, Callable

from jaxmeta.envs.bandits import BanditTask, BernoulliBandit
from jaxmeta.envs.base import Box, Discrete, MetaEnv, TaskDistribution, action_dim, obs_dim
from jaxmeta.envs.navigation import NavTask, Navigation2D
from jaxmeta.envs.tabular_mdp import MDPTask, TabularMDP
# locomotion imports brax only when an environment is first stepped or measured
from jaxmeta.envs.locomotion import AntDir, AntGoal, HalfCheetahDir, HalfCheetahVel
# the maze imports gymnax only when a maze is built
from jaxmeta.envs.maze import MazeTask, MetaMaze
from jaxmeta.envs.mazes import GeneratedMaze, MazeGenTask

REGISTRY: dict[str, Callable[..., Any]] = {
    "navigation2d": Navigation2D,
    "bandit": BernoulliBandit,
    "tabular_mdp": TabularMDP,
    "halfcheetah_vel": HalfCheetahVel,
    "halfcheetah_dir": HalfCheetahDir,
    "ant_dir": AntDir,
    "ant_goal": AntGoal,
    "maze": MetaMaze,
    "maze_gen": GeneratedMaze,
}

LOCOMOTION_ENVS = ("halfcheetah_vel", "halfcheetah_dir", "ant_dir", "ant_goal")

# Host simulators (stepped outside XLA, see jaxmeta.host) and the environments they run.
# "jax" is every environment's own jittable implementation (Brax for locomotion).
HOST_SIMULATORS = {"mujoco": LOCOMOTION_ENVS}


def host_simulator(simulator: str, env: Any, num_envs: int) -> Any:
    """A host simulator of `env` holding `num_envs` environments."""
    if simulator == "mujoco":
        from jaxmeta.envs.mujoco import MujocoLocomotion

        return MujocoLocomotion(env, num_envs)
    raise ValueError(f"unknown host simulator {simulator!r}; known: {', '.join(HOST_SIMULATORS)}")


def register(name: str, factory: Callable[..., Any]) -> None:
    """Add an environment factory under `name`."""
    REGISTRY[name] = factory


def make(name: str, **kwargs) -> Any:
    """Build a registered environment; unknown names raise with the list of known ones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown environment {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**kwargs)


__all__ = [
    "AntDir", "AntGoal", "BanditTask", "BernoulliBandit", "Box", "Discrete", "GeneratedMaze", "HOST_SIMULATORS",
    "HalfCheetahDir", "HalfCheetahVel", "LOCOMOTION_ENVS", "MDPTask", "MazeGenTask", "MazeTask", "MetaEnv", "MetaMaze",
    "NavTask", "Navigation2D",
    "REGISTRY", "TabularMDP", "TaskDistribution", "action_dim", "host_simulator", "make", "obs_dim", "register",
]
